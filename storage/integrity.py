"""Verification of stored Parquet files: is what the data root holds what its writer wrote?

A partition directory of embeddings (docs/storage.md, "Resumable embedding partitions") carries a
part list, ``_parts.json``, written by the resumable writer beside its parts and swapped in with them:
for each part its file name, rows, size, modification time, the manifest positions it covers, the
samples rejected there and how many of its rows held NaN or inf when written. A part is *damaged*
when it is missing, unlisted, has no readable Parquet footer (truncated, overwritten), holds another
row count than its writer recorded or, when its size or modification time changed since it was
written, holds more non-finite rows than its writer stored (the values were rewritten). The cheap
checks (a stat and the footer, well under a millisecond per part) run on every verification; the
column scan only where the file changed. A partition written before part lists were kept is checked
by its footers only.

Manifest tables and other Parquet files are checked by their footers (:func:`verify_files`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PART_LIST = "_parts.json"
PART_GLOB = "part-*.parquet"


class DamagedFile(ValueError):
    """A stored Parquet file could not be read; the message names it."""


def read_table(path: Path, columns: list[str] | None = None, what: str = "file") -> pa.Table:
    """``pq.read_table`` whose error names the file (pyarrow's says "No magic bytes found" only)."""
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise DamagedFile(f"{path}: damaged {what} ({_first_line(exc)}); conescope materialize finds it and "
                          f"writes it again") from exc


@dataclass(frozen=True)
class Damage:
    """One damaged file: its path, why it is damaged and its index in the part list (None when the
    file is not in it)."""

    path: Path
    reason: str
    part: int | None = None


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def file_record(path: Path, rows: int, nonfinite: int) -> dict:
    """What the part list records of one part file, once it has its final name."""
    st = path.stat()
    return {"file": path.name, "rows": rows, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "nonfinite": nonfinite}


def write_part_list(directory: Path, key: str, vector: str, parts: list[dict], rejected: list[dict]) -> None:
    """``parts``: one record per part file (:func:`file_record` plus the positions ``first``, ``last``
    and its ``rejects``), in order; ``rejected``: the committed parts that held only rejects; ``key``
    names the writer's staging (the resume fingerprint) so that a later run of the same fingerprint
    may keep the intact parts."""
    body = {"key": key, "vector": vector, "parts": parts, "rejected": rejected}
    tmp = directory / f"{PART_LIST}.tmp"
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, directory / PART_LIST)


def read_part_list(directory: Path) -> dict | None:
    """The part list of a partition directory, or None (none written, or unreadable: then the
    partition is checked as one written before part lists were kept)."""
    try:
        body = json.loads((directory / PART_LIST).read_text())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and isinstance(body.get("parts"), list) else None


def nonfinite_rows(path: Path, vector: str) -> tuple[int, int | None]:
    """(rows of ``path`` whose ``vector`` holds a NaN or inf, the first such row), one row group at
    a time over the flat float values of the fixed-size list column."""
    bad, first, offset = 0, None, 0
    pf = pq.ParquetFile(path)
    for group in range(pf.num_row_groups):
        column = pf.read_row_group(group, columns=[vector]).column(vector).combine_chunks()
        n = len(column)
        if n:
            values = column.flatten().to_numpy(zero_copy_only=False).reshape(n, -1)
            rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
            if len(rows) and first is None:
                first = offset + int(rows[0])
            bad += len(rows)
        offset += n
    return bad, first


def _footer(path: Path) -> tuple[pq.FileMetaData | None, str | None]:
    try:
        return pq.read_metadata(path), None
    except (OSError, pa.ArrowException) as exc:
        return None, _first_line(exc)


VALUE_SCANS = ("changed", "all", "none")


def verify_parts(directory: Path, values: str = "changed") -> list[Damage]:
    """The damaged parts of one partition directory (empty when intact or absent). ``values``: which
    parts have their values scanned for NaN and inf the writer did not store: those whose size or
    modification time changed since written (``changed``), ``all``, or ``none`` (the files only)."""
    if values not in VALUE_SCANS:
        raise ValueError(f"values: one of {', '.join(VALUE_SCANS)}, got {values!r}")
    files = sorted(directory.glob(PART_GLOB)) if directory.is_dir() else []
    listed = read_part_list(directory)
    damages: list[Damage] = []
    if listed is None:
        for f in files:
            _, error = _footer(f)
            if error:
                damages.append(Damage(f, f"unreadable: {error}"))
        return damages
    index = {rec["file"]: i for i, rec in enumerate(listed["parts"])}
    present = {f.name for f in files}
    damages += [Damage(directory / rec["file"], "missing", i) for i, rec in enumerate(listed["parts"])
                if rec["file"] not in present]
    for f in files:
        i = index.get(f.name)
        if i is None:
            damages.append(Damage(f, f"not in the partition's part list ({PART_LIST}): written by something else"))
            continue
        rec = listed["parts"][i]
        size = f.stat().st_size
        meta, error = _footer(f)
        if error:
            truncated = f"truncated to {size} of {rec['bytes']} bytes: " if size < rec["bytes"] else ""
            damages.append(Damage(f, f"{truncated}no readable Parquet footer ({error})", i))
            continue
        if meta.num_rows != rec["rows"]:
            damages.append(Damage(f, f"{meta.num_rows} rows where its writer wrote {rec['rows']}", i))
            continue
        st = f.stat()
        changed = (st.st_size, st.st_mtime_ns) != (rec["bytes"], rec["mtime_ns"])
        if values == "all" or (values == "changed" and changed):
            try:
                bad, _ = nonfinite_rows(f, listed.get("vector", "embedding"))
            except (OSError, pa.ArrowException, KeyError) as exc:
                damages.append(Damage(f, f"unreadable values: {_first_line(exc)}", i))
                continue
            if bad > rec.get("nonfinite", 0):
                damages.append(Damage(f, f"{bad} rows with NaN or inf where its writer stored "
                                         f"{rec.get('nonfinite', 0)}: its values were overwritten", i))
    return damages


def verify_files(paths: list[Path]) -> list[Damage]:
    """The Parquet files of ``paths`` that have no readable footer (manifest tables, lake files)."""
    damages = []
    for path in paths:
        _, error = _footer(path)
        if error:
            damages.append(Damage(path, f"unreadable: {error}"))
    return damages


def part_of_rows(directory: Path, rows: list[int]) -> list[str]:
    """The part file holding each row of a partition read whole (the parts in name order)."""
    files = sorted(directory.glob(PART_GLOB))
    ends = np.cumsum([pq.read_metadata(f).num_rows for f in files])
    return [files[int(np.searchsorted(ends, r, side="right"))].name for r in rows]
