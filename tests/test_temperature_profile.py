"""The temperature experiment of docs/findings.md (configs/liang.yaml; Liang et al. 2022, section 4 and Figure 3):
the lower the fixed temperature a model is trained at, the larger the modality gap training leaves, and
at the lowest temperature the shift that closes the gap raises the CLIP loss.

By default two of the profile's temperatures (1/100 and 1), trained for fewer steps; the heavy test
materializes the whole profile as ``conescope materialize --profile liang`` does."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from conescope.profile import load_profile
from pipelines.definitions import build_definitions
from pipelines.jobs import PARTITION_REPORT_JOB, REPORTS_JOB
from pipelines.refresh import execute_plan, full_plan
from storage.paths import DataRoot

REPO = Path(__file__).resolve().parent.parent


def findings_query() -> str:
    text = (REPO / "docs" / "findings.md").read_text()
    section = text.split("## The temperature experiment of Liang et al.", 1)[1].split("\n## ", 1)[0]
    return section.split("```sql\n", 1)[1].split("```", 1)[0].strip().rstrip(";")


def check_claims(root: DataRoot, fixed: set[str]) -> None:
    """The claims of docs/findings.md over the models in ``fixed``, trained at fixed temperatures."""
    with duckdb.connect(str(root.warehouse), read_only=True) as con:
        rows = con.execute(findings_query()).fetchall()
    scale = {model: s for model, s, metric, transform, _ in rows if metric == "loss" and transform == "gap_shift_0"}
    value = {(model, metric, transform): v for model, _, metric, transform, v in rows}
    by_temperature = sorted(fixed, key=lambda m: -scale[m])  # lowest temperature (largest logit scale) first
    assert len(by_temperature) >= 2 and scale[by_temperature[0]] == 100.0
    gaps = [value[(m, "gap_norm", "none")] for m in by_temperature]
    decreasing = gaps == sorted(gaps, reverse=True) and len(set(gaps)) == len(gaps)
    assert decreasing, dict(zip(by_temperature, gaps, strict=True))
    coldest, warmest = by_temperature[0], by_temperature[-1]
    assert value[(coldest, "separability_logreg", "none")] > 0.95
    assert value[(warmest, "separability_logreg", "none")] < 0.7
    rise = {m: value[(m, "loss", "gap_shift_1")] - value[(m, "loss", "gap_shift_0")] for m in by_temperature}
    assert rise[coldest] > 0.05 and all(rise[coldest] > rise[m] for m in by_temperature[1:]), rise
    assert all(abs(rise[m]) < 0.01 for m in by_temperature if scale[m] <= 10.0), rise


def test_the_liang_profile_is_the_demo_model_at_fixed_temperatures():
    demo, liang = load_profile("demo"), load_profile("liang")
    trained = demo.models["tiny.trained"]
    fixed = {name: m for name, m in liang.models.items() if name.startswith("tiny.t")}
    assert sorted(m.training().init_temperature for m in fixed.values()) == [0.01, 0.02, 0.05, 0.1, 1.0]
    for model in fixed.values():
        assert (model.arch, model.seed) == (trained.arch, trained.seed) and not model.training().learn_temperature
        assert (model.training().steps, model.training().batch_size, model.training().lr) == (
            trained.training().steps, trained.training().batch_size, trained.training().lr)
    assert liang.models["tiny.learned"].training().learn_temperature


def test_the_gap_grows_as_the_temperature_falls(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "liang.yaml").read_text())
    models = {name: config["models"][name] for name in ("tiny.t0.01", "tiny.t1")}
    for entry in models.values():
        entry["train"] = {**entry["train"], "steps": 200, "warmup_steps": 20}
    path = tmp_path / "liang.yaml"
    path.write_text(yaml.safe_dump({**config, "models": models, "report": {"max_points": 50}}))
    profile = load_profile(str(path))
    root = tmp_path / "data"
    defs = build_definitions(profile, str(root))
    plan = [run for run in full_plan(profile, "test", defs=defs) if run.job not in (PARTITION_REPORT_JOB, REPORTS_JOB)]
    assert execute_plan(defs, plan, dg.DagsterInstance.ephemeral(), log=lambda _: None)
    check_claims(DataRoot(root), set(models))


@pytest.mark.heavy
def test_the_liang_profile_shows_the_gap_depends_on_the_temperature(tmp_path):
    profile = load_profile("liang")
    root = tmp_path / "data"
    defs = build_definitions(profile, str(root))
    assert execute_plan(defs, full_plan(profile, "test"), dg.DagsterInstance.ephemeral(), log=lambda _: None)
    check_claims(DataRoot(root), {m for m in profile.models if m.startswith("tiny.t")})
