"""What produced an artefact: code version and content hashes, recorded with every stored output."""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from pathlib import Path

from conescope import __version__

_REPO = Path(__file__).resolve().parent.parent


@cache
def code_version() -> str:
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
