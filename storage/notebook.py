"""A data root opened for reading from Python (``conescope.open``): metric tables as polars DataFrames,
embeddings as numpy arrays with their ids, manifests, and the paths of the reports.

Everything is read, nothing written: the warehouse through a read-only DuckDB connection (which waits
while a materialization holds the file), the Parquet files of the storage contract directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from storage.parquet_store import read_embeddings, read_manifest_table
from storage.paths import DataRoot
from storage.warehouse import METRIC_TABLES, open_warehouse


@dataclass(frozen=True)
class Embeddings:
    """One embedding partition: ``vectors`` (n, d) float32, raw tower output (not normalized), row i
    belonging to ``ids[i]`` (``sample_id`` of images, ``text_id`` of texts); ``keys`` holds the other
    key columns (texts: ``sample_id``, ``label``, ``text``; both: ``norm``)."""

    ids: np.ndarray
    vectors: np.ndarray
    keys: pl.DataFrame


class Home:
    """The data root at ``root`` (see the storage contract, docs/storage.md), its warehouse opened as the
    profile's ``warehouse`` section says (the embedded DuckDB file, or DuckLake)."""

    def __init__(self, root: str | Path | None = None, profile: str | None = None):
        from conescope.profile import load_profile

        self.root = DataRoot.from_env() if root is None else DataRoot(Path(root).resolve())
        spec = load_profile(profile).warehouse
        self.warehouse = open_warehouse(self.root.root, spec.kind, spec.catalog, spec.data_path)

    def __repr__(self) -> str:
        return f"conescope.open({str(self.root.root)!r})"

    def sql(self, query: str, params: list | None = None) -> pl.DataFrame:
        """The result of a read-only query against the warehouse."""
        with self.warehouse.connect(read_only=True) as con:
            return con.sql(query, params=params or None).pl()

    def metrics(self, family: str = "all", **equal: str | None) -> pl.DataFrame:
        """The rows of ``metrics.<family>`` (``all``: every family, with a ``family`` column) whose
        columns equal the keyword arguments, e.g. ``metrics("isotropy", model="...", transform="none")``
        (None matches null)."""
        if family not in (*METRIC_TABLES, "all"):
            raise ValueError(f"no metric family {family!r} (families: {', '.join(METRIC_TABLES)}, all)")
        clauses, params = [], []
        for column, value in equal.items():
            if not column.isidentifier():
                raise ValueError(f"{column!r} is not a column name")
            clauses.append(f'"{column}" IS NULL' if value is None else f'"{column}" = ?')
            params += [] if value is None else [value]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return self.sql(f"SELECT * FROM metrics.{family}{where}", params)

    def embeddings(self, dataset: str, model: str, lang: str | None = None) -> Embeddings:
        """The image embeddings of ``dataset`` under ``model``, or its text embeddings in ``lang``."""
        directory = (self.root.image_embeddings(dataset, model) if lang is None
                     else self.root.text_embeddings(dataset, model, lang))
        keys, vectors = read_embeddings(directory)
        frame = pl.from_arrow(keys)
        id_column = "sample_id" if lang is None else "text_id"
        return Embeddings(frame[id_column].to_numpy(), vectors, frame.drop(id_column))

    def manifest(self, dataset: str, table: str = "samples") -> pl.DataFrame:
        """A table of a dataset's manifest: ``samples``, ``texts`` or (STS) ``pairs``."""
        return pl.from_arrow(read_manifest_table(self.root.dataset_dir(dataset), table))

    def reports(self) -> dict[str, Path]:
        """Every report page: ``<model>/<lang>``, ``<model>/_multilingual``, ``_comparison``, ``_paper``."""
        base = self.root.root / "reports"
        return {page.parent.relative_to(base).as_posix(): page for page in sorted(base.glob("**/index.html"))}
