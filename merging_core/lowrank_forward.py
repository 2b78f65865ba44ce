"""Run a frozen model with low-rank updates ``ΔW = B·A`` added to chosen modules, for one call.

Space: factors. Task-data implementations use :func:`patched` *inside* their forward, so the
patched model never escapes a call: evaluation can not see an update twice (today's guard also
raises if a model is patched while already patched, e.g. an evaluation started from inside a
training forward).

Two exact routes per module, chosen by cost (``route="auto"``):

* ``factored``: a forward hook adds ``B (A x)`` to the module's output; per token
  ``R·(d_in + d_out)``.
* ``dense``: for an ``nn.Linear`` whose update rank is so high that ``R·(d_in + d_out) ≥
  d_in·d_out``, the layer runs ``linear(x, W_0 + B A, bias)``; ``B A`` is formed transiently once
  per forward and the per-token cost is the base layer's alone.

Optionally the block also *captures* chosen modules' inputs (``capture``): a data-driven method
that scores layer inputs (NSC-Merging) sees them without touching the model itself.

Models that fuse several projections into one matmul (the tiny ViT's q/k/v) ask
:func:`linear_weight` for the weight each layer applies right now, and :func:`observed` whether
anyone watches a module's inputs or outputs; either answer sends them back to calling the layers
one by one, so a fused forward is the same function of the inputs as the plain one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

_FLAG = "_merge_lab_patched"


@contextmanager
def patched(
    model: nn.Module,
    updates: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    route: str = "auto",
    capture: MutableMapping[str, list[torch.Tensor]] | None = None,
) -> Iterator[nn.Module]:
    """``model`` with ``B (A x)`` added to each ``updates`` path's output while the block runs.

    Args:
        model: the frozen base model. updates: path -> ``(B (d_out, R), A (R, d_in))``.
        route: ``"auto"``, ``"factored"`` or ``"dense"`` (see the module docstring).
        capture: optional path -> list; every forward of the submodule at a path (patched or
            not) appends that module's input ``x`` ``(..., d_in)`` to its list, as it entered the
            module (not detached: gradients flow back through it into the updates).

    Raises:
        KeyError: a path that is not a submodule. RuntimeError: ``model`` is already patched.
        ValueError: unknown route.
    """
    if route not in ("auto", "factored", "dense"):
        raise ValueError(f"route must be 'auto', 'factored' or 'dense', got {route!r}")
    if getattr(model, _FLAG, False):
        raise RuntimeError(
            "this model is already running with merge updates applied; a nested forward would "
            "add them twice"
        )
    handles: list[Any] = []
    overridden: list[nn.Module] = []
    setattr(model, _FLAG, True)
    try:
        for path, inputs in (capture or {}).items():
            handles.append(_layer(model, path).register_forward_pre_hook(_recorder(inputs)))
        for path, (B, A) in updates.items():
            layer = _layer(model, path)
            if _dense(layer, B, route):
                layer.forward = _merged_forward(layer, B, A)
                overridden.append(layer)
            else:
                handles.append(layer.register_forward_hook(_hook(B, A)))
        yield model
    finally:
        for handle in handles:
            handle.remove()
        for layer in overridden:
            del layer.forward  # back to the class's forward
        setattr(model, _FLAG, False)


def require_unpatched(model: nn.Module) -> None:
    """Raise ``RuntimeError`` when ``model`` is inside :func:`patched` (evaluation guard)."""
    if getattr(model, _FLAG, False):
        raise RuntimeError(
            "the base model is running with merge updates applied (inside a training forward); "
            "evaluating it now would add the merged ΔW twice"
        )


def linear_weight(layer: nn.Linear) -> torch.Tensor | None:
    """The weight ``layer`` applies in its forward now, or None when its output is not
    ``linear(x, weight, layer.bias)`` alone.

    ``W`` for a plain layer, ``W + B A`` while :func:`patched` runs it on the dense route; None
    when any hook is registered on it (a factored update, a capture, a caller's hook) or
    globally, or its forward was replaced by someone else.
    """
    if type(layer) is not nn.Linear or _hooked(layer, merge_hooks_count=True):
        return None
    override = layer.__dict__.get("forward")
    if override is None:
        return layer.weight
    merged = getattr(override, "merged_weight", None)
    return merged() if merged is not None else None


def observed(module: nn.Module) -> bool:
    """True when a hook other than this file's factored updates is registered on ``module`` or a
    submodule (someone records or changes what it sees), or globally; a model must then run
    those submodules on exactly the inputs its plain forward gives them."""
    return any(_hooked(m, merge_hooks_count=False) for m in module.modules())


def _hooked(module: nn.Module, *, merge_hooks_count: bool) -> bool:
    from torch.nn.modules import module as torch_module

    if (
        torch_module._global_forward_hooks
        or torch_module._global_forward_pre_hooks
        or torch_module._global_backward_hooks
        or torch_module._global_backward_pre_hooks
    ):
        return True
    if module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks:
        return True
    return any(merge_hooks_count or not getattr(h, "merge_update", False)
               for h in module._forward_hooks.values())  # fmt: skip


def _layer(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise KeyError(f"the base model has no submodule {path!r} for this adapter") from None


def _dense(layer: nn.Module, B: torch.Tensor, route: str) -> bool:
    if route == "factored" or type(layer) is not nn.Linear:
        return False
    d_out, d_in = layer.weight.shape
    return route == "dense" or B.shape[1] * (d_in + d_out) >= d_in * d_out


def _merged_forward(layer: nn.Linear, B: torch.Tensor, A: torch.Tensor) -> Callable[..., Any]:
    def merged_weight() -> torch.Tensor:
        return layer.weight + (B @ A).to(layer.weight.dtype)  # (d_out, R) @ (R, d_in)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, merged_weight(), layer.bias)

    forward.merged_weight = merged_weight  # type: ignore[attr-defined]  # read by linear_weight
    return forward


def _recorder(inputs: list[torch.Tensor]) -> Callable[..., None]:
    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        inputs.append(args[0])

    return hook


def _hook(B: torch.Tensor, A: torch.Tensor) -> Callable[..., torch.Tensor]:
    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        x = inputs[0].to(A.dtype)
        return output + ((x @ A.T) @ B.T).to(
            output.dtype
        )  # (..., d_in) -> (..., R) -> (..., d_out)

    hook.merge_update = True  # type: ignore[attr-defined]  # per token: not an observer
    return hook
