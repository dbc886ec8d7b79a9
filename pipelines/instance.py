"""Dagster's home under the data root, so run history, schedules and pool limits persist."""

from __future__ import annotations

import os

import yaml

from storage.paths import DataRoot

# One slot for the "duckdb" pool (the only pool): DuckDB lets a single process write the file.
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
