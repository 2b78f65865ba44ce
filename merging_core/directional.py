"""Coefficient-weighted LoRA forward: one mechanism shared by TARA-A/B, AdaMerging and sensitivity.

Space: factors. Each targeted module carries a *direction bank* ``(B, A, fold)`` with
``B: (d_out, R)``, ``A: (F·R, d_in)`` and one coefficient per row of ``A``. The merged update is

    ΔW(φ) = B · Σ_f diag(φ_f) A_f          (A_f = rows f·R … (f+1)·R − 1 of A, φ_f likewise)

and the forward adds ``B (fold(φ ⊙ (A x)))`` to the frozen module's output through a forward hook,
so no ``d_out × d_in`` matrix is formed, in training or at export (the merged factors are ``B``
and ``Σ_f diag(φ_f) A_f``, rank ``R``). The one exception is a cost choice: when ``R`` is so high
that the factored product costs more per token than the layer itself, the layer runs with
``W_0 + B A_φ`` formed transiently (:class:`WeightedLoraHooks`); both routes are exact.

* TARA-A (tara.md §2.1/3.2): ``B = [B_1 … B_N]``, ``A = [A_1; …; A_N]``, ``F = 1``; one ``φ`` per
  rank-1 LoRA direction.
* TARA-B (§2.2/3.3): SVD of ``[ΔW_1 | … | ΔW_N]`` in factor space, ``B = U Σ`` (``R = Σ r_i``
  columns), ``A = [V_1ᵀ; …; V_Nᵀ]``, ``F = N``; one ``φ_{ik}`` per task block and singular
  direction.
* AdaMerging: the TARA-A bank with ``φ`` tied to one ``λ`` per (task) or per (module, task).

With all ``φ = c`` every bank reproduces Task Arithmetic at ``λ = c`` exactly.
"""

from __future__ import annotations

import hashlib
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from merging_core.adapters import AdapterSet
from merging_core.factors import svd_of_concat
from merging_core.merge import (
    MergedModule,
    MergeResult,
    Progress,
    report_progress,
    result_from_modules,
)

ShouldStop = Callable[[], bool]
Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DirectionBank:
    """Weighted rank-1 directions of one module (see the module docstring).

    Attributes:
        B: ``(d_out, R)`` left factors (scale folded).
        A: ``(F·R, d_in)`` right factors; row ``k`` pairs with column ``k mod R`` of ``B``.
        owner: ``(F·R,)`` long, the adapter index each direction belongs to.
        fold: ``F``, the number of right blocks sharing ``B``.
    """

    B: torch.Tensor
    A: torch.Tensor
    owner: torch.Tensor
    fold: int = 1

    def __post_init__(self) -> None:
        if self.A.shape[0] != self.fold * self.B.shape[1]:
            raise ValueError(
                f"bank needs A with fold·R = {self.fold}·{self.B.shape[1]} rows, "
                f"got A {tuple(self.A.shape)}"
            )

    @property
    def size(self) -> int:
        """Number of directions (coefficients) ``K = F·R``."""
        return int(self.A.shape[0])

    def to(self, device: torch.device) -> DirectionBank:
        return DirectionBank(self.B.to(device), self.A.to(device), self.owner.to(device), self.fold)

    def apply(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """``(..., d_in) -> (..., d_out)``: ``B fold(φ ⊙ (A x)) = B (A_φ x)``.

        ``A_φ = Σ_f diag(φ_f) A_f`` ``(R, d_in)`` is formed first (``K·d_in`` work), so the
        per-token cost is ``R·(d_in + d_out)`` whatever the fold (F times less than ``A x``).
        """
        _, A_phi = self.merged_factors(phi)
        return (x @ A_phi.T) @ self.B.T  # (..., d_in) @ (d_in, R) @ (R, d_out)

    def merged_factors(self, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact factors of ``ΔW(φ)``: ``B (d_out, R)`` and ``Σ_f diag(φ_f) A_f`` ``(R, d_in)``."""
        weighted = phi.reshape(-1, 1).to(self.A.dtype) * self.A  # (K, d_in)
        return self.B, weighted.unflatten(0, (self.fold, -1)).sum(dim=0)

    def direction_norms(self) -> torch.Tensor:
        """``‖S_k‖_F = ‖b_k‖ ‖a_k‖`` for every direction ``k``, ``(K,)``."""
        b = torch.linalg.vector_norm(self.B, dim=0).repeat(self.fold)  # (K,)
        return b * torch.linalg.vector_norm(self.A, dim=1)


def bank_variant_a(adapter_set: AdapterSet, module: str) -> DirectionBank:
    """TARA-A bank: ``B_cat = [B_1 … B_N]`` ``(d_out, Σr)``, ``A_cat = [A_1; …; A_N]``."""
    mods = _linear_factors(adapter_set, module)
    owner = torch.cat([torch.full((m.rank,), t, dtype=torch.long) for t, m in enumerate(mods)])
    B = torch.cat([m.B.float() for m in mods], dim=1)
    A = torch.cat([m.A.float() for m in mods], dim=0)
    return DirectionBank(B=B, A=A, owner=owner, fold=1)


def bank_variant_b(adapter_set: AdapterSet, module: str) -> DirectionBank:
    """TARA-B bank from the exact factor-space SVD of ``[ΔW_1 | … | ΔW_N]``.

    ``B = U Σ`` ``(d_out, k)``, ``A = [V_1ᵀ; …; V_Nᵀ]`` ``(N·k, d_in)``, ``k = min(Σ r_i, d_out)``
    (lossless: ``ΔW_i = U Σ V_iᵀ``). Blocks are not renormalised (tara.md §2.2).
    """
    mods = _linear_factors(adapter_set, module)
    svd = svd_of_concat([m.B for m in mods], [m.A for m in mods])
    k = int(svd.S.numel())
    A = torch.cat([v.T for v in svd.V_blocks], dim=0)  # (N k, d_in)
    owner = torch.arange(len(mods)).repeat_interleave(k)
    return DirectionBank(B=svd.U * svd.S, A=A.contiguous(), owner=owner, fold=len(mods))


BANK_BUILDERS: dict[str, Callable[[AdapterSet, str], DirectionBank]] = {
    "a": bank_variant_a,
    "b": bank_variant_b,
}


def build_banks(adapter_set: AdapterSet, *, variant: str) -> dict[str, DirectionBank]:
    """One bank per mergeable module, keyed by module path.

    Raises:
        ValueError: unknown variant, or a module that is not a linear layer.
    """
    if variant not in BANK_BUILDERS:
        raise ValueError(f"variant must be one of {sorted(BANK_BUILDERS)}, got {variant!r}")
    build = BANK_BUILDERS[variant]
    return {name: build(adapter_set, name) for name in adapter_set.modules}


def _linear_factors(adapter_set: AdapterSet, module: str) -> list:
    mods = adapter_set.factors(module)
    if any(m.kind != "linear" for m in mods):
        raise ValueError(f"module {module!r} is not a linear layer; weighted forwards need linear")
    return mods


class WeightedLoraHooks:
    """Adds ``ΔW(φ) x`` to each targeted module's output while active (a context manager).

    Two exact routes per module, chosen by cost (``route="auto"``):

    * ``factored``: a forward hook adds ``B (A_φ x)``; per token ``R·(d_in + d_out)``.
    * ``dense``: for an ``nn.Linear`` whose factored rank is so high that
      ``R·(d_in + d_out) ≥ d_in·d_out`` (e.g. TARA-B with ``R = Σ r_i ≥ d / 2``), the layer runs
      ``linear(x, W_0 + B A_φ, bias)`` instead: ``B A_φ`` is formed once per forward
      (``d_out·R·d_in``), transiently, and the per-token cost is the base layer's alone. This is
      the only place a dense ΔW appears, and only where it is the cheaper way to the same value.

    Set the coefficients with :meth:`set` before each forward (they may require grad). Hooks and
    forward overrides are removed on exit, also on error.
    """

    def __init__(
        self, encoder: nn.Module, banks: Mapping[str, DirectionBank], *, route: str = "auto"
    ) -> None:
        if route not in ("auto", "factored", "dense"):
            raise ValueError(f"route must be 'auto', 'factored' or 'dense', got {route!r}")
        self.encoder, self.banks, self.route = encoder, dict(banks), route
        self.phi: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._overridden: list[nn.Module] = []

    def set(self, phi: Mapping[str, torch.Tensor]) -> None:
        self.phi = dict(phi)

    def __enter__(self) -> WeightedLoraHooks:
        try:
            for path, bank in self.banks.items():
                layer = self._layer(path)
                if self._dense(layer, bank):
                    layer.forward = self._merged_forward(layer, path, bank)
                    self._overridden.append(layer)
                else:
                    self._handles.append(layer.register_forward_hook(self._hook(path, bank)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        for layer in self._overridden:
            del layer.forward  # back to the class's forward
        self._handles.clear()
        self._overridden.clear()

    def _layer(self, path: str) -> nn.Module:
        try:
            return self.encoder.get_submodule(path)
        except AttributeError:
            raise KeyError(f"the encoder has no submodule {path!r} for this adapter") from None

    def _dense(self, layer: nn.Module, bank: DirectionBank) -> bool:
        if self.route == "factored" or type(layer) is not nn.Linear:
            return False
        d_out, d_in = layer.weight.shape
        return self.route == "dense" or bank.B.shape[1] * (d_in + d_out) >= d_in * d_out

    def _merged_forward(self, layer: nn.Linear, path: str, bank: DirectionBank):
        def forward(x: torch.Tensor) -> torch.Tensor:
            B, A_phi = bank.merged_factors(self.phi[path])
            weight = layer.weight + (B @ A_phi).to(layer.weight.dtype)  # (d_out, R) @ (R, d_in)
            return nn.functional.linear(x, weight, layer.bias)

        return forward

    def _hook(self, path: str, bank: DirectionBank) -> Callable[..., torch.Tensor]:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            x = inputs[0]
            return output + bank.apply(x.to(bank.A.dtype), self.phi[path]).to(output.dtype)

        return hook


# ---------------------------------------------------------------------------------------------
# Coefficient parameterisations: nn.Modules whose forward() returns {module path: φ (K,)}.


class DirectionCoefficients(nn.Module):
    """One free signed ``φ`` per direction per module (TARA), init ``init`` or a warm start."""

    def __init__(
        self,
        banks: Mapping[str, DirectionBank],
        *,
        init: float,
        warm: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.paths = list(banks)
        device = next(iter(banks.values())).A.device
        params = []
        for path, bank in banks.items():
            start = torch.full((bank.size,), float(init), device=device)
            if warm is not None and path in warm:
                start = _checked_warm(warm[path], bank.size, path).to(device)
            params.append(nn.Parameter(start.clone()))
        self.values = nn.ParameterList(params)

    def forward(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.paths, self.values, strict=True))

    def state(self) -> dict[str, torch.Tensor]:
        """Trained coefficients per module path, detached on CPU (warm-start input)."""
        return {p: v.detach().cpu().clone() for p, v in zip(self.paths, self.values, strict=True)}


class TaskCoefficients(nn.Module):
    """AdaMerging: ``λ`` per task (task-wise) or per (module, task) (layer-wise), ``φ = λ[owner]``.

    ``clamp`` restricts the *used* λ to ``[0, 1]`` at every forward (original AdaMerging).
    """

    def __init__(
        self,
        banks: Mapping[str, DirectionBank],
        *,
        num_tasks: int,
        layerwise: bool,
        init: float,
        clamp: bool,
        warm: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.paths = list(banks)
        self.owners = [bank.owner for bank in banks.values()]
        self.layerwise, self.clamp = layerwise, clamp
        device = self.owners[0].device
        shape = (len(self.paths), num_tasks) if layerwise else (num_tasks,)
        start = torch.full(shape, float(init), device=device)
        if warm is not None:
            if "lambda" not in warm:
                raise ValueError(
                    f"warm start for AdaMerging needs a 'lambda' entry, got {list(warm)[:3]}"
                )
            if tuple(warm["lambda"].shape) != shape:
                raise ValueError(f"warm lambda must have shape {shape}, got {warm['lambda'].shape}")
            start = warm["lambda"].to(device)
        self.lam = nn.Parameter(start.clone())

    def forward(self) -> dict[str, torch.Tensor]:
        lam = self.lam.clamp(0.0, 1.0) if self.clamp else self.lam
        out = {}
        for m, (path, owner) in enumerate(zip(self.paths, self.owners, strict=True)):
            out[path] = (lam[m] if self.layerwise else lam)[owner]
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {"lambda": self.lam.detach().cpu().clone()}


def _checked_warm(value: torch.Tensor, size: int, path: str) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if value.numel() != size:
        raise ValueError(f"warm-start φ for {path!r} has {value.numel()} entries, need {size}")
    return value


# ---------------------------------------------------------------------------------------------
# Data: cycling shuffled batches, entropies, anchors.


class BatchStream:
    """Endless shuffled batches of indices into ``n`` items (a new permutation per pass)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        if n < 1:
            raise ValueError(f"a task needs at least one unlabeled input, got {n}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self._order = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        while self._order.numel() < min(self.batch_size, self.n):
            perm = torch.randperm(self.n, generator=self.generator)
            self._order = torch.cat([self._order, perm])
        size = min(self.batch_size, self.n)
        batch, self._order = self._order[:size], self._order[size:]
        return batch


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of ``softmax(logits)`` over the batch, ``(N, C) -> ()`` (nats)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1).mean()


def entropy_logits(
    context: Any, task: int, features: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """``(N, d_embed) -> (N, C)`` logits the entropy objective sees: ``scale · cos``.

    ``cos = normalize(features) @ head_taskᵀ``; ``scale=None`` keeps the bundle's own
    ``context.logit_scale`` (then equal to ``context.logits``). The official TARA code uses
    un-scaled cosines (``scale = 1``, tara.md §6.1). Evaluation never goes through here.

    Raises:
        ValueError: ``scale`` is not a positive number.
    """
    if scale is None:
        return context.logits(task, features)
    if not float(scale) > 0:
        raise ValueError(f"entropy_scale must be > 0 (or None for the bundle's), got {scale!r}")
    feats = torch.nn.functional.normalize(features, dim=-1)
    return float(scale) * feats @ context.heads[task].to(feats.device).T


def task_entropy(
    context: Any, task: int, inputs: torch.Tensor, *, scale: float | None = None
) -> torch.Tensor:
    """``H_task`` of the encoder *as currently hooked* on ``inputs`` ``(n, ...)``.

    ``scale``: logit scale inside the entropy (None = the bundle's), see :func:`entropy_logits`.
    """
    features = context.encoder(inputs.to(context.device))
    return mean_entropy(entropy_logits(context, task, features, scale))


@contextmanager
def frozen_eval(encoder: nn.Module) -> Iterator[None]:
    """Encoder in eval mode with frozen weights for the duration; restores both on exit."""
    was_training = encoder.training
    flags = [(p, p.requires_grad) for p in encoder.parameters()]
    encoder.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        encoder.train(was_training)


def task_indices(adapter_set: AdapterSet, context: Any) -> list[int]:
    """Context task index of every adapter (adapter name = task name)."""
    return [context.task_index(name) for name in adapter_set.names]


def entropy_over_inputs(
    context: Any, task: int, inputs: torch.Tensor, *, chunk: int = 256, scale: float | None = None
) -> float:
    """Mean entropy over all of ``inputs`` in chunks (no grad), weighted by chunk size."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, inputs.shape[0], chunk):
            part = inputs[start : start + chunk]
            total += float(task_entropy(context, task, part, scale=scale)) * part.shape[0]
    return total / max(inputs.shape[0], 1)


# ---------------------------------------------------------------------------------------------
# The optimisation loop shared by TARA and AdaMerging.


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings; ``optimizer`` is ``"adamw"`` (TARA, torch default decay) or ``"adam"``.

    ``entropy_scale``: logit scale inside the entropies (None = the bundle's own).
    """

    steps: int
    lr: float
    batch_size: int = 16
    batches_per_step: int = 1
    optimizer: str = "adamw"
    entropy_scale: float | None = None


@dataclass
class TrainTrace:
    """What one optimisation produced (history per step)."""

    losses: list[float] = field(default_factory=list)
    entropies: list[list[float]] = field(default_factory=list)
    steps_done: int = 0
    stopped: bool = False
    seconds: float = 0.0


def train_coefficients(
    context: Any,
    tasks: Sequence[int],
    banks: Mapping[str, DirectionBank],
    coefficients: nn.Module,
    objective: Objective,
    *,
    config: TrainConfig,
    generator: torch.Generator,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> TrainTrace:
    """Minimise ``objective(H)`` over ``coefficients``; ``H (N,)`` = per-task batch entropies.

    Each step draws ``batches_per_step`` batches of ``batch_size`` unlabeled inputs from every
    task (cycling shuffled passes drawn with ``generator``), runs the hooked encoder, and takes
    one optimiser step. ``should_stop()`` is polled before every step.
    """
    if config.steps < 0:
        raise ValueError(f"steps must be >= 0, got {config.steps}")
    opt = _optimizer(config, coefficients.parameters())
    streams = [
        BatchStream(context.unlabeled[t].shape[0], config.batch_size, generator) for t in tasks
    ]
    trace, start = TrainTrace(), time.perf_counter()
    with frozen_eval(context.encoder), WeightedLoraHooks(context.encoder, banks) as hooks:
        for step in range(config.steps):
            if should_stop is not None and should_stop():
                trace.stopped = True
                break
            losses = _one_step(context, tasks, streams, hooks, coefficients, objective, opt, config)
            trace.losses.append(losses[0])
            trace.entropies.append(losses[1])
            trace.steps_done = step + 1
            report_progress(progress, (step + 1) / config.steps, f"step {step + 1}/{config.steps}")
    trace.seconds = time.perf_counter() - start
    return trace


def _optimizer(config: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    if config.lr <= 0:
        raise ValueError(f"lr must be > 0, got {config.lr}")
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    raise ValueError(f"optimizer must be 'adamw' or 'adam', got {config.optimizer!r}")


def _one_step(context, tasks, streams, hooks, coefficients, objective, opt, config):
    opt.zero_grad(set_to_none=True)
    total, entropies = 0.0, torch.zeros(len(tasks))
    for _ in range(config.batches_per_step):
        hooks.set(coefficients())
        batches = [context.unlabeled[t][s.next()] for t, s in zip(tasks, streams, strict=True)]
        H = batch_entropies(context, tasks, batches, scale=config.entropy_scale)  # (N,)
        loss = objective(H)
        loss.backward()
        total += float(loss.detach())
        entropies += H.detach().cpu()
    opt.step()
    return total / config.batches_per_step, (entropies / config.batches_per_step).tolist()


def batch_entropies(
    context: Any,
    tasks: Sequence[int],
    batches: Sequence[torch.Tensor],
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """``(N,)`` mean entropies, one encoder pass over all tasks' batches concatenated.

    The encoder is per-sample (eval mode), so one pass equals N separate passes, only faster.
    ``scale``: logit scale inside the entropy (None = the bundle's), see :func:`entropy_logits`.
    """
    x = torch.cat([b.to(context.device) for b in batches])
    features = context.encoder(x).split([b.shape[0] for b in batches])
    return torch.stack(
        [
            mean_entropy(entropy_logits(context, t, f, scale))
            for t, f in zip(tasks, features, strict=True)
        ]
    )


def merged_result(
    adapter_set: AdapterSet,
    banks: Mapping[str, DirectionBank],
    phi: Mapping[str, torch.Tensor],
    *,
    diagnostics: Mapping[str, Any] | None = None,
    extras: Mapping[str, Any] | None = None,
) -> MergeResult:
    """Exact factored ``MergeResult`` for coefficients ``φ`` (CPU float32 factors)."""
    modules: dict[str, MergedModule] = {}
    for path, bank in banks.items():
        B, A = bank.merged_factors(phi[path].detach())
        like = adapter_set.factors(path)[0]
        modules[path] = MergedModule.from_factors(like, B.detach().float().cpu(), A.float().cpu())
    return result_from_modules(adapter_set, modules, diagnostics=diagnostics, extras=extras)


# ---------------------------------------------------------------------------------------------
# Anchors z_i: the individual adapter's own mean entropy on its task's whole unlabeled split.

_ANCHOR_CACHE: dict[tuple[str, str, int, float | None], float] = {}
_CONTEXT_KEYS: dict[int, tuple[Any, str]] = {}


def context_fingerprint(context: Any) -> str:
    """Content hash of a context (encoder weights, heads, scale, unlabeled inputs), memoised."""
    cached = _CONTEXT_KEYS.get(id(context))
    if cached is not None and cached[0]() is context:
        return cached[1]
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(context.task_names), float(context.logit_scale))).encode())
    tensors = [*context.encoder.state_dict().values(), *context.heads, *context.unlabeled]
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    key = h.hexdigest()
    _CONTEXT_KEYS[id(context)] = (weakref.ref(context), key)
    return key


def adapter_anchor(
    adapter_set: AdapterSet, context: Any, index: int, *, scale: float | None = None
) -> float:
    """``z_i``: mean entropy of base + adapter ``index`` alone on its task's unlabeled inputs.

    ``scale``: logit scale inside the entropy (None = the bundle's); it must match the one the
    objective uses. Cached per (context content, adapter content, task, scale) in memory.
    """
    adapter = adapter_set.adapters[index]
    task = context.task_index(adapter.name)
    scale = None if scale is None else float(scale)
    key = (context_fingerprint(context), adapter.content_hash(), task, scale)
    if key not in _ANCHOR_CACHE:
        single = adapter_set.subset([index])
        banks = {p: b.to(context.device) for p, b in build_banks(single, variant="a").items()}
        ones = {p: torch.ones(b.size, device=context.device) for p, b in banks.items()}
        with frozen_eval(context.encoder), WeightedLoraHooks(context.encoder, banks) as hooks:
            hooks.set(ones)
            inputs = context.unlabeled[task]
            _ANCHOR_CACHE[key] = entropy_over_inputs(context, task, inputs, scale=scale)
    return _ANCHOR_CACHE[key]


def compute_anchors(
    adapter_set: AdapterSet, context: Any, *, scale: float | None = None
) -> tuple[float, ...]:
    """Anchors ``z_i`` for every adapter of the set, in set order (tara.md §2.4, as coded).

    ``scale``: logit scale inside the entropy (None = the bundle's), as in the objective.
    """
    return tuple(
        adapter_anchor(adapter_set, context, i, scale=scale) for i in range(len(adapter_set))
    )
