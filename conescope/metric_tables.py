"""The metric families of the storage contract: one warehouse table ``metrics.<family>`` each.

The one list that the warehouse (its schema and the ``metrics.all`` view), the metric assets and the
transform evaluation read, so that a family added here is created, written and queried everywhere.
"""

# Every family table of the contract, in the order of the table of docs/storage.md.
METRIC_TABLES = ("isotropy", "modality_gap", "clip_loss", "zero_shot", "linear_probe", "retrieval", "clusters",
                 "multilingual", "layers")
# The families measured again after each fitted transform; the others describe the raw embeddings only.
TRANSFORM_TABLES = ("isotropy", "modality_gap", "clip_loss", "zero_shot", "retrieval")
# The families whose ``transform <> 'none'`` rows metrics/transforms writes: the above, and the linear
# probe after the transforms the profile names in ``transforms.linear_probe`` (Tyshchuk et al. Table 3).
TRANSFORM_WRITTEN_TABLES = (*TRANSFORM_TABLES, "linear_probe")
