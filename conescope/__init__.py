"""conescope: the geometry of multimodal embeddings. Importable without Dagster."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from storage.notebook import Home

__version__ = "0.1.0"


def open(home: str | Path | None = None) -> Home:  # noqa: A001 (the notebook entry point, as io.open)
    """The data root ``home`` (default: ``CONESCOPE_HOME``, else ``./data``) opened for reading: metric
    tables as polars DataFrames, embeddings as arrays with their ids, report paths (``storage.notebook``)."""
    from storage.notebook import Home  # the storage layer, imported only when a notebook asks for it

    return Home(home)
