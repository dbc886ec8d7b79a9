"""Fitted transforms on disk: ``transforms/<kind>/model=<m>/lang=<l>/<name>--<fit set>.npz``.

One uncompressed ``.npz`` file per fitted variant holds the dict of ``Transform.to_dict()``: arrays
as they are, scalars (str, int, float, bool) as 0-d arrays, the provenance as a JSON string. It is
read back without pickle (``allow_pickle=False``), bit for bit. A partition directory is written
whole under the scratch folder and renamed into place, like the embedding files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from storage.parquet_store import atomic_directory

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def transform_file_name(transform_name: str, fit_set: str) -> str:
    """``whitening_16--shapes.train.npz`` for transform ``whitening_16`` fitted on ``shapes:train``."""
    return f"{_SAFE.sub('.', transform_name)}--{_SAFE.sub('.', fit_set)}.npz"


def write_transform_file(path: Path, d: dict) -> None:
    arrays = {}
    for key, value in d.items():
        if not isinstance(value, np.ndarray | str | int | float | bool):
            raise TypeError(f"{path.name}: {key!r} is a {type(value).__name__}, not an array or a scalar")
        arrays[key] = np.asarray(value)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def read_transform_file(path: Path) -> dict:
    out: dict = {}
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            value = npz[key]
            out[key] = value.item() if value.ndim == 0 else value
    return out


def stored_provenance(d: dict) -> dict:
    """The provenance of a transform as read back (``read_transform_file``): stored as a JSON string."""
    return json.loads(d.get("provenance") or "{}")


def write_transforms(directory: Path, scratch: Path, fitted: dict[str, dict]) -> list[Path]:
    """Replace ``directory`` with one file per entry of ``fitted`` (file name -> ``to_dict()``)."""
    with atomic_directory(directory, scratch) as staging:
        for name, d in fitted.items():
            write_transform_file(staging / name, d)
    return [directory / name for name in fitted]


def read_transforms(directory: Path) -> dict[str, dict]:
    """File name -> dict of every fitted transform of one partition directory."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no fitted transforms; materialize the transforms asset first")
    return {p.name: read_transform_file(p) for p in sorted(directory.glob("*.npz"))}
