"""Asset keys of the graph (docs/ARCHITECTURE.md, "The asset graph"), in one place so that assets, jobs, schedules
and tests agree on them."""


import dagster as dg

# Every asset that writes the warehouse for long: 1 slot on the DuckDB file, one per CPU on DuckLake.
DUCKDB_POOL = "duckdb"
# The embedding assets: one step per GPU (`dagster instance concurrency set gpu <number of GPUs>`).
# Their only warehouse writes (rejects, view refresh) are short and wait on DuckDB's file lock.
GPU_POOL = "gpu"
# A run tagged conescope/force=true recomputes what it selects even where the stored result matches: the
# embedding steps re-embed a complete partition whose fingerprint matches (the UI launchpad adds run tags).
FORCE_TAG = "conescope/force"
# With the Kubernetes executor (dagster-k8s) each embedding step's pod asks for one GPU.
GPU_STEP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}
# Run-log lines that `conescope materialize` also prints under the run in progress (pipelines/refresh.py,
# TerminalLines), marked by a key of the log call's `extra`: how a model was created, in the profile's terms
# (the line itself), and an embedding step's progress ((the step, conescope.engine.ProgressFigures)).
MODEL_NOTE_EXTRA = "conescope_model_note"
PROGRESS_EXTRA = "conescope_progress"


def dataset(ds: str) -> dg.AssetKey:
    return dg.AssetKey(["datasets", ds])


def image_embeddings(ds: str) -> dg.AssetKey:
    return dg.AssetKey(["embeddings", f"{ds}_image"])


def text_embeddings(ds: str) -> dg.AssetKey:
    return dg.AssetKey(["embeddings", f"{ds}_text"])


def metric(name: str) -> dg.AssetKey:
    """metrics/<name>: the assets declared in ``conescope.metric_families`` and metrics/transforms."""
    return dg.AssetKey(["metrics", name])


# training/checkpoint [trained model]: the weights of a model the pipeline trains (assets/training.py)
CHECKPOINT = dg.AssetKey(["training", "checkpoint"])
PARTITION_REPORT = dg.AssetKey(["reports", "partition_report"])
TRANSFORM_METRICS = metric("transforms")


def transform(kind: str) -> dg.AssetKey:
    return dg.AssetKey(["transforms", kind])
