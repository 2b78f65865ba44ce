"""LoRA Merge Lab's library: load PEFT LoRA adapters, analyse merge geometry, merge, export.

Everything works on LoRA factors (``ΔW = B @ A``, scale folded into B) and never forms a dense
``d_out × d_in`` matrix unless a method is element-wise on ΔW.
"""

from merging_core.adapters import Adapter, AdapterConfig, AdapterSet, LoraModule
from merging_core.merge import MergedModule, MergeResult, merge

__all__ = [
    "Adapter",
    "AdapterConfig",
    "AdapterSet",
    "LoraModule",
    "MergeResult",
    "MergedModule",
    "load_adapter",
    "merge",
    "save_adapter",
]


def __getattr__(name: str):
    # io pulls in safetensors/json only when used; keeps `import merging_core` light.
    if name in ("load_adapter", "save_adapter", "load_adapters"):
        from merging_core import io

        return getattr(io, name)
    raise AttributeError(name)
