"""Bundles: a base model, per-task heads, adapters, data, evaluation and a task-data source.

``load_bundle("vision8")`` loads the shipped miniature of the paper's eight-vision-task protocol
(see ``sample_adapters/vision8/README.md``); ``load_bundle(folder)`` loads any bundle folder, e.g.
one written by ``merge-lab bundle init``. ``bundle.task_data(device)`` is what data-driven
merges take (:class:`merging_core.taskdata.TaskData`).
"""

from merging_core.bundles.loading import load_bundle, load_bundle_from, shipped_bundles

__all__ = ["load_bundle", "load_bundle_from", "shipped_bundles"]
