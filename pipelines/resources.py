"""Dagster resources: where the data root is, and the handles assets use to reach it."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import dagster as dg

from storage.paths import DataRoot
from storage.warehouse import Warehouse


class ConescopeHome(dg.ConfigurableResource):
    """The data root (``CONESCOPE_HOME``): datasets, embeddings, warehouse, reports, Dagster's home."""

    home: str

    @cached_property
    def paths(self) -> DataRoot:
        return DataRoot(Path(self.home).resolve())

    @cached_property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.paths.warehouse)
