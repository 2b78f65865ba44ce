"""Build-time premise checks of the vision8 bundle: does unlabeled entropy track accuracy?

Every entropy-driven merge (AdaMerging, TARA) assumes that lowering the mean prediction entropy
of the merged model on a task's unlabeled inputs raises its accuracy. These checks measure that
assumption on a built bundle, with its labels (build time only: no merge ever sees them):

- ``calibration_gap``: mean top-1 confidence − accuracy of the *base* model (zero-shot head, the
  bundle's logit scale) on validation. A base that is sure and wrong (a large positive gap) makes
  entropy minimisation walk towards the base.
- ``own_entropy``: the mean entropy of base + λ·ΔW_own on the task's validation inputs for
  λ = 0, 0.1, …, 0.5; it must fall on [0.1, 0.5] (negative least-squares slope and
  H(0.5) < H(0.1)).
- ``gradient_cosine``: at the Task Arithmetic point (all coefficients = the best validation λ),
  the cosine between the gradients of Σ_t H_t and of the labelled Σ_t CE_t with respect to this
  task's layer-wise coefficients (AdaMerging's parametrisation); it must be positive. The sign
  of the summed (task-wise) components is recorded too.
- ``entropy_accuracy_correlation``: Pearson correlation of the task's mean entropy and accuracy
  along TA's λ grid (λ = 0 included); reported (negative is the target), not a pass condition.
- per layer, the rank-1 coverage ratio of the adapters (TARA's, ≈ 0.7 reported on CLIP).

Entropies are taken at the scale the entropy objectives use (``base_model.entropy_scale``,
absent = 1, i.e. on raw cosines as in the official code); confidence at ``logit_scale``.
Space: ΔW (dense per-module updates added to the base weights).
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from torch.func import functional_call
from torch.nn import functional as F

MAX_CALIBRATION_GAP = 0.10
OWN_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
TA_GRID = tuple(round(0.1 * k, 1) for k in range(11))


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def _cos(bundle: Any, task: str, feats: torch.Tensor) -> torch.Tensor:
    return F.normalize(feats, dim=-1) @ bundle.heads[task].T  # (N, C)


def _entropy_scale(bundle: Any) -> float:
    return float(bundle.manifest["base_model"].get("entropy_scale", 1.0))


def _pearson(x: list[float], y: list[float]) -> float:
    mx, my = statistics.mean(x), statistics.mean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return 0.0 if sxx == 0 or syy == 0 else sxy / (sxx * syy) ** 0.5


def _slope(x: tuple[float, ...], y: list[float]) -> float:
    mx, my = statistics.mean(x), statistics.mean(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum(
        (a - mx) ** 2 for a in x
    )


def _scaled(deltas: list[dict[str, torch.Tensor]], coeff: float) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for d in deltas:
        for m, dw in d.items():
            out[m] = out.get(m, 0) + coeff * dw
    return out


def _stats(bundle: Any, task: str, deltas: dict[str, torch.Tensor], split: str, s: float):
    """(mean entropy at scale s, accuracy, mean confidence at logit_scale) of one task."""
    cos = _cos(bundle, task, bundle.features(deltas, tasks=[task], split=split)[task])
    labels = bundle.labels(task, split)
    conf = torch.softmax(bundle.logit_scale * cos, -1).max(-1).values.mean()
    acc = (cos.argmax(-1) == labels).float().mean()
    return float(_entropy(s * cos)), float(acc), float(conf)


def gradients_at(
    bundle: Any, deltas: list[dict[str, torch.Tensor]], coeff: float, split: str, s: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of Σ_t H_t (scale ``s``) and of the labelled Σ_t CE_t (``logit_scale``) with
    respect to layer-wise coefficients ``c (T, M)`` at ``c = coeff``: each ``(T, M)``."""
    modules = list(deltas[0])
    c = torch.full((len(deltas), len(modules)), float(coeff), requires_grad=True)
    base = {m: bundle.encoder.get_submodule(m).weight.detach() for m in modules}
    grads = {"H": torch.zeros_like(c), "CE": torch.zeros_like(c)}
    for task in bundle.task_names:
        weights = {
            f"{m}.weight": base[m] + sum(c[t, j] * deltas[t][m] for t in range(len(deltas)))
            for j, m in enumerate(modules)
        }
        tokens = bundle._tokens(task, split).clone()
        feats = functional_call(bundle.encoder, weights, (tokens,), {"embedded": True})
        cos = _cos(bundle, task, feats)
        losses = {
            "H": _entropy(s * cos),
            "CE": F.cross_entropy(bundle.logit_scale * cos, bundle.labels(task, split)),
        }
        for key, loss in losses.items():
            (g,) = torch.autograd.grad(loss, c, retain_graph=key == "H")
            grads[key] += g
    return grads["H"], grads["CE"]


def coverage_per_layer(adapters: Any) -> dict[str, float]:
    """Per module, the rank-1 coverage ratio of the adapters (TARA's erank ratio)."""
    from merging_core.geometry.coverage import coverage_stacks

    out = {}
    for m in next(iter(adapters)).modules:
        fs = adapters.factors(m)
        out[m] = coverage_stacks([f.B for f in fs], [f.A for f in fs])["coverage_ratio"]
    return out


def premise_checks(
    bundle: Any, *, split: str = "validation", entropy_scale: float | None = None
) -> dict[str, Any]:
    """All premise checks of a built bundle (see the module docstring); JSON-ready.

    ``entropy_scale``: the scale inside the entropies (default: the bundle's, as the methods).
    """
    adapters = bundle.adapter_set()
    names = list(bundle.task_names)
    deltas = [{m: a.delta(m) for m in a.modules} for a in adapters]
    s = _entropy_scale(bundle) if entropy_scale is None else float(entropy_scale)
    ta = {lam: {t: _stats(bundle, t, _scaled(deltas, lam), split, s) for t in names}
          for lam in TA_GRID}  # fmt: skip
    individual = {t: bundle._entry(t)["individual_validation_accuracy"] for t in names}
    avg = {lam: statistics.mean(ta[lam][t][1] / individual[t] for t in names)
           for lam in TA_GRID if lam > 0}  # fmt: skip
    best = max(avg, key=avg.get)
    g_h, g_ce = gradients_at(bundle, deltas, best, split, s)
    tasks: dict[str, Any] = {}
    for i, t in enumerate(names):
        own = [_stats(bundle, t, _scaled([deltas[i]], lam), split, s)[0] for lam in OWN_GRID]
        h0, acc0, conf0 = ta[0.0][t]
        entropies = [ta[lam][t][0] for lam in TA_GRID]
        accs = [ta[lam][t][1] for lam in TA_GRID]
        tail = own[1:]
        falls = _slope(OWN_GRID[1:], tail) < 0 and tail[-1] < tail[0]
        cosine = float(F.cosine_similarity(g_h[i], g_ce[i], dim=0))
        gap = conf0 - acc0
        tasks[t] = {
            "calibration_gap": gap,
            "base_confidence": conf0,
            "base_validation_accuracy": acc0,
            "own_entropy": own,
            "own_entropy_falls": bool(falls),
            "gradient_cosine": cosine,
            "taskwise_gradient_agrees": bool(float(g_h[i].sum()) * float(g_ce[i].sum()) > 0),
            "ta_entropy": entropies,
            "ta_accuracy": accs,
            "entropy_accuracy_correlation": _pearson(entropies, accs),
            "passes": bool(gap <= MAX_CALIBRATION_GAP and falls and cosine > 0),
        }
    return {
        "split": split,
        "entropy_scale": s,
        "max_calibration_gap": MAX_CALIBRATION_GAP,
        "own_grid": list(OWN_GRID),
        "ta_grid": list(TA_GRID),
        "ta_lambda": best,
        "ta_validation_average": avg[best],
        "tasks": tasks,
        "coverage_ratio": coverage_per_layer(adapters),
        "all_pass": all(v["passes"] for v in tasks.values()),
    }


def failures(premise: dict[str, Any]) -> list[str]:
    """One line per failed check (empty when every task passes)."""
    out = []
    for t, v in premise["tasks"].items():
        if v["calibration_gap"] > premise["max_calibration_gap"]:
            out.append(f"{t}: base calibration gap {100 * v['calibration_gap']:+.1f} points "
                       f"> {100 * premise['max_calibration_gap']:.0f}")  # fmt: skip
        if not v["own_entropy_falls"]:
            own = ", ".join(f"{h:.3f}" for h in v["own_entropy"])
            out.append(f"{t}: entropy of base + λ·ΔW_own does not fall on [0.1, 0.5] ({own})")
        if v["gradient_cosine"] <= 0:
            out.append(f"{t}: entropy gradient opposes the labelled one at the TA point "
                       f"(cosine {v['gradient_cosine']:+.2f})")  # fmt: skip
    return out


def report(premise: dict[str, Any]) -> str:
    """Markdown: per task the premise numbers, then the coverage ratio per layer."""
    lines = [
        f"Premise checks ({premise['split']}, entropy scale {premise['entropy_scale']:g}, "
        f"TA point λ {premise['ta_lambda']:.1f})",
        "",
        "| task | conf − acc | H own λ 0.1 → 0.5 | grad cos | task-wise | corr(H, acc) | pass |",
        "|---|---:|---|---:|:---:|---:|:---:|",
    ]
    for t, v in premise["tasks"].items():
        own = v["own_entropy"]
        lines.append(
            f"| {t} | {100 * v['calibration_gap']:+.1f} | {own[1]:.3f} → {own[-1]:.3f} | "
            f"{v['gradient_cosine']:+.2f} | {'yes' if v['taskwise_gradient_agrees'] else 'no'} | "
            f"{v['entropy_accuracy_correlation']:+.2f} | {'yes' if v['passes'] else 'NO'} |"
        )
    cov = premise["coverage_ratio"]
    by_kind: dict[str, list[float]] = {}
    for m, r in cov.items():
        by_kind.setdefault(m.rsplit(".", 1)[-1], []).append(r)
    lines += ["", "Coverage ratio (rank-1 stack erank / Σ per-task erank), mean over blocks: "
              + ", ".join(f"{k} {statistics.mean(v):.2f}" for k, v in by_kind.items())]  # fmt: skip
    return "\n".join(lines)


def labelled_oracle(
    bundle: Any, *, steps: int = 60, lr: float = 1e-2, split: str = "validation"
) -> dict[str, Any]:
    """Headroom of AdaMerging's parametrisation with labels (an oracle no user has, never a
    method): layer-wise coefficients ``c (T, M)`` from the TA point, trained with the labelled
    cross-entropy on ``split`` (full batch, Adam), then scored on test.

    Returns:
        ``{"steps", "ta_lambda", "test": bundle.evaluate(...) of the trained merge}``.
    """
    adapters = bundle.adapter_set()
    names = list(bundle.task_names)
    deltas = [{m: a.delta(m) for m in a.modules} for a in adapters]
    individual = {t: bundle._entry(t)["individual_validation_accuracy"] for t in names}
    avg = {}
    for lam in TA_GRID[1:]:
        res = bundle.evaluate(_scaled(deltas, lam), split=split)
        avg[lam] = statistics.mean(res["tasks"][t]["accuracy"] / individual[t] for t in names)
    start = max(avg, key=avg.get)
    modules = list(deltas[0])
    c = torch.full((len(deltas), len(modules)), float(start), requires_grad=True)
    base = {m: bundle.encoder.get_submodule(m).weight.detach() for m in modules}
    opt = torch.optim.Adam([c], lr=lr)

    def merged(coeffs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            m: sum(coeffs[t, j] * deltas[t][m] for t in range(len(deltas)))
            for j, m in enumerate(modules)
        }

    for _ in range(steps):
        opt.zero_grad()
        weights = {f"{m}.weight": base[m] + dw for m, dw in merged(c).items()}
        for task in names:
            tokens = bundle._tokens(task, split).clone()
            feats = functional_call(bundle.encoder, weights, (tokens,), {"embedded": True})
            logits = bundle.logit_scale * _cos(bundle, task, feats)
            loss = F.cross_entropy(logits, bundle.labels(task, split))
            loss.backward(retain_graph=True)
        opt.step()
    with torch.no_grad():
        final = {m: dw.detach() for m, dw in merged(c).items()}
    return {"steps": steps, "ta_lambda": start, "test": bundle.evaluate(final)}
