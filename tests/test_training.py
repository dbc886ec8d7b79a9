"""A model the pipeline trains (``kind: open_clip_trained``): its profile keys and their errors, the
training itself (seeded and bit-identical, the loss going down), the checkpoint asset (atomic, with its
provenance and loss curve), the embeddings that read it, and the staleness a changed training setting
causes: the trained model's checkpoint and what is downstream of it, never another model's partitions."""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from conescope.datasets import build_dataset
from conescope.profile import ProfileError, parse_profile
from conescope.training import training_pairs
from pipelines.jobs import IMAGE_JOB, TRAIN_JOB
from pipelines.partitions import model_and_lang
from pipelines.refresh import full_plan
from storage import checkpoints
from storage.parquet_store import read_embeddings, read_provenance
from storage.paths import DataRoot
from tests.conftest import TINY_PROFILE
from tests.test_staleness import Root

TRAINED = "tiny.trained"
RANDOM = "tiny.random"
CHECKPOINT = dg.AssetKey(["training", "checkpoint"])
# 60 shapes: 48 training images with an English caption each, three batches of 16 per epoch
PROFILE = {
    "name": "trained", "seed": 3, "languages": ["en"],
    "datasets": {"shapes": {"kind": "shapes", "n": 60, "image_size": 32, "seed": 1}},
    "models": {
        RANDOM: TINY_PROFILE["models"][RANDOM],
        TRAINED: {"kind": "open_clip_trained", "arch": "conescope-tiny", "seed": 0,
                  "train": {"dataset": "shapes", "steps": 20, "batch_size": 16, "warmup_steps": 2}},
    },
    "embedding": TINY_PROFILE["embedding"],
    "report": TINY_PROFILE["report"],
}


def _profile(**train):
    raw = copy.deepcopy(PROFILE)
    raw["models"][TRAINED]["train"].update(train)
    return parse_profile(raw, "trained.yaml")


@pytest.fixture(scope="module")
def pairs():
    manifest = build_dataset("shapes", "shapes", 60, 1, 32, ("en",))
    return training_pairs("shapes", manifest.samples, manifest.texts, ("en",))


# --- profile keys ----------------------------------------------------------------------------------------

def test_the_training_settings_take_the_profile_seed_and_languages_by_default():
    settings = _profile().models[TRAINED].training()
    assert settings.seed == 3 and settings.languages == ("en",)
    assert (settings.steps, settings.batch_size, settings.schedule, settings.learn_temperature) == (20, 16, "cosine",
                                                                                                    True)
    assert _profile(seed=7).models[TRAINED].training().seed == 7
    assert _profile().models[RANDOM].training() is None


@pytest.mark.parametrize(("change", "message"), [
    ({"train": {"dataset": "nope"}}, "models.tiny.trained.train.dataset: 'nope' is not one of the profile's datasets"),
    ({"train": {"dataset": "shapes", "steps": 0}}, "models.tiny.trained.train.steps: must be >= 1, got 0"),
    ({"train": {"dataset": "shapes", "batch_size": 1}}, "models.tiny.trained.train.batch_size: must be >= 2"),
    ({"train": {"dataset": "shapes", "lr": -1.0}}, "models.tiny.trained.train.lr: expected a positive number"),
    ({"train": {"dataset": "shapes", "schedule": "linear"}},
     "models.tiny.trained.train.schedule: 'linear' is not one of cosine, constant"),
    ({"train": {"dataset": "shapes", "steps": 10, "warmup_steps": 10}},
     "models.tiny.trained.train.warmup_steps: must be below steps (10), got 10"),
    ({"train": {"dataset": "shapes", "init_temperature": 0}},
     "models.tiny.trained.train.init_temperature: expected a positive number"),
    ({"train": {"dataset": "shapes", "learn_temperature": "yes"}},
     "models.tiny.trained.train.learn_temperature: expected true or false"),
    ({"train": {"dataset": "shapes", "languages": ["fr"]}},
     "models.tiny.trained.train.languages[0]: 'fr' is not a language of both the profile and 'shapes' (en)"),
    ({"train": {"dataset": "shapes", "epochs": 3}}, "models.tiny.trained.train.epochs: unknown key"),
    ({"train": None}, "models.tiny.trained.train: expected a mapping"),
    ({"pretrained": "openai", "arch": "ViT-B-32"}, "models.tiny.trained.pretrained: a trained model starts from"),
    ({"zero_bias": True}, "models.tiny.trained.zero_bias: zero_bias applies to untrained random towers only"),
])
def test_a_bad_training_setting_is_one_line_naming_its_key(change, message):
    raw = copy.deepcopy(PROFILE)
    raw["models"][TRAINED].update(change)
    with pytest.raises(ProfileError) as err:
        parse_profile(raw, "trained.yaml")
    assert str(err.value).startswith(f"trained.yaml: {message}"), str(err.value)


def test_a_missing_train_section_is_named():
    raw = copy.deepcopy(PROFILE)
    del raw["models"][TRAINED]["train"]
    with pytest.raises(ProfileError, match=r"models\.tiny\.trained\.train: missing required key"):
        parse_profile(raw, "trained.yaml")


def test_a_dataset_without_captions_cannot_be_trained_on():
    manifest = build_dataset("digits", "digits", 24, 2, 0, ("en",))  # class prompts only
    with pytest.raises(ValueError, match="'digits' has no training image with a caption in en"):
        training_pairs("digits", manifest.samples, manifest.texts, ("en",))


def test_the_plan_trains_before_the_image_layer():
    plan = [(run.job, run.partition_key) for run in full_plan(_profile(), "t")]
    assert plan.index((TRAIN_JOB, TRAINED)) < plan.index((IMAGE_JOB, RANDOM))
    assert [key for job, key in plan if job == TRAIN_JOB] == [TRAINED]


def test_the_forkserver_warm_up_leaves_a_trained_model_to_its_steps():
    """warm_models (the run launcher's forkserver) creates the models that come with their weights only: a
    trained model's checkpoint may not exist yet, or be trained again before its steps run."""
    from assets.embeddings import cached_model, warm_models

    cached_model.cache_clear()
    try:
        assert warm_models(_profile()) == [RANDOM]
    finally:
        cached_model.cache_clear()


# --- training --------------------------------------------------------------------------------------------

def test_the_same_settings_train_bit_identical_weights(pairs):
    spec = _profile().models[TRAINED]
    first, second = (spec.train_weights(pairs, "cpu", "fp32") for _ in range(2))
    assert first.state.keys() == second.state.keys()
    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    assert first.losses == second.losses
    # and another seed trains other weights
    other = _profile(seed=4).models[TRAINED].train_weights(pairs, "cpu", "fp32")
    assert not torch.equal(other.state["text_projection"], first.state["text_projection"])


def test_the_loss_goes_down_on_the_captioned_shapes(pairs):
    """The CLIP loss of a batch of B unrelated pairs is about ln B (every caption as likely as any
    other); training makes the captions of the shapes predictable, so the loss ends below where it
    started and below chance. A fixed temperature stays fixed."""
    spec = _profile(steps=40).models[TRAINED]
    result = spec.train_weights(pairs, "cpu", "fp32")
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < first and last < math.log(spec.training().batch_size), result.losses
    assert result.logit_scales[-1] != result.logit_scales[0]
    fixed = _profile(steps=4, learn_temperature=False, init_temperature=0.5).models[TRAINED].train_weights(
        pairs, "cpu", "fp32")
    assert fixed.logit_scales == pytest.approx([2.0] * 4)
    assert fixed.state["logit_scale"].exp().item() == pytest.approx(2.0)


# --- the checkpoint file ---------------------------------------------------------------------------------

def _state(value: float) -> dict[str, torch.Tensor]:
    return {"a.weight": torch.full((3, 2), value), "logit_scale": torch.tensor(value)}


def test_a_checkpoint_is_written_whole_with_its_provenance(tmp_path):
    paths = DataRoot(tmp_path)
    state = _state(1.0)
    sha = checkpoints.weights_sha256(state)
    file = checkpoints.write_checkpoint(paths, "m", state, {"weights_sha256": sha, "seed": 0})
    assert checkpoints.stored_provenance(paths, "m") == {"weights_sha256": sha, "seed": 0}
    assert (file.parent / checkpoints.PROVENANCE_FILE).is_file()
    weights = checkpoints.stored_weights(paths, "m")
    assert weights.sha256 == sha and all(torch.equal(weights.read()[k], state[k]) for k in state)
    assert checkpoints.verify_checkpoint(paths, "m") is None


def test_an_interrupted_write_leaves_no_checkpoint_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import safetensors.torch

    paths = DataRoot(tmp_path)
    real = safetensors.torch.save_file

    def killed(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(Path(filename).read_bytes()[:100])  # half written
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.write_checkpoint(paths, "m", _state(1.0), {"weights_sha256": "x"})
    assert not checkpoints.checkpoint_dir(paths, "m").exists()
    assert checkpoints.stored_provenance(paths, "m") is None
    with pytest.raises(FileNotFoundError, match="materialize training/checkpoint"):
        checkpoints.stored_weights(paths, "m")

    monkeypatch.setattr(safetensors.torch, "save_file", real)
    sha = checkpoints.weights_sha256(_state(1.0))
    checkpoints.write_checkpoint(paths, "m", _state(1.0), {"weights_sha256": sha})
    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.write_checkpoint(paths, "m", _state(2.0), {"weights_sha256": "y"})
    assert checkpoints.stored_provenance(paths, "m") == {"weights_sha256": sha}
    assert torch.equal(checkpoints.stored_weights(paths, "m").read()["a.weight"], _state(1.0)["a.weight"])
    assert not [p for p in paths.scratch.iterdir() if p.name.startswith("new-")]


def test_changed_tensors_are_found(tmp_path):
    paths = DataRoot(tmp_path)
    file = checkpoints.write_checkpoint(paths, "m", _state(1.0), {"weights_sha256": checkpoints.weights_sha256(
        _state(1.0))})
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the last tensor's bytes
    file.write_bytes(bytes(data))
    damage = checkpoints.verify_checkpoint(paths, "m")
    assert damage is not None and "hash to" in damage.reason
    with pytest.raises(ValueError, match="materialize training/checkpoint again"):
        checkpoints.stored_weights(paths, "m").read()


# --- the assets ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_root(tmp_path_factory) -> Path:
    return Root.materialized(tmp_path_factory.mktemp("trained"), PROFILE)


@pytest.fixture
def root(trained_root: Path, tmp_path: Path):
    return Root.copies(trained_root, tmp_path / "copy", PROFILE)


def test_the_checkpoint_asset_stores_weights_and_provenance_that_the_embeddings_read(root):
    r = root()
    paths = DataRoot(r.base / "data")
    provenance = checkpoints.stored_provenance(paths, TRAINED)
    assert provenance["entry"]["arch"] == "conescope-tiny" and provenance["train"]["steps"] == 20
    assert provenance["train"]["seed"] == 3 and provenance["code_version"]
    shapes = read_provenance(paths.dataset_dir("shapes") / "texts.parquet")["data_sha256"]
    assert provenance["data_sha256"]["texts"] == shapes
    weights = checkpoints.stored_weights(paths, TRAINED)
    assert weights.sha256 == provenance["weights_sha256"] == checkpoints.weights_sha256(weights.read())
    record = r.instance.get_latest_data_version_record(CHECKPOINT, False, TRAINED)
    assert record.event_log_entry.tags["dagster/data_version"] == weights.sha256
    meta = r.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=CHECKPOINT), limit=1).records[0] \
        .asset_materialization.metadata
    curve = meta["loss_curve"].value
    assert [rec.data["step"] for rec in curve.records] == list(range(1, 21))
    assert meta["steps"].value == 20 and meta["steps_per_s"].value > 0 and meta["wall_s"].value > 0
    assert meta["final_loss"].value == curve.records[-1].data["loss"]

    trained_dir, random_dir = paths.text_embeddings("shapes", TRAINED, "en"), paths.text_embeddings("shapes", RANDOM,
                                                                                                     "en")
    part = next(trained_dir.glob("part-*.parquet"))
    stored = read_provenance(part)
    assert stored["weights_sha256"] == weights.sha256 and stored["pretrained"] == "trained"
    (table, trained), (_, random) = read_embeddings(trained_dir, ["text"]), read_embeddings(random_dir)
    assert trained.shape == random.shape and not np.allclose(trained, random, atol=1e-3)
    # oracle: the tower loaded with the stored weights embeds the texts as stored
    from conescope.embedding import embed_texts

    loaded = r.profile.models[TRAINED].load("cpu", "fp32", weights)
    again = np.concatenate([e for _, e in embed_texts(loaded, table.column("text").to_pylist(), 16)])
    np.testing.assert_allclose(again, trained, rtol=1e-4, atol=1e-5)
    image = read_provenance(next(paths.image_embeddings("shapes", TRAINED).glob("part-*.parquet")))
    assert image["weights_sha256"] == weights.sha256


def _model_of(partition: str | None) -> str | None:
    return None if partition is None else model_and_lang(partition)[0] if "|" in partition else partition


def test_a_changed_training_setting_restales_that_model_only(root):
    before = root()
    assert before.not_fresh() == set()
    changed = copy.deepcopy(PROFILE)
    changed["models"][TRAINED]["train"]["lr"] = 2e-3
    r = root(changed)
    graph, old = r.defs.resolve_asset_graph(), before.defs.resolve_asset_graph()
    versions = {k.to_user_string() for k in graph.materializable_asset_keys
                if graph.get(k).code_version != old.get(k).code_version}
    # the checkpoint's settings, and the reports over every model, which print every entry
    assert versions == {"training/checkpoint", "reports/comparison_report", "reports/paper_report"}
    assert {name for name in r.not_fresh()} == {"training/checkpoint[tiny.trained]", "reports/comparison_report[]",
                                                "reports/paper_report[]"}
    done = r.materialize()
    partitions = {(name, p) for name, by_partition in done.items() for p in by_partition}
    assert {_model_of(p) for name, p in partitions if not name.startswith("datasets/")} == {TRAINED, None}
    assert {("training/checkpoint", TRAINED), ("embeddings/shapes_image", TRAINED),
            ("embeddings/shapes_text", f"en|{TRAINED}"), ("metrics/clip_loss", f"en|{TRAINED}"),
            ("reports/partition_report", f"en|{TRAINED}")} <= partitions
    assert done["training/checkpoint"][TRAINED]["kept"] is False
    assert r.not_fresh() == set()


def test_a_rerun_with_the_same_settings_keeps_the_checkpoint(root):
    r = root()
    shutil.rmtree(r.base / "dagster")
    (r.base / "dagster").mkdir()
    r = Root(r.base, PROFILE)  # a forgotten Dagster home: every step runs, the checkpoint is kept
    done = r.materialize(langs=["en"])
    assert done["training/checkpoint"][TRAINED]["kept"] is True
    assert all(meta["embedded_rows"] == 0 for meta in done["embeddings/shapes_text"].values())


def test_a_damaged_checkpoint_is_trained_again_to_the_same_weights(root):
    """``conescope materialize`` finds a checkpoint whose tensors changed since written, names it and
    trains it again; training is deterministic, so the weights (the data version) are those written
    first and nothing downstream reruns."""
    r = root()
    paths = DataRoot(r.base / "data")
    sha = checkpoints.stored_provenance(paths, TRAINED)["weights_sha256"]
    file = checkpoints.checkpoint_file(paths, TRAINED)
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    done = r.materialize()
    assert any(f"checkpoints/model={TRAINED}/model.safetensors is damaged" in line and "training tiny.trained again"
               in line for line in r.lines), r.lines
    assert done["training/checkpoint"][TRAINED]["kept"] is False
    assert checkpoints.stored_provenance(paths, TRAINED)["weights_sha256"] == sha
    assert checkpoints.verify_checkpoint(paths, TRAINED) is None
    assert {name for name in done if not name.startswith("datasets/")} == {"training/checkpoint"}
