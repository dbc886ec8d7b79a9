"""Streaming, resumable writes of one embedding partition (docs/storage.md, "Resumable embedding
partitions": bounded-memory row groups, atomic, resumable).

A run writes into a staging directory under the data root's scratch folder, named after the target
partition and a fingerprint of everything the rows depend on (model, weights, dataset content,
preprocessing, precision, code version). Each batch is one row group of the open part file; a part
is *committed* every ``part_rows`` rows (or ``commit_s`` seconds): its files are closed and renamed
into their final names, then a ``commit-<seq>.json`` marker, written last, records its row count,
the manifest positions it covers and the samples rejected there. Only parts with a marker count.

If the run dies (exception, kill), the committed parts stay. The next run with the same fingerprint
finds them, skips the samples they hold or rejected, embeds the rest and appends new parts. Since a
run processes the pending samples in manifest order, committed parts cover ascending position
ranges, so concatenating the parts by position gives the rows of an uninterrupted run, in manifest
order, without duplicates. A different fingerprint (new weights, new dataset, new code) starts from
scratch. When every sample is done, each stream's parts are renamed into a fresh directory that
replaces the partition directory in one ``os.replace``; the staging directory is removed.

A partition may carry extra streams (the text-tower layer states) committed with the same parts.

Each stream's directory gets a part list (``_parts.json``, storage/integrity.py): the commit
markers of its parts with each file's rows, size and modification time, so that a damaged part
(truncated, overwritten) is found without reading the data. A later run of the same fingerprint
whose partition is damaged starts from the intact parts (hard links into its staging, as if they
had been committed by an interrupted run) and embeds again only the rows of the damaged ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conescope.file_lock import try_lock
from storage.integrity import file_record, nonfinite_rows, read_part_list, verify_parts, write_part_list
from storage.parquet_store import PROVENANCE_KEY, atomic_directory

MAIN = "main"


@dataclass(frozen=True)
class Stream:
    """One output directory of a partition: ``key_columns`` then a vector column and its L2 norm."""

    target: Path
    key_columns: list[tuple[str, pa.DataType]]
    vector: str = "embedding"

    def schema(self, dim: int, provenance: dict) -> pa.Schema:
        schema = pa.schema([*self.key_columns, (self.vector, pa.list_(pa.float32(), dim)), ("norm", pa.float32())])
        return schema.with_metadata({PROVENANCE_KEY: json.dumps({**provenance, "dim": dim}, sort_keys=True).encode()})


def fingerprint(values: dict) -> str:
    """A stable hash of what the rows depend on (order of keys irrelevant)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _link(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:  # another file system, or no hard links: a copy keeps the modification time too
        shutil.copy2(source, dest)


def _slug(target: Path, scratch: Path) -> str:
    try:
        rel = target.resolve().relative_to(scratch.resolve().parent)
    except ValueError:
        rel = target
    return re.sub(r"[^A-Za-z0-9=._-]+", "__", str(rel)).strip("_")


class PartitionAlreadyBeingWritten(RuntimeError):
    pass


class ResumablePartition:
    """Write the streams of one partition; use as a context manager (it holds a lock on its staging
    directory so that two runs never write the same partition at once)."""

    def __init__(self, streams: dict[str, Stream], scratch: Path, provenance: dict, resume_key: dict,
                 part_rows: int = 16384, commit_s: float = 60.0, salvage: bool = True):
        if MAIN not in streams:
            raise ValueError(f"a partition needs a {MAIN!r} stream, got {sorted(streams)}")
        self.streams, self.provenance = streams, provenance
        self.part_rows, self.commit_s, self.salvage = part_rows, commit_s, salvage
        self.base = Path(scratch) / "resume" / _slug(streams[MAIN].target, Path(scratch))
        self.dir = self.base / fingerprint({"target": _slug(streams[MAIN].target, Path(scratch)), **resume_key})
        self._lock_fd: int | None = None
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._seq = 0
        self._part_rows = 0
        self._part_started = 0.0
        self._part_positions: list[int] = []
        self._part_rejects: list[dict] = []
        self._part_nonfinite: dict[str, int] = {}
        self.commits: list[dict] = []  # markers of every committed part, earlier runs included
        self.done_keys: set = set()  # main-stream keys already committed
        self.resumed_rows = 0

    # --- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> ResumablePartition:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = try_lock(self.dir / ".lock")
        if self._lock_fd is None:
            raise PartitionAlreadyBeingWritten(
                f"{self.streams[MAIN].target}: another run is writing this partition (lock {self.dir / '.lock'})")
        self._load_committed()
        return self

    def __exit__(self, *exc) -> None:
        # On error the open part is dropped (its rows are re-embedded next time); committed parts stay.
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load_committed(self) -> None:
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()
        if self.salvage and not any(self.dir.glob("commit-*.json")):
            self._keep_intact_parts()
        self.commits = []
        for marker in sorted(self.dir.glob("commit-*.json")):
            commit = json.loads(marker.read_text())
            # A finalize cut short may have moved some streams' files already: redo those parts.
            if commit["rows"] and not all(self._part(name, commit["seq"]).is_file() for name in self.streams):
                marker.unlink()
                continue
            self.commits.append(commit)
        committed = {c["seq"] for c in self.commits}
        for path in self.dir.glob("*-*.parquet"):  # a part renamed before its marker was written
            if int(path.stem.rsplit("-", 1)[1]) not in committed:
                path.unlink()
        key = self.streams[MAIN].key_columns[0][0]
        for c in self.commits:
            if c["rows"]:
                self.done_keys.update(pq.read_table(self._part(MAIN, c["seq"]), columns=[key]).column(key).to_pylist())
            self.done_keys.update(r["key"] for r in c["rejects"])
        self.resumed_rows = sum(c["rows"] for c in self.commits)
        self._seq = max(committed, default=-1) + 1

    def _keep_intact_parts(self) -> None:
        """Take over the intact parts of the partition in place when it was written with this
        fingerprint (its part lists name this staging) but some part is damaged: each becomes a
        committed part here (a hard link, the partition stays whole until replaced), so only the
        rows of the damaged parts are embedded again. Nothing is taken when any stream lacks a part
        list or the lists disagree."""
        lists = {name: read_part_list(s.target) for name, s in self.streams.items()}
        if any(pl is None or pl.get("key") != self.dir.name for pl in lists.values()):
            return
        n = len(lists[MAIN]["parts"])
        if any(len(pl["parts"]) != n for pl in lists.values()):
            return
        damaged = {d.part for s in self.streams.values() for d in verify_parts(s.target)}
        if not damaged:
            return  # intact: nothing to save work on (the run was asked to embed again)
        seq = 0
        for i, rec in enumerate(lists[MAIN]["parts"]):
            if i in damaged:
                continue
            for name, s in self.streams.items():
                _link(s.target / lists[name]["parts"][i]["file"], self._part(name, seq))
            self._write_marker({"seq": seq, "rows": rec["rows"], "first": rec["first"], "last": rec["last"],
                                "rejects": rec["rejects"],
                                "nonfinite": {name: pl["parts"][i]["nonfinite"] for name, pl in lists.items()}})
            seq += 1
        for rec in lists[MAIN].get("rejected", []):
            self._write_marker({**rec, "seq": seq, "rows": 0})
            seq += 1

    def _write_marker(self, marker: dict) -> None:
        tmp = self.dir / f"commit-{marker['seq']:06d}.tmp"
        tmp.write_text(json.dumps(marker))
        os.replace(tmp, self.dir / f"commit-{marker['seq']:06d}.json")

    @property
    def previous_rejects(self) -> list[dict]:
        return [r for c in self.commits for r in c["rejects"]]

    def _part(self, stream: str, seq: int) -> Path:
        return self.dir / f"{stream}-{seq:06d}.parquet"

    # --- writing ---------------------------------------------------------------------------------
    def reject(self, position: int, key, reason: str) -> None:
        """Record a sample that could not be embedded; committed with the current part."""
        self._part_rejects.append({"position": int(position), "key": key, "reason": reason})
        self._part_positions.append(int(position))

    def write(self, positions: np.ndarray, batches: dict[str, tuple[dict[str, list], np.ndarray]]) -> None:
        """One row group per stream: ``batches[stream] = (key columns, (n, d) matrix)``; ``positions``
        are the manifest positions of the main stream's rows (ascending)."""
        if set(batches) != set(self.streams):
            raise ValueError(f"batch streams {sorted(batches)} differ from the partition's {sorted(self.streams)}")
        if not self._writers:
            self._part_started = time.monotonic()
        for name, (keys, matrix) in batches.items():
            stream = self.streams[name]
            matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            writer = self._writers.get(name)
            if writer is None:
                writer = pq.ParquetWriter(self._part(name, self._seq).with_suffix(".tmp"),
                                          stream.schema(matrix.shape[1], self.provenance))
                self._writers[name] = writer
            columns = [pa.array(keys[col], type=typ) for col, typ in stream.key_columns]
            columns += [pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), type=pa.float32()),
                                                          matrix.shape[1]),
                        pa.array(np.linalg.norm(matrix, axis=1).astype(np.float32))]
            writer.write_table(pa.Table.from_arrays(columns, schema=writer.schema))
            # recorded so that a verification can tell values written later from the model's own
            self._part_nonfinite[name] = self._part_nonfinite.get(name, 0) + \
                int((~np.isfinite(matrix).all(axis=1)).sum())
        self._part_rows += len(positions)
        self._part_positions.extend(int(p) for p in positions)
        if self._part_rows >= self.part_rows or time.monotonic() - self._part_started >= self.commit_s:
            self.commit()

    def commit(self) -> None:
        """Make the open part durable: close and rename its files, then write its marker."""
        if not self._writers and not self._part_rejects:
            return
        for name, writer in self._writers.items():
            writer.close()
            tmp = self._part(name, self._seq).with_suffix(".tmp")
            os.replace(tmp, self._part(name, self._seq))
        marker = {"seq": self._seq, "rows": self._part_rows,
                  "first": min(self._part_positions), "last": max(self._part_positions),
                  "rejects": self._part_rejects, "nonfinite": self._part_nonfinite}
        self._write_marker(marker)
        self.commits.append(marker)
        self._writers, self._seq, self._part_rows = {}, self._seq + 1, 0
        self._part_positions, self._part_rejects, self._part_nonfinite = [], [], {}

    def finalize(self) -> int:
        """Commit the open part, then replace every stream's directory with its parts in manifest
        order; returns the number of main-stream rows. The staging directory is removed."""
        self.commit()
        commits = sorted((c for c in self.commits if c["rows"]), key=lambda c: c["first"])
        for before, after in zip(commits, commits[1:], strict=False):
            if before["last"] >= after["first"]:
                raise RuntimeError(f"{self.dir}: committed parts overlap (positions {before['first']}-"
                                   f"{before['last']} and {after['first']}-{after['last']}); delete this "
                                   f"directory and rerun")
        rows = sum(c["rows"] for c in commits)
        if rows == 0:
            raise ValueError(f"{self.streams[MAIN].target}: no embeddings were produced "
                             f"(every sample rejected or none given)")
        scratch = self.base.parent.parent
        # Extra streams first: the main directory is what downstream assets read.
        rejected = [{k: c[k] for k in ("first", "last", "rejects")} for c in self.commits if not c["rows"]]
        for name in sorted(self.streams, key=lambda s: s == MAIN):
            with atomic_directory(self.streams[name].target, scratch) as staging:
                parts = []
                for out, c in enumerate(commits):
                    path = staging / f"part-{out:05d}.parquet"
                    os.replace(self._part(name, c["seq"]), path)
                    nonfinite = c.get("nonfinite", {}).get(name)
                    if nonfinite is None:  # a part committed by an earlier version of this writer
                        nonfinite = nonfinite_rows(path, self.streams[name].vector)[0]
                    parts.append({**file_record(path, pq.read_metadata(path).num_rows, nonfinite),
                                  "first": c["first"], "last": c["last"], "rejects": c["rejects"]})
                write_part_list(staging, self.dir.name, self.streams[name].vector, parts, rejected)
        self._cleanup()
        return rows

    def _cleanup(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        shutil.rmtree(self.dir, ignore_errors=True)
        # Staging left by runs of other fingerprints (older code, other weights) is obsolete now,
        # unless a run still holds it.
        for other in self.base.glob("*"):
            fd = try_lock(other / ".lock") if other.is_dir() else None
            if fd is not None:
                shutil.rmtree(other, ignore_errors=True)
                os.close(fd)
        with contextlib.suppress(OSError):  # not empty: another run is live
            self.base.rmdir()
            self.base.parent.rmdir()
