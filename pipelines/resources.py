"""Dagster resources: where the data root is, and the handles assets use to reach it."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import dagster as dg

from storage.paths import DataRoot
from storage.warehouse import Warehouse, open_warehouse


class ConescopeHome(dg.ConfigurableResource):
    """The data root (``CONESCOPE_HOME``): datasets, embeddings, warehouse, reports, Dagster's home;
    and the profile's ``warehouse`` section (backend, DuckLake catalog and data path)."""

    home: str
    warehouse_kind: str = "duckdb"
    warehouse_catalog: str | None = None
    warehouse_data_path: str = "lake"

    @cached_property
    def paths(self) -> DataRoot:
        return DataRoot(Path(self.home).resolve())

    @cached_property
    def warehouse(self) -> Warehouse:
        return open_warehouse(self.paths.root, self.warehouse_kind, self.warehouse_catalog, self.warehouse_data_path)
