"""The README's "What the demo shows" queries, run on a materialized profile: the cone at
initialisation, centering removing it and the gap shift closing the gap, each with confidence
intervals that do not overlap.

The default test materializes a profile just big enough for that (500 generated shapes, 100 test
pairs, the two-layer tiny towers, English only, only the assets the queries read); the heavy one
materializes the demo itself."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from conescope.profile import load_profile
from pipelines.definitions import build_definitions
from pipelines.jobs import DATASETS_JOB, IMAGE_JOB, MODEL_LANG_JOB, PAIRED_JOB
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


def readme_queries() -> list[str]:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text.split("## What the demo shows", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    return [q.strip() for q in block.split(";") if q.strip()]


def _answers(root: DataRoot) -> list[list[tuple]]:
    with duckdb.connect(str(root.warehouse), read_only=True) as con:
        return [con.execute(q).fetchall() for q in readme_queries()]


def check_claims(root: DataRoot, cone_models: set[str]) -> None:
    """What the README says of the three answers, for the random towers in ``cone_models``."""
    cone, centering, shift = _answers(root)
    assert all(row[0] is not None for row in cone + centering + shift)

    images = [r for r in cone if r[0] in cone_models and r[2] == "image"]
    assert {(r[0], r[1]) for r in images} >= {(m, "shapes") for m in cone_models}
    for model, dataset, _, value, lo, hi in images:
        assert 0.9 < lo <= value <= hi, f"{model} {dataset}: the image cone, mean cosine {value} [{lo}, {hi}]"

    raw = {r[:3]: r for r in centering if r[3] == "identity"}
    centered = {r[:3]: r for r in centering if r[3] == "centering"}
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
    closed = [k[:3] for k in values if k[3] == "gap_shift_1" and k[4] == "rand_cosine_mean"]
    assert closed
    for model, lang, dataset in closed:
        before = values[(model, lang, dataset, "gap_shift_0", "rand_cosine_mean")]
        after = values[(model, lang, dataset, "gap_shift_1", "rand_cosine_mean")]
        assert after[1] > before[2], f"{model} {lang} {dataset}: random pairs {before} -> {after}"
        gap_before = values[(model, lang, dataset, "gap_shift_0", "gap_norm")][0]
        gap_after = values[(model, lang, dataset, "gap_shift_1", "gap_norm")][0]
        assert gap_after < 0.5 * gap_before  # renormalizing onto the sphere leaves part of it


def _run(defs, instance, job: str, partition: str, keys: list[str]) -> None:
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=partition, raise_on_error=False,
        asset_selection=[dg.AssetKey.from_user_string(k) for k in keys])
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


@pytest.mark.heavy
def test_readme_science_queries_on_the_demo(tmp_path):
    profile = load_profile("demo")
    root = tmp_path / "data"
    defs = build_definitions(profile, str(root))
    assert execute_plan(defs, full_plan(profile, "test"), dg.DagsterInstance.ephemeral(), log=lambda _: None)
    check_claims(DataRoot(root), {"vit-b-32.random", "vit-b-32.random-nobias"})
