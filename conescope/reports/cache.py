"""Slow report results (t-SNE maps) cached on disk by a hash of their input data.

The key is the SHA-256 of the input arrays (shape, dtype, bytes) and of the settings that shape the
result, so an unchanged partition reuses its maps and a changed embedding file or setting recomputes
them. Entries are ``.npz`` files written to a temporary name and renamed, so a crash never leaves a
half-written entry that a later render would trust.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from conescope.provenance import array_digest


def data_key(*arrays: np.ndarray, **settings) -> str:
    digest = array_digest(*arrays)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class ArrayCache:
    """``get_or_compute(name, key, compute)``: the arrays ``compute()`` returns, from disk when an
    entry of that name and key exists. ``directory=None`` disables caching. ``hits``/``misses``
    count lookups (the tests check that a second render recomputes nothing)."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, name: str, key: str,
                       compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        path = None if self.directory is None else self.directory / f"{name}-{key[:32]}.npz"
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as npz:
                    out = {k: npz[k] for k in npz.files}
                self.hits += 1
                return out
            except (OSError, ValueError):  # unreadable entry (disk trouble): recompute and overwrite it
                pass
        self.misses += 1
        out = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as fh:
                np.savez(fh, **out)
            os.replace(tmp, path)
        return out
