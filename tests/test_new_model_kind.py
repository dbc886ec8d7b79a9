"""A model kind added as one module: ``tests/random_projection_kind.py``, registered at test time, goes
through every asset of a tiny profile (embeddings, every metric family, transforms, checks, reports)
with no other file knowing it."""

from __future__ import annotations

import copy
import importlib
import sys

import numpy as np
import pytest

from conescope import code_versions, model_specs
from conescope.metric_families import METRIC_TABLES, TRANSFORM_TABLES
from conescope.profile import ProfileError, parse_profile
from storage.parquet_store import read_embeddings, read_manifest_table, read_provenance
from storage.paths import DataRoot
from storage.warehouse import Warehouse
from tests.conftest import TINY_PROFILE, materialize_profile
from tests.test_checks import run_checks

MODULE = "tests.random_projection_kind"
PROFILE = {**TINY_PROFILE, "name": "projection",
           "models": {"proj": {"kind": "random_projection", "dim": 16, "width": 8, "seed": 3}},
           "embedding": {**TINY_PROFILE["embedding"], "text_layers": True},
           "metrics": {"bootstrap": 20, "folds": 2},
           "transforms": {**TINY_PROFILE["transforms"], "kinds": ["centering", "procrustes", "gap_shift"]}}


@pytest.fixture(scope="module")
def kind():
    """The kind's module imported, which registers it; the registry is restored after the module's
    tests, so no other test sees the kind. The project's own kinds are registered first, into the real
    registry: registered while it is patched, they would be lost with the patch for the tests after."""
    from conescope.model_kinds import model_kinds

    model_kinds()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_specs._KINDS, "kinds", model_specs.registered_model_kinds())
        sys.modules.pop(MODULE, None)
        yield importlib.import_module(MODULE)
        sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def projected(kind, tmp_path_factory):
    return materialize_profile(tmp_path_factory.mktemp("projection"), PROFILE, name="projection")


def _query(root: DataRoot, sql: str, params=None) -> list:
    with Warehouse(root.warehouse).connect(read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_the_profile_validates_the_kinds_keys(kind):
    spec = parse_profile(PROFILE, "p.yaml").models["proj"]
    assert isinstance(spec, kind.RandomProjectionModel) and spec.has_image_tower and spec.has_text_layers
    for entry, message in [
        ({"kind": "random_projection", "dims": 4}, "p.yaml: models.proj.dims: unknown key (allowed: dim, kind, seed, "
                                                    "width)"),
        ({"kind": "random_projection", "dim": 1}, "p.yaml: models.proj.dim: must be >= 2, got 1"),
        ({"kind": "projection"}, "p.yaml: models.proj.kind: 'projection' is not one of open_clip, "
                                 "open_clip_trained, sentence_transformers, random_projection"),
    ]:
        raw = copy.deepcopy(PROFILE)
        raw["models"]["proj"] = entry
        with pytest.raises(ProfileError) as info:
            parse_profile(raw, "p.yaml")
        assert str(info.value) == message


def test_embeddings_are_the_kinds_own(kind, projected):
    profile, root, _, _ = projected
    spec = profile.models["proj"]
    loaded = spec.load("cpu", "fp32")
    for ds in profile.datasets:
        keys, emb = read_embeddings(root.image_embeddings(ds, "proj"))
        assert emb.shape == (len(read_manifest_table(root.dataset_dir(ds), "samples", ["sample_id"])), 16)
        prov = read_provenance(next(root.image_embeddings(ds, "proj").glob("part-*.parquet")))
        assert prov["kind"] == "random_projection" and prov["preprocessing"] == "Thumbnail(8)"
        assert prov["code_version"] == code_versions.embedding_code(spec)
        texts, text_emb = read_embeddings(root.text_embeddings(ds, "proj", "en"))
        words = kind.tokenize(texts.column("text").to_pylist())
        expected, _ = loaded.text_encoder(False)(words)
        np.testing.assert_allclose(text_emb, expected, rtol=1e-5, atol=1e-6)
    # the kind's module is part of the embedding code, another kind's is not
    modules = code_versions.closure(tuple(sorted({*code_versions.EMBEDDING, code_versions.model_kind(spec)})))
    assert MODULE in modules and "conescope.model_kinds.open_clip" not in modules


def test_every_metric_family_has_rows(projected):
    _, root, _, _ = projected
    for table in METRIC_TABLES:
        raw = _query(root, f"SELECT count(*) FROM metrics.{table} WHERE model = 'proj' AND transform = 'none'")
        assert raw[0][0] > 0, table
    for table in TRANSFORM_TABLES:
        fitted = _query(root, f"SELECT count(*) FROM metrics.{table} WHERE model = 'proj' AND transform <> 'none'")
        assert fitted[0][0] > 0, table
    layers = _query(root, "SELECT DISTINCT layer FROM metrics.layers WHERE model = 'proj' AND layer IS NOT NULL "
                          "ORDER BY layer")
    assert [r[0] for r in layers] == [0, 1]  # the kind's two text layers


@pytest.mark.parametrize("partition", [None, "proj", "en|proj", "fr|proj"])
def test_checks_pass(projected, partition):
    _, _, defs, _ = projected
    found = run_checks(defs, partition)
    assert found and not {k: e.description for k, e in found.items() if not e.passed}
    dimension = [e for (asset, check), e in found.items() if check == "dimension"]
    assert all("the entry's dim" in e.description for e in dimension)


def test_reports_render(projected):
    profile, root, _, _ = projected
    for lang in profile.languages:
        page = (root.report_dir("proj", lang) / "index.html").read_text()
        assert "random_projection" in page and "shapes: SVD projection, raw" in page  # describe() of the kind
    assert "shapes: parallel captions" in (root.multilingual_report_dir("proj") / "index.html").read_text()
    assert "proj" in (root.summary_report_dir("comparison") / "index.html").read_text()
    paper = (root.summary_report_dir("paper") / "index.html").read_text()
    assert all(f"Table {n}." in paper for n in range(1, 8))
