"""The merge-method registry: one decorator, one dict, typed parameter specs with bounds.

A method is a function ``fn(adapter_set, *, generator, progress, **params) -> MergeResult``
(data-driven methods also take ``task_data, warm_start, should_stop, device, cache``) registered
with :func:`register_method`; :func:`run_method` is the one place that validates and calls it. Its parameter spec drives the app's widgets and the CLI's
``--set k=v`` parsing, so no page or command has per-method code.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from merging_core.results import MergeResult

Space = Literal["factors", "delta"]
ParamKind = Literal["float", "int", "bool", "choice", "weights"]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_REGISTRY: dict[str, MethodInfo] = {}


@dataclass(frozen=True)
class Param:
    """One typed, bounded parameter of a merge method.

    Attributes:
        name: keyword name (lower snake case).
        kind: ``float``/``int``/``bool``/``choice``, or ``weights`` (one float per adapter;
            ``None`` means all ones).
        default: default value (validated at registration).
        low, high: inclusive bounds for numbers (and for each entry of ``weights``).
        step: suggested widget step. log: suggest a log-scale widget.
        choices: allowed values for ``choice``.
        help: one sentence shown as the widget's help text and in ``--help``.
    """

    name: str
    kind: ParamKind
    default: Any
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    log: bool = False
    help: str = ""

    def validate(self, value: Any) -> Any:
        """Coerce and check ``value``; raise ``ValueError`` naming the parameter and the value."""
        if self.kind == "weights":
            return self._validate_weights(value)
        if self.kind == "bool":
            if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
                return value.lower() in {"true", "1", "yes"}
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{self.name} must be one of {list(self.choices)}, got {value!r}")
            return value
        return self._validate_number(value)

    def _validate_number(self, value: Any) -> float | int:
        try:
            number = int(value) if self.kind == "int" else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be a {self.kind}, got {value!r}") from None
        if self.kind == "int" and float(value) != int(value):
            raise ValueError(f"{self.name} must be a whole number, got {value!r}")
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"{self.name} must be finite, got {value!r}")
        self._check_bounds(number, self.name)
        return number

    def _check_bounds(self, number: float, label: str) -> None:
        if self.low is not None and number < self.low:
            raise ValueError(f"{label} must be >= {self.low}, got {number}")
        if self.high is not None and number > self.high:
            raise ValueError(f"{label} must be <= {self.high}, got {number}")

    def _validate_weights(self, value: Any) -> tuple[float, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value.strip()) if v]
        if not isinstance(value, Sequence):
            raise ValueError(f"{self.name} must be a list of numbers, got {value!r}")
        try:
            weights = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be a list of numbers, got {value!r}") from None
        for i, w in enumerate(weights):
            if not math.isfinite(w):
                raise ValueError(f"{self.name}[{i}] must be finite, got {w}")
            self._check_bounds(w, f"{self.name}[{i}]")
        return weights


@dataclass(frozen=True)
class MethodInfo:
    """A registered method and everything the app/CLI need to offer it.

    Attributes:
        name: id (lower snake case), e.g. ``"ties"``. pretty_name: display name.
        reference_url: paper link. space: ``"factors"`` (exact low-rank route) or ``"delta"``
            (element-wise on dense ΔW, streamed one module at a time).
        needs_data: True when the method learns from unlabeled task data (``task_data``).
        params: the parameter spec. fn: the implementation. summary: one-line description.
        reconstructed: True when the method is our reconstruction from an abstract (labelled in UI).
    """

    name: str
    pretty_name: str
    reference_url: str
    space: Space
    fn: Callable[..., Any]
    params: tuple[Param, ...] = ()
    needs_data: bool = False
    summary: str = ""
    reconstructed: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"method {self.name!r} has no parameter {name!r}; it has {self.param_names}")

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults, coerce and bound-check; reject unknown names.

        Raises:
            ValueError: unknown parameter name or an invalid value.
        """
        unknown = sorted(set(params) - set(self.param_names))
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no parameter(s) {unknown}; it takes {self.param_names}"
            )
        out = self.defaults()
        for key, value in params.items():
            out[key] = self.param(key).validate(value)
        return out


def register_method(
    *,
    name: str,
    pretty_name: str,
    reference_url: str,
    space: Space,
    params: Sequence[Param] = (),
    needs_data: bool = False,
    reconstructed: bool = False,
    tags: Sequence[str] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers a merge method.

    Raises:
        ValueError: malformed or duplicate name, bad space, duplicate or invalid parameter defaults.
    """
    if not _NAME.match(name):
        raise ValueError(f"method name must be lower snake case, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered")
    if space not in ("factors", "delta"):
        raise ValueError(f"space must be 'factors' or 'delta', got {space!r}")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ValueError(f"method {name!r} declares a parameter twice: {names}")
    for p in params:
        if not _NAME.match(p.name):
            raise ValueError(f"parameter name must be lower snake case, got {p.name!r}")
        p.validate(p.default)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodInfo(
            name=name,
            pretty_name=pretty_name,
            reference_url=reference_url,
            space=space,
            fn=fn,
            params=tuple(params),
            needs_data=needs_data,
            summary=doc[0] if doc else "",
            reconstructed=reconstructed,
            tags=tuple(tags),
        )
        return fn

    return decorate


def get_method(name: str) -> MethodInfo:
    """The registered method ``name``; ``KeyError`` lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown merge method {name!r}; known: {sorted(_REGISTRY)}") from None


def available_methods(*, needs_data: bool | None = None) -> list[MethodInfo]:
    """All registered methods in registration order, optionally filtered by ``needs_data``."""
    infos = list(_REGISTRY.values())
    if needs_data is not None:
        infos = [m for m in infos if m.needs_data == needs_data]
    return infos


def run_method(
    adapter_set: Any,
    name: str,
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    progress: Callable[[float, str], None] | None = None,
    task_data: Any = None,
    warm_start: Any = None,
    should_stop: Callable[[], bool] | None = None,
    device: Any = None,
    cache: Any = None,
) -> Any:
    """Validate ``params`` against method ``name``'s spec, call it, stamp the result.

    Data-free methods get ``generator`` and ``progress`` only; data-driven ones also get the task
    data, warm start, stop poll, device and cache. The returned ``MergeResult`` carries the
    registered id, the validated parameters and the seed (what a recipe records).

    Raises:
        KeyError: unknown method. ValueError: bad parameters, or a data-driven method without
            ``task_data``. TypeError: the method returned something else than a ``MergeResult``.
    """
    info = get_method(name)
    checked = info.validate_params(dict(params or {}))
    if info.needs_data and task_data is None:
        raise ValueError(
            f"method {name!r} learns from unlabeled task data; pass task_data "
            "(e.g. load_bundle('vision8').task_data(), or --bundle on the command line)"
        )
    kwargs: dict[str, Any] = dict(checked)
    kwargs["generator"] = torch.Generator().manual_seed(int(seed))
    kwargs["progress"] = progress
    if info.needs_data:
        kwargs.update(task_data=task_data, warm_start=warm_start, should_stop=should_stop,
                      device=device, cache=cache)  # fmt: skip
    result = info.fn(adapter_set, **kwargs)
    if not isinstance(result, MergeResult):
        raise TypeError(f"method {name!r} returned {type(result).__name__}, not MergeResult")
    return dataclasses.replace(
        result, method=info.name, params=checked, adapter_names=tuple(adapter_set.names),
        seed=int(seed),
    )  # fmt: skip
