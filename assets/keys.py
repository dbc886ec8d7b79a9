"""Asset keys of the graph in DESIGN.md ("Data flow"), in one place so that assets, jobs, schedules
and tests agree on them."""


import dagster as dg

DUCKDB_POOL = "duckdb"  # every asset that opens warehouse.duckdb for long; the instance sizes it to 1
# The embedding assets: one step per GPU (`dagster instance concurrency set gpu <number of GPUs>`).
# Their only warehouse writes (rejects, view refresh) are short and wait on DuckDB's file lock.
GPU_POOL = "gpu"
# With the Kubernetes executor (dagster-k8s) each embedding step's pod asks for one GPU.
GPU_STEP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}


def dataset(ds: str) -> dg.AssetKey:
    return dg.AssetKey(["datasets", ds])


def image_embeddings(ds: str) -> dg.AssetKey:
    return dg.AssetKey(["embeddings", f"{ds}_image"])


def text_embeddings(ds: str) -> dg.AssetKey:
    return dg.AssetKey(["embeddings", f"{ds}_text"])


IMAGE_ISOTROPY = dg.AssetKey(["metrics", "image_isotropy"])
ISOTROPY = dg.AssetKey(["metrics", "isotropy"])
MODALITY_GAP = dg.AssetKey(["metrics", "modality_gap"])
PARTITION_REPORT = dg.AssetKey(["reports", "partition_report"])
IMAGE_CLUSTERS = dg.AssetKey(["metrics", "image_clusters"])
LINEAR_PROBE = dg.AssetKey(["metrics", "linear_probe"])
CLIP_LOSS = dg.AssetKey(["metrics", "clip_loss"])
ZERO_SHOT = dg.AssetKey(["metrics", "zero_shot"])
RETRIEVAL = dg.AssetKey(["metrics", "retrieval"])
CLUSTERS = dg.AssetKey(["metrics", "clusters"])
LAYERS = dg.AssetKey(["metrics", "layers"])
MULTILINGUAL = dg.AssetKey(["metrics", "multilingual"])
TRANSFORM_METRICS = dg.AssetKey(["metrics", "transforms"])


def transform(kind: str) -> dg.AssetKey:
    return dg.AssetKey(["transforms", kind])
