"""The checkpoints of the models whose weights the pipeline trains (``training/checkpoint`` [model],
assets/training.py), under the data root:

- ``checkpoints/model=<m>/model.safetensors``: the float32 tensors of the model's state dict (the
  safetensors format: no pickle, loads without running code), with the provenance JSON in the file's
  metadata (key ``conescope.provenance``), so the tensors and what made them can never be separated;
- ``checkpoints/model=<m>/provenance.json``: the same provenance, readable without torch.

The directory is written whole under the data root's ``tmp/`` and renamed into place
(``storage.parquet_store.atomic_directory``): a run killed while writing (or while training) leaves the
previous checkpoint, or none, never half of one. The data version of a checkpoint is the SHA-256 of its
tensors (:func:`weights_sha256`: names, shapes, dtypes and bytes in name order), recorded in the
provenance and checked again whenever the tensors are read (:func:`read_state`).

A module of its own (not ``storage/paths.py``), so that the embedding steps that read a checkpoint
depend on this module alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from conescope.model_specs import Weights
from conescope.provenance import array_digest
from storage.integrity import Damage
from storage.parquet_store import atomic_directory
from storage.paths import DataRoot

CHECKPOINT_FILE = "model.safetensors"
PROVENANCE_FILE = "provenance.json"
PROVENANCE_KEY = "conescope.provenance"


def checkpoint_dir(paths: DataRoot, model: str) -> Path:
    return paths.root / "checkpoints" / f"model={model}"


def checkpoint_file(paths: DataRoot, model: str) -> Path:
    return checkpoint_dir(paths, model) / CHECKPOINT_FILE


def weights_sha256(state: Mapping[str, Any]) -> str:
    """Content hash of a state dict of float32 tensors: each name, then its shape, dtype and bytes
    (``conescope.provenance.array_digest``), in name order; the same weights hash the same whatever
    file they were read from."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode() + b"\0")
        array_digest(state[name].detach().cpu().contiguous().numpy(), digest=digest)
    return digest.hexdigest()


def write_checkpoint(paths: DataRoot, model: str, state: Mapping[str, Any], provenance: dict) -> Path:
    """Write ``state`` (float32 tensors) with ``provenance`` as the checkpoint of ``model``, atomically
    (module docstring); returns the checkpoint file."""
    from safetensors.torch import save_file

    text = json.dumps(provenance, sort_keys=True)
    with atomic_directory(checkpoint_dir(paths, model), paths.scratch) as staging:
        save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(staging / CHECKPOINT_FILE),
                  metadata={PROVENANCE_KEY: text})
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return checkpoint_file(paths, model)


def stored_provenance(paths: DataRoot, model: str) -> dict | None:
    """The provenance recorded in the checkpoint file of ``model``; None when there is none or the
    file cannot be read as one."""
    from safetensors import safe_open

    file = checkpoint_file(paths, model)
    if not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as handle:
            text = (handle.metadata() or {}).get(PROVENANCE_KEY)
    except Exception:  # noqa: BLE001 - safetensors raises its own error types for a damaged header
        return None
    return json.loads(text) if text else None


def read_state(file: Path, sha256: str) -> dict[str, Any]:
    """The tensors of a checkpoint file, checked against the content hash they were written with."""
    from safetensors.torch import load_file

    state = load_file(str(file))
    found = weights_sha256(state)
    if found != sha256:
        raise ValueError(f"{file}: its tensors hash to {found[:16]}, not {sha256[:16]} as when written (damaged or "
                         f"replaced); materialize training/checkpoint again")
    return state


def stored_weights(paths: DataRoot, model: str) -> Weights:
    """The stored trained weights of ``model``, as its loader takes them (read when it loads them)."""
    provenance = stored_provenance(paths, model)
    if provenance is None:
        raise FileNotFoundError(f"{model}: no checkpoint at {checkpoint_file(paths, model)}; its weights are "
                                f"trained by the pipeline: materialize training/checkpoint [{model}] first")
    sha256 = provenance["weights_sha256"]
    return Weights(sha256, partial(read_state, checkpoint_file(paths, model), sha256))


def verify_checkpoint(paths: DataRoot, model: str) -> Damage | None:
    """The damage of the stored checkpoint of ``model``: a file without readable provenance, or tensors
    that no longer hash to what was written; None when it is whole or there is none (missing is for
    Dagster to say)."""
    file = checkpoint_file(paths, model)
    if not file.is_file():
        return None
    provenance = stored_provenance(paths, model)
    if provenance is None or "weights_sha256" not in provenance:
        return Damage(file, "no readable safetensors header with its provenance")
    try:
        read_state(file, provenance["weights_sha256"])
    except Exception as exc:  # noqa: BLE001 - a damaged body raises safetensors' own errors
        return Damage(file, str(exc).split(";")[0].removeprefix(f"{file}: "))
    return None
