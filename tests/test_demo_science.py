"""The README's "What the demo shows" queries and those of docs/findings.md, run on a materialized profile: the cone at
initialisation, centering removing it and the gap shift closing the gap, each with confidence
intervals that do not overlap; and, on the trained model, its quality far above chance, the gap that
survives training, and what each fitted transform does to its quality.

The default tests materialize profiles just big enough for that: for the random towers 500 generated
shapes, 100 test pairs, the two-layer tiny towers, English only, only the assets the queries read; for
the trained model the demo's data and its ``tiny.trained`` entry alone, in float32 (the same weights on
every CPU), measured in English. The heavy one materializes the demo itself and checks every language."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from conescope.profile import load_profile
from pipelines.definitions import build_definitions
from pipelines.jobs import DATASETS_JOB, IMAGE_JOB, MODEL_LANG_JOB, PAIRED_JOB, TRAIN_JOB
from pipelines.partitions import model_lang_key
from pipelines.refresh import execute_plan, full_plan
from storage.paths import DataRoot

SCIENCE_PROFILE = {
    "name": "science",
    "seed": 0,
    "languages": ["en"],
    "datasets": {"shapes": {"kind": "shapes", "n": 500, "image_size": 32, "seed": 0}},
    "models": {"tiny.random": {"kind": "open_clip", "arch": "conescope-tiny", "pretrained": None, "seed": 0,
                               "zero_bias": False}},
    "embedding": {"batch_size": 100, "device": "cpu"},
    "metrics": {"bootstrap": 300},
    "transforms": {"kinds": ["identity", "centering", "gap_shift"],
                   "gap_shift": {"lambdas": [0.0, 1.0], "renormalize": [True]},
                   "protocols": {"in_domain": ["shapes"]}},
}


REPO = Path(__file__).resolve().parent.parent
TRAINED = "tiny.trained"


def readme_queries() -> list[str]:
    """The statements of the README's "What the demo shows" SQL block: the random towers'."""
    return sql_statements((REPO / "README.md").read_text(), "## What the demo shows")


def findings_queries() -> list[str]:
    """The statements of docs/findings.md's SQL block on the demo's trained model."""
    return sql_statements((REPO / "docs" / "findings.md").read_text(), "## A model that works")


def sql_statements(text: str, heading: str) -> list[str]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    sql = section.split("```sql\n", 1)[1].split("```", 1)[0]
    return [q.strip() for q in sql.split(";") if q.strip()]


def _answers(root: DataRoot, queries: list[str]) -> list[list[tuple]]:
    with duckdb.connect(str(root.warehouse), read_only=True) as con:
        return [con.execute(q).fetchall() for q in queries]


def check_claims(root: DataRoot, cone_models: set[str]) -> None:
    """What the README says of the three answers, for the random towers in ``cone_models``."""
    cone, centering, shift = _answers(root, readme_queries())
    assert all(row[0] is not None for row in cone + centering + shift)

    images = [r for r in cone if r[0] in cone_models and r[2] == "image"]
    assert {(r[0], r[1]) for r in images} >= {(m, "shapes") for m in cone_models}
    for model, dataset, _, value, lo, hi in images:
        assert 0.9 < lo <= value <= hi, f"{model} {dataset}: the image cone, mean cosine {value} [{lo}, {hi}]"

    raw = {r[:3]: r for r in centering if r[3] == "identity" and r[0] in cone_models}
    centered = {r[:3]: r for r in centering if r[3] == "centering" and r[0] in cone_models}
    assert raw.keys() == centered.keys() and raw
    for key, row in raw.items():
        assert centered[key][4] < row[4], f"{key}: centering {centered[key][4:]} against raw {row[4:]}"
    # shapes has as many captions as images: the joint cone is gone, the intervals far apart; digits'
    # joint rows are 300 images against 10 prompts, so their mean cosine drops less (README)
    shapes = [key for key in raw if key[2] == "shapes"]
    assert shapes and all(abs(centered[key][4]) < 0.05 for key in shapes)
    for key in shapes:
        assert centered[key][6] < raw[key][5], f"{key}: centering {centered[key][4:]} against raw {raw[key][4:]}"

    values = {(r[0], r[1], r[2], r[3], r[4]): r[5:] for r in shift}
    closed = [k[:3] for k in values if k[3] == "gap_shift_1" and k[4] == "rand_cosine_mean" and k[0] in cone_models]
    assert closed
    for model, lang, dataset in closed:
        before = values[(model, lang, dataset, "gap_shift_0", "rand_cosine_mean")]
        after = values[(model, lang, dataset, "gap_shift_1", "rand_cosine_mean")]
        assert after[1] > before[2], f"{model} {lang} {dataset}: random pairs {before} -> {after}"
        gap_before = values[(model, lang, dataset, "gap_shift_0", "gap_norm")][0]
        gap_after = values[(model, lang, dataset, "gap_shift_1", "gap_norm")][0]
        assert gap_after < 0.5 * gap_before  # renormalizing onto the sphere leaves part of it


def check_trained_claims(root: DataRoot, langs: set[str], random_models: set[str]) -> None:
    """What docs/findings.md says of the trained model's four answers, in each of ``langs``; of the random
    towers in ``random_models``, that their quality reaches down to chance and their gap is larger."""
    quality, gap, zero_shot, loss = _answers(root, findings_queries())
    assert {(r[0], r[1]) for r in quality} >= {(TRAINED, lang) for lang in langs}
    chance = {"top1": 1 / 20, "i2t_r1": 1 / 100, "t2i_r1": 1 / 100}
    for model, lang, metric, value, lo, hi in quality:
        if model == TRAINED and lang in langs:
            assert lo > 10 * chance[metric], f"{lang} {metric}: {value} [{lo}, {hi}] is not far above chance"
        if model in random_models:
            assert lo <= chance[metric], f"{model} {lang} {metric}: a random tower above chance, {value} [{lo}, {hi}]"

    gaps = {(r[0], r[1], r[2]): r[3] for r in gap}
    for lang in langs:
        assert gaps[(TRAINED, lang, "gap_norm")] > 0.05 and gaps[(TRAINED, lang, "separability_logreg")] > 0.8
        for model in random_models:
            assert gaps[(model, lang, "gap_norm")] > 2 * gaps[(TRAINED, lang, "gap_norm")]

    for lang in langs:
        top1 = {(r[1], r[2], r[4]): r[5:] for r in zero_shot if r[0] == lang}
        in_domain = {t: top1[(t, "in_domain", "shapes:test")] for t, p, e in top1 if p == "in_domain"}
        cross = {t: top1[(t, "cross_dataset", "shapes:test")] for t, p, e in top1 if p == "cross_dataset"}
        known = {t: top1[(t, "class_disjoint", "shapes:test:known")] for t, p, e in top1 if p == "class_disjoint"}
        new = {t: top1[(t, "class_disjoint", "shapes:test:new")] for t, p, e in top1 if p == "class_disjoint"}

        def inside(row, reference) -> bool:
            return reference[1] <= row[0] <= reference[2]

        # in-domain: whitening-16 costs quality beyond the interval; centering, Procrustes, PCA-16 do not
        assert in_domain["whitening_16"][2] < in_domain["identity"][1], (lang, in_domain)
        assert all(inside(in_domain[t], in_domain["identity"]) for t in ("centering", "procrustes", "pca_16"))
        assert in_domain["whitening_4"][0] > in_domain["whitening_16"][0]  # the k sweep
        # fitted on digits: the maps drop to chance, centering keeps the quality
        for t in ("procrustes", "lstsq"):
            assert cross[t][2] < cross["identity"][1] and cross[t][0] < 0.15, (lang, t, cross[t])
        assert inside(cross["centering"], cross["identity"])
        # fitted on the known classes: least squares loses more on the new ones, Procrustes loses neither
        assert new["lstsq"][0] < new["identity"][1], (lang, new)
        assert new["identity"][0] - new["lstsq"][0] > known["identity"][0] - known["lstsq"][0]
        assert inside(new["procrustes"], new["identity"]) and inside(known["procrustes"], known["identity"])
        assert inside(in_domain["lstsq"], in_domain["identity"])  # no gain the test split can show

        losses = {r[1]: r[2] for r in loss if r[0] == lang}
        assert losses["identity"] < losses["whitening_4"] < losses["whitening_8"] < losses["whitening_16"]
        assert losses["pca_4"] > losses["identity"] + 0.15
        assert all(abs(losses[t] - losses["identity"]) < 0.05 for t in ("centering", "procrustes", "lstsq", "pca_16"))
        assert abs(losses["gap_shift_1"] - losses["gap_shift_0"]) < 0.05


def _run(defs, instance, job: str, partition: str, keys: list[str] | None = None) -> None:
    selection = None if keys is None else [dg.AssetKey.from_user_string(k) for k in keys]
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=partition, raise_on_error=False, asset_selection=selection)
    assert result.success, f"{job} {partition} failed"


def test_readme_science_queries_on_a_sufficient_profile(tmp_path):
    path = tmp_path / "science.yaml"
    path.write_text(yaml.safe_dump(SCIENCE_PROFILE))
    profile = load_profile(str(path))
    root = tmp_path / "data"
    defs = build_definitions(profile, str(root))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def(DATASETS_JOB).execute_in_process(instance=instance).success
    _run(defs, instance, IMAGE_JOB, "tiny.random", ["embeddings/shapes_image", "metrics/image_isotropy"])
    key = model_lang_key("tiny.random", "en")
    _run(defs, instance, MODEL_LANG_JOB, key, ["embeddings/shapes_text"])
    _run(defs, instance, PAIRED_JOB, key,
         ["metrics/modality_gap", "metrics/transforms",
          *(f"transforms/{kind}" for kind in SCIENCE_PROFILE["transforms"]["kinds"])])
    check_claims(DataRoot(root), {"tiny.random"})


def trained_profile() -> dict:
    """The demo with its trained model alone, in float32, without the assets the queries do not read."""
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    return {**demo, "name": "science-trained", "models": {TRAINED: demo["models"][TRAINED]},
            "embedding": {**demo["embedding"], "device": "cpu", "precision": "fp32", "text_layers": False}}


def test_readme_trained_model_queries_on_the_demo_model(tmp_path):
    path = tmp_path / "trained.yaml"
    path.write_text(yaml.safe_dump(trained_profile(), allow_unicode=True))
    profile = load_profile(str(path))
    root = tmp_path / "data"
    defs = build_definitions(profile, str(root))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def(DATASETS_JOB).execute_in_process(instance=instance).success
    _run(defs, instance, TRAIN_JOB, TRAINED)
    _run(defs, instance, IMAGE_JOB, TRAINED, ["embeddings/shapes_image", "embeddings/digits_image"])
    key = model_lang_key(TRAINED, "en")
    _run(defs, instance, MODEL_LANG_JOB, key, ["embeddings/shapes_text", "embeddings/digits_text"])
    _run(defs, instance, PAIRED_JOB, key)
    check_trained_claims(DataRoot(root), {"en"}, set())


@pytest.mark.heavy
def test_readme_science_queries_on_the_demo(tmp_path):
    profile = load_profile("demo")
    root = tmp_path / "data"
    defs = build_definitions(profile, str(root))
    assert execute_plan(defs, full_plan(profile, "test"), dg.DagsterInstance.ephemeral(), log=lambda _: None)
    random_towers = {"vit-b-32.random", "vit-b-32.random-nobias"}
    check_claims(DataRoot(root), random_towers)
    check_trained_claims(DataRoot(root), set(profile.languages), random_towers)
