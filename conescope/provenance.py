"""What produced an artefact: the commit and content hashes, recorded with every stored output.

The version Dagster compares to decide what is stale is each asset's code version
(``conescope/code_versions.py``: the code the asset runs and the config it reads); the commit is kept
beside it as ``git_commit``, to say which checkout wrote a file, never to decide whether to recompute.
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from pathlib import Path

from conescope import __version__

_REPO = Path(__file__).resolve().parent.parent


@cache
def git_commit() -> str:
    """``<package version>+g<commit>`` (``.dirty`` when the work tree has changes), or the bare
    version when the code is not in a git checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"


def array_digest(*arrays, digest=None):
    """A SHA-256 (``digest``, or a new one) updated with the shape, dtype and bytes of each array: the
    content hash that fitted transforms record and that report caches and memos are keyed on."""
    import numpy as np

    digest = hashlib.sha256() if digest is None else digest
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.shape}{a.dtype.str}".encode())
        digest.update(a.data)
    return digest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def table_sha256(*tables) -> str:
    """Content hash of Arrow tables (data and schema, not metadata), stable across writes."""
    import pyarrow as pa

    digest = hashlib.sha256()
    for table in tables:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
            writer.write_table(table.replace_schema_metadata(None).combine_chunks())
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()


# Columns of a metric row that say when and by which code it was computed, not what was measured.
ROW_PROVENANCE_COLUMNS = ("computed_at", "code_version")


def rows_sha256(*tables) -> str:
    """Content hash of metric rows (Arrow tables), less their provenance columns: the data version of
    a metric table's partition, equal for a rerun that measures the same values."""
    return table_sha256(*(t.drop_columns([c for c in ROW_PROVENANCE_COLUMNS if c in t.column_names]) for t in tables))


def params_sha256(named: dict[str, dict]) -> str:
    """Content hash of fitted parameters (``{file name: Transform.to_dict()}``), less each
    transform's ``provenance`` entry (it holds the fitting time): the data version of a transforms
    partition, equal for a refit that finds the same parameters."""
    import numpy as np

    digest = hashlib.sha256()
    for name in sorted(named):
        digest.update(f"{name}\n".encode())
        for key, value in sorted(named[name].items()):
            if key == "provenance":
                continue
            digest.update(f"{key}=".encode())
            if isinstance(value, np.ndarray):
                array_digest(value, digest=digest)
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()
