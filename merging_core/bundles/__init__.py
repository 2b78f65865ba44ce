"""Sample bundles: a base encoder, per-task zero-shot heads, adapters, data and evaluation.

``load_bundle("vision8")`` loads the shipped miniature of the paper's eight-vision-task protocol
(see ``sample_adapters/vision8/README.md``); ``python -m merging_core.bundles.vision8 build``
regenerates it from scratch.
"""

from merging_core.bundles.bundle import Bundle, load_bundle, load_bundle_from
from merging_core.bundles.context import TaskContext

__all__ = ["Bundle", "TaskContext", "load_bundle", "load_bundle_from"]
