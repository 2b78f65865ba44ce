"""The TaskData contract, checked the same way on every implementation (shared by test files)."""

from __future__ import annotations

import torch

from merging_core.taskdata import TaskData


def check_task_data(data: TaskData, updates: dict) -> None:
    """Protocol members, stable fingerprint, batching, the scoped forward, logits and scale."""
    assert isinstance(data, TaskData)
    fp = data.fingerprint()
    assert isinstance(fp, str) and len(fp) >= 16 and data.fingerprint() == fp
    assert data.entropy_scale > 0 and len(data.task_names) >= 1
    task = data.task_names[-1]
    n = data.num_unlabeled(task)
    assert n >= 2
    index = torch.arange(min(n, 4))
    batches = [data.unlabeled(t, index) for t in data.task_names[:2]]
    with torch.no_grad():
        base = data.features(batches)
        changed = data.features(batches, updates)
        again = data.features(batches)
    assert [f.shape[0] for f in base] == [len(index)] * len(batches)
    for b, c, a in zip(base, changed, again, strict=True):
        assert b.dim() == 2 and b.shape == c.shape
        torch.testing.assert_close(a, b)  # the forward leaves nothing applied
    assert any((b - c).abs().max() > 1e-6 for b, c in zip(base, changed, strict=True))
    zero = {p: (torch.zeros_like(B), A) for p, (B, A) in updates.items()}
    with torch.no_grad():
        torch.testing.assert_close(data.features(batches, zero)[0], base[0], atol=1e-5, rtol=1e-5)
    logits = data.logits(data.task_names[0], base[0])
    assert logits.shape[0] == len(index) and logits.shape[1] >= 2
    one = data.logits(data.task_names[0], base[0], scale=1.0)
    torch.testing.assert_close(data.logits(data.task_names[0], base[0], scale=2.5), 2.5 * one)
    check_capture(data, batches, updates)


def check_capture(data: TaskData, batches: list, updates: dict) -> None:
    """``capture``: each chosen module's input once per forward, ``(N, ..., d_in)`` with the
    batches' rows in order, the graph kept (a loss on it reaches the updates), features unchanged.

    ``updates``' last path must come after another one in the forward (true of every bundle's
    module order: blocks in depth order).
    """
    first, last = list(updates)[0], list(updates)[-1]
    leaf = {p: (B.clone().requires_grad_(True), A) for p, (B, A) in updates.items()}
    captured: dict[str, list] = {first: [], last: []}
    feats = data.features(batches, leaf, captured)
    with torch.no_grad():
        plain = data.features(batches, updates)
    for f, g in zip(feats, plain, strict=True):
        torch.testing.assert_close(f.detach(), g)
    rows = sum(int(f.shape[0]) for f in feats)
    for path, inputs in captured.items():
        assert len(inputs) == 1, f"{path}: {len(inputs)} captures for one forward"
        assert inputs[0].shape[0] == rows and inputs[0].shape[-1] == updates[path][1].shape[1]
    captured[last][0].float().square().sum().backward()
    assert any(float(B.grad.abs().sum()) > 0 for B, _ in leaf.values() if B.grad is not None)
    alone: dict[str, list] = {last: []}
    with torch.no_grad():
        data.features(batches[:1], updates, alone)
    head, own = captured[last][0][: feats[0].shape[0]].detach(), alone[last][0]
    if head.dim() == 3:  # token inputs: the joint call may pad further
        head = head[:, : own.shape[1]]
    torch.testing.assert_close(head, own, atol=1e-4, rtol=1e-4)


def adapter_updates(adapter_set) -> dict:
    """Every adapter's factors at once: ``B = [B_1 … B_N]``, ``A = [A_1; …; A_N]`` per module."""
    out = {}
    for path in adapter_set.modules:
        mods = adapter_set.factors(path)
        out[path] = (torch.cat([m.B for m in mods], 1), torch.cat([m.A for m in mods], 0))
    return out
