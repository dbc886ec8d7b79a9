"""The embedding assets on the engine: a failed step resumes, progress reaches the run log, the
throughput and device reach the metadata, stored text-layer states feed metrics/layers."""

import copy
import shutil

import dagster as dg
import numpy as np
import pytest
import yaml

import assets.embeddings as embedding_assets
from conescope import embedding
from conescope.metrics.layers import layer_self_similarity
from conescope.model_kinds import open_clip
from conescope.profile import load_profile
from pipelines.definitions import build_definitions
from pipelines.jobs import DATASETS_JOB, IMAGE_JOB, MODEL_LANG_JOB
from pipelines.partitions import model_lang_key
from storage.embedding_sets import load_text_set
from storage.parquet_store import read_embeddings
from storage.paths import DataRoot
from tests.conftest import TINY_PROFILE, crash_after

MODEL = "tiny.random"
EN = model_lang_key(MODEL, "en")


def _defs(tmp_path, name: str, **embedding):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["embedding"].update({"part_rows": 5, "text_layers": True, "progress_every_s": 0.001, **embedding})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    root = tmp_path / name
    defs = build_definitions(load_profile(str(path)), str(root))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def(DATASETS_JOB).execute_in_process(instance=instance).success
    return defs, instance, DataRoot(root)


def _run(defs, instance, job, partition, key):
    return defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=partition,
                                                        asset_selection=[dg.AssetKey.from_user_string(key)],
                                                        raise_on_error=False)


def _metadata(result, key):
    mat = result.asset_materializations_for_node(key.replace("/", "__"))[0]
    return {k: v.value for k, v in mat.metadata.items()}


def test_a_failed_image_step_resumes_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    defs, instance, root = _defs(tmp_path, "clean")
    assert _run(defs, instance, IMAGE_JOB, MODEL, "embeddings/shapes_image").success
    clean_keys, clean = read_embeddings(root.image_embeddings("shapes", MODEL))

    defs, instance, root = _defs(tmp_path, "crashed")
    real = embedding_assets.engine.embed_images

    monkeypatch.setattr(embedding_assets.engine, "embed_images", crash_after(real, 2))
    assert not _run(defs, instance, IMAGE_JOB, MODEL, "embeddings/shapes_image").success
    monkeypatch.setattr(embedding_assets.engine, "embed_images", real)
    result = _run(defs, instance, IMAGE_JOB, MODEL, "embeddings/shapes_image")
    assert result.success
    meta = _metadata(result, "embeddings/shapes_image")
    assert meta["resumed_rows"] == 10 and meta["rows"] == 12  # two parts of 5 were committed
    assert meta["device"] == "cpu" and meta["precision"] == "fp32" and meta["images_per_s"] > 0
    keys, emb = read_embeddings(root.image_embeddings("shapes", MODEL))
    assert keys.column("sample_id").to_pylist() == clean_keys.column("sample_id").to_pylist()
    np.testing.assert_array_equal(emb, clean)
    progress = [e.user_message for e in instance.all_logs(result.run_id) if "images, tiny.random" in e.user_message]
    assert progress and progress[-1].startswith("shapes images, tiny.random: 12/12 (")
    assert "10 from an earlier run" in progress[-1]


def test_metrics_layers_reads_the_stored_states_and_loads_no_model(tmp_path, monkeypatch):
    defs, instance, root = _defs(tmp_path, "layers")
    assert _run(defs, instance, IMAGE_JOB, MODEL, "embeddings/shapes_image").success
    assert _run(defs, instance, IMAGE_JOB, MODEL, "embeddings/digits_image").success
    for ds in ("shapes", "digits"):
        assert _run(defs, instance, MODEL_LANG_JOB, EN, f"embeddings/{ds}_text").success
        assert any(root.text_layers(ds, MODEL, "en").glob("part-*.parquet"))

    def no_model(*_a, **_k):
        raise AssertionError("only the embedding step loads a model")

    for module, name in ((embedding_assets, "cached_model"), (open_clip, "load_model"),
                         (embedding, "text_layer_states")):
        monkeypatch.setattr(module, name, no_model)
    stored = _run(defs, instance, MODEL_LANG_JOB, EN, "metrics/layers")
    assert stored.success
    monkeypatch.undo()
    values = {k: v for k, v in _metadata(stored, "metrics/layers").items() if "self_similarity" in k}
    # oracle: the states recomputed from the model, the self-similarity of each
    tiny = open_clip.load_model("conescope-tiny", None, seed=0, zero_bias=False, device="cpu")
    expected = {}
    for ds in ("shapes", "digits"):
        texts = load_text_set(root, ds, MODEL, "en").texts
        for i, value in enumerate(layer_self_similarity(embedding.text_layer_states(tiny, texts, batch_size=5))):
            expected[f"{ds}/text/self_similarity/{i}"] = round(value, 4)
    assert len(values) == 6 and values == pytest.approx(expected, abs=2e-4)
    # without stored states (embedding.text_layers: false) there is nothing per layer to measure
    for ds in ("shapes", "digits"):
        shutil.rmtree(root.text_layers(ds, MODEL, "en"))
    without = _run(defs, instance, MODEL_LANG_JOB, EN, "metrics/layers")
    assert without.success
    assert not any("self_similarity" in k for k in _metadata(without, "metrics/layers"))


def test_text_layers_off_removes_stale_states(tmp_path):
    defs, instance, root = _defs(tmp_path, "off")
    assert _run(defs, instance, MODEL_LANG_JOB, EN, "embeddings/shapes_text").success
    assert root.text_layers("shapes", MODEL, "en").exists()
    defs_off, _, _ = _defs(tmp_path, "off", text_layers=False)
    assert _run(defs_off, instance, MODEL_LANG_JOB, EN, "embeddings/shapes_text").success
    assert not root.text_layers("shapes", MODEL, "en").exists()


@pytest.mark.parametrize(("key", "value", "match"), [
    ("batch_size", "big", "embedding.batch_size: expected an integer"),
    ("workers", -1, "embedding.workers: must be >= 0"),
    ("text_layers", "yes", "embedding.text_layers: expected true or false"),
    ("progress_every_s", 0, "embedding.progress_every_s: expected a positive number"),
    ("threads", 2, "embedding.threads: unknown key"),
])
def test_embedding_section_is_validated(tmp_path, key, value, match):
    from conescope.profile import ProfileError, parse_profile

    raw = copy.deepcopy(TINY_PROFILE)
    raw["embedding"][key] = value
    with pytest.raises(ProfileError, match=match):
        parse_profile(raw, "tiny.yaml")


def test_auto_settings_parse():
    from conescope.profile import parse_profile

    raw = copy.deepcopy(TINY_PROFILE)
    raw["embedding"].update({"batch_size": "auto", "workers": "auto"})
    spec = parse_profile(raw, "tiny.yaml").embedding
    assert spec.batch_auto and spec.workers is None
    settings = embedding_assets.engine_settings(spec)
    assert settings.batch_size is None and settings.resolved_batch_size("cuda") == 256
