"""Dagster's home under the data root, so run history, schedules and pool limits persist."""

from __future__ import annotations

import os

import yaml

from storage.paths import DataRoot

# One slot per pool by default: the "duckdb" pool must stay at 1 (DuckDB lets a single process
# write the file); the "gpu" pool is raised to the number of GPUs by ensure_gpu_pool.
INSTANCE_CONFIG = {
    "telemetry": {"enabled": False},
    "concurrency": {"pools": {"default_limit": 1, "granularity": "op"}},
}


def ensure_dagster_home(root: DataRoot) -> str:
    """Create ``<data root>/dagster_home/dagster.yaml`` if missing, export DAGSTER_HOME, return it."""
    home = root.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(INSTANCE_CONFIG, sort_keys=False))
    os.environ["DAGSTER_HOME"] = str(home)
    return str(home)


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ensure_gpu_pool(instance, slots: int | None = None) -> int:
    """Give the "gpu" pool (the embedding steps) one slot per GPU of this machine, at least one,
    unless a limit was already set (``dagster instance concurrency set gpu N``); returns the limit."""
    from assets.keys import GPU_POOL

    storage = instance.event_log_storage
    if GPU_POOL in storage.get_concurrency_keys():
        return storage.get_concurrency_info(GPU_POOL).slot_count
    limit = slots if slots is not None else max(1, gpu_count())
    storage.set_concurrency_slots(GPU_POOL, limit)
    return limit
