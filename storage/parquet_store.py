"""Parquet persistence for manifests and embeddings, in the layout of the storage contract (docs/storage.md).

Every directory is written under the data root's scratch folder and renamed into place only when
complete, so a reader never sees a half-written partition and a failed write leaves the previous
version untouched. Provenance goes into the Parquet file metadata under ``conescope.provenance``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conescope.file_lock import try_lock
from storage.integrity import read_table

PROVENANCE_KEY = b"conescope.provenance"
# Rows per row group of manifest tables: a decoding worker holds one row group of encoded images.
MANIFEST_ROW_GROUP = 256


_STAGED = re.compile(r"^(new|old)-(?P<slug>.+)-(?P<uid>[0-9a-f]{32})$")


def _slug(target: Path, scratch: Path) -> str:
    try:
        rel = target.resolve().relative_to(scratch.resolve().parent)
    except ValueError:
        rel = target.resolve()
    return re.sub(r"[^A-Za-z0-9=._-]+", "__", str(rel)).strip("_")


def remove_stale_staging(target: Path, scratch: Path) -> list[Path]:
    """Remove the staging and retired directories of ``target`` left by writers that died (killed
    while writing, or between the swap and the clean-up); a live writer's staging is kept (it holds
    the lock beside it). Returns what was removed."""
    slug = _slug(target, scratch)
    removed = []
    for path in sorted(scratch.glob("*-*")) if scratch.is_dir() else []:
        match = _STAGED.match(path.name)
        if not path.is_dir() or match is None or match["slug"] != slug:
            continue
        lock = path.with_name(path.name + ".lock")
        # the OS drops a writer's lock when it dies: a lock that can be taken marks a dead writer
        fd = try_lock(lock) if path.name.startswith("new-") else None
        if path.name.startswith("new-") and fd is None:
            continue  # its writer is alive
        shutil.rmtree(path, ignore_errors=True)
        lock.unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)
        removed.append(path)
    return removed


@contextmanager
def atomic_directory(target: Path, scratch: Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``target`` whole, on error it is
    removed and ``target`` is left as it was. Staging is named after the target and locked while
    written; once ``target`` is in place, staging of the same target left by dead writers is removed."""
    scratch.mkdir(parents=True, exist_ok=True)
    slug = _slug(target, scratch)
    uid = uuid.uuid4().hex
    staging = scratch / f"new-{slug}-{uid}"
    lock = scratch / f"new-{slug}-{uid}.lock"
    fd = try_lock(lock)
    staging.mkdir()
    try:
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        target.parent.mkdir(parents=True, exist_ok=True)
        retired = scratch / f"old-{slug}-{uid}"
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        lock.unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)
    remove_stale_staging(target, scratch)


def _with_provenance(schema: pa.Schema, provenance: dict) -> pa.Schema:
    return schema.with_metadata({PROVENANCE_KEY: json.dumps(provenance, sort_keys=True).encode()})


def read_provenance(path: Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[PROVENANCE_KEY]) if PROVENANCE_KEY in meta else {}


# --- manifests -----------------------------------------------------------------------------------

def write_manifest(directory: Path, scratch: Path, tables: dict[str, pa.Table], provenance: dict) -> None:
    """Write each table as ``<name>.parquet`` into ``directory``, atomically as a whole."""
    with atomic_directory(directory, scratch) as staging:
        for name, table in tables.items():
            pq.write_table(table.replace_schema_metadata(_with_provenance(table.schema, provenance).metadata),
                           staging / f"{name}.parquet", row_group_size=MANIFEST_ROW_GROUP)


def read_manifest_table(directory: Path, name: str, columns: list[str] | None = None) -> pa.Table:
    path = directory / f"{name}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest table missing; materialize the dataset asset first")
    return read_table(path, columns, "manifest table")


class ParquetColumn(Sequence):
    """Random access to one column of a Parquet file that reads one row group at a time and keeps
    the last one, so that a reader walking the rows in order (a decoding worker) holds one row group
    of images in memory, not the dataset. Each process opens its own file handle. Where the column is
    null, the value of ``fallback`` (another column, e.g. ``image_path`` beside ``image``) is given."""

    def __init__(self, path: Path, column: str, fallback: str | None = None):
        self.path, self.column = Path(path), column
        meta = pq.read_metadata(self.path)
        self.columns = [column] + ([fallback] if fallback and fallback in meta.schema.names else [])
        if column not in meta.schema.names:
            raise KeyError(f"{self.path}: no column {column!r} (columns: {', '.join(meta.schema.names)})")
        self._starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        self._pid, self._file, self._group, self._values = -1, None, -1, None

    def __getstate__(self) -> dict:
        # Workers started with spawn or forkserver receive a pickled copy: no open file, no cache.
        return {**self.__dict__, "_pid": -1, "_file": None, "_group": -1, "_values": None}

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: row {i} out of range (0..{len(self) - 1})")
        group = int(np.searchsorted(self._starts, i, side="right")) - 1
        if group != self._group or self._pid != os.getpid():
            if self._pid != os.getpid():
                self._pid, self._file = os.getpid(), pq.ParquetFile(self.path)
            self._group = group
            table = self._file.read_row_group(group, columns=self.columns)
            self._values = [table.column(c).combine_chunks() for c in self.columns]
        k = i - int(self._starts[group])
        for values in self._values:
            value = values[k].as_py()
            if value is not None:
                return value
        return None


# --- embeddings ----------------------------------------------------------------------------------

def embedding_schema(dim: int, extra: list[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema([*extra, ("embedding", pa.list_(pa.float32(), dim)), ("norm", pa.float32())])


IMAGE_KEY_COLUMNS: list[tuple[str, pa.DataType]] = [("sample_id", pa.string())]
TEXT_KEY_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("text_id", pa.string()), ("sample_id", pa.string()), ("label", pa.int32()), ("text", pa.string()),
]


def write_embeddings(directory: Path, scratch: Path, key_columns: list[tuple[str, pa.DataType]],
                     batches: Iterable[tuple[dict[str, list], np.ndarray]], provenance: dict) -> int:
    """Stream ``(keys, embeddings)`` batches into ``directory/part-00000.parquet``, one row group per
    batch, and swap the directory in atomically. Returns the number of rows written."""
    writer: pq.ParquetWriter | None = None
    rows = 0
    with atomic_directory(directory, scratch) as staging:
        try:
            for keys, emb in batches:
                emb = np.ascontiguousarray(emb, dtype=np.float32)
                if writer is None:
                    schema = _with_provenance(embedding_schema(emb.shape[1], key_columns),
                                              {**provenance, "dim": emb.shape[1]})
                    writer = pq.ParquetWriter(staging / "part-00000.parquet", schema)
                flat = pa.array(emb.reshape(-1), type=pa.float32())
                columns = [pa.array(keys[name], type=typ) for name, typ in key_columns]
                columns += [pa.FixedSizeListArray.from_arrays(flat, emb.shape[1]),
                            pa.array(np.linalg.norm(emb, axis=1).astype(np.float32))]
                writer.write_table(pa.Table.from_arrays(columns, schema=writer.schema))
                rows += emb.shape[0]
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"{directory}: no embeddings were produced (every sample rejected or none given)")
    return rows


def read_embeddings(directory: Path, columns: list[str] | None = None,
                    vector: str = "embedding") -> tuple[pa.Table, np.ndarray]:
    """The key columns and the (n, d) float32 matrix (column ``vector``) of one partition directory."""
    files = sorted(directory.glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{directory}: no embedding files; materialize the embedding asset first")
    wanted = None if columns is None else [*columns, vector]
    table = pa.concat_tables([read_table(f, wanted, "embedding part") for f in files])
    emb_col = table.column(vector).combine_chunks()
    dim = emb_col.type.list_size
    matrix = emb_col.values.to_numpy(zero_copy_only=True).reshape(-1, dim)
    return table.drop_columns([vector]), matrix
