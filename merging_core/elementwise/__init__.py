"""Element-wise merging on ΔW (TIES, DARE and the methods that reuse their rules on other
tensors): the steps themselves (:mod:`~merging_core.elementwise.steps`), the streaming engines
over tensors served one part at a time (:mod:`~merging_core.elementwise.streaming`), and the
fused engine that forms ΔW from the LoRA factors in row blocks
(:mod:`~merging_core.elementwise.fused`). Nothing here imports :mod:`merging_core.methods`; the
methods import these modules directly (this package re-exports nothing).
"""
