"""The metric families of the storage contract: one warehouse table ``metrics.<family>`` each.

The one list that the warehouse (its schema and the ``metrics.all`` view), the metric assets and the
transform evaluation read, so that a family added here is created, written and queried everywhere.
"""

# Every family table of the contract, in the order of the README's table.
METRIC_TABLES = ("isotropy", "modality_gap", "clip_loss", "zero_shot", "linear_probe", "retrieval", "clusters",
                 "multilingual", "layers")
# The families measured again after each fitted transform (metrics/transforms writes their
# ``transform <> 'none'`` rows); the others describe the raw embeddings only.
TRANSFORM_TABLES = ("isotropy", "modality_gap", "clip_loss", "zero_shot", "retrieval")
