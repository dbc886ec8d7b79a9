"""Isotropy against clusters (Mickus et al. 2024): the training trajectory, the correlations and their
intervals, the rows of the experiments, their warehouse tables, the page, and the assets."""

from __future__ import annotations

import copy

import duckdb
import numpy as np
import pytest
import torch
from scipy import stats

from conescope.checks import external_urls
from conescope.cluster_training import UnlabelledDataset, trajectory_rows, transform_rows
from conescope.metrics import clusters, isotropy
from conescope.metrics.isotropy_clusters import (
    correlation,
    grouped_correlation,
    recorded_steps,
    train_trajectory,
)
from conescope.profile import MetricSettings, parse_profile
from conescope.reports.isotropy_clusters import render_isotropy_clusters_report
from conescope.sets import TextSet
from tests.conftest import TINY_PROFILE, materialize_profile


def planted(n: int = 240, d: int = 16, signal: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian classes whose means differ by 2 ``signal`` along one axis: a weak planted structure
    (silhouette near 0 at the start) that a linear head can find and training can amplify."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    x = rng.standard_normal((n, d))
    x[:, 0] += np.where(y == 1, signal, -signal)
    return x, y


def test_planted_clusters_get_more_clustered_and_less_isotropic():
    """Mickus et al.'s finding on planted clusters: training the embeddings under a linear head raises
    the silhouette, lowers IsoScore, and the two move together with r < -0.8. The threshold: the paper
    reports strongly negative correlations in every setup; on this planted set every seed gives r below
    -0.95 (IsoScore falls steadily as the classes separate), so -0.8 leaves room for a seed's noise while
    failing for series that merely drift (two unrelated monotone-ish series of 11 points rarely reach it)
    and for any positive relation."""
    x, y = planted()
    pooled_iso, pooled_sil = [], []
    for seed in (0, 1):
        records = train_trajectory(x, y, seed, updates=200, record_every=20)
        assert [r.step for r in records] == list(range(0, 201, 20))
        first, last = records[0], records[-1]
        assert last.silhouette > first.silhouette + 0.05
        assert last.isoscore < first.isoscore - 0.02
        assert last.train_accuracy > first.train_accuracy and last.loss < first.loss
        iso, sil = [r.isoscore for r in records], [r.silhouette for r in records]
        assert correlation(iso, sil, "pearson").value < -0.8
        assert correlation(iso, sil, "spearman").value < -0.8
        pooled_iso += iso
        pooled_sil += sil
    pooled = correlation(pooled_iso, pooled_sil, "pearson", n_boot=500)
    assert pooled.value < -0.8 and pooled.ci_high < 0 and pooled.ci_low <= pooled.value <= pooled.ci_high


def test_the_records_are_the_metric_functions_and_seeded():
    x, y = planted(n=60, d=8)
    before = torch.random.get_rng_state()
    a = train_trajectory(x, y, seed=3, updates=10, record_every=4)
    assert torch.equal(before, torch.random.get_rng_state())  # the head's seed is private
    assert [r.step for r in a] == recorded_steps(10, 4) == [0, 4, 8, 10]
    assert a[0].isoscore == pytest.approx(isotropy.isoscore(x.astype(np.float32)), abs=1e-12)
    assert a[0].silhouette == pytest.approx(clusters.silhouette(x.astype(np.float32), y)[0], abs=1e-12)
    assert a == train_trajectory(x, y, seed=3, updates=10, record_every=4)
    assert a[-1] != train_trajectory(x, y, seed=4, updates=10, record_every=4)[-1]
    # labels need not be 0..k-1
    b = train_trajectory(x, y * 5 + 2, seed=3, updates=10, record_every=4)
    assert [r.train_accuracy for r in b] == [r.train_accuracy for r in a]
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_trajectory(x, np.zeros(len(x)), seed=0, updates=2, record_every=1)


def test_correlation_matches_scipy_and_its_interval_holds_it():
    rng = np.random.default_rng(2)
    a = rng.normal(size=40)
    b = -0.7 * a + rng.normal(scale=0.5, size=40)
    p, s = correlation(a, b, "pearson", n_boot=400), correlation(a, b, "spearman", n_boot=400)
    assert p.value == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert s.value == pytest.approx(stats.spearmanr(a, b).statistic)
    for c in (p, s):
        assert c.ci_low <= c.value <= c.ci_high < 0 and c.n == 40 and c.method.startswith("bca")
    assert correlation(a, 3 * a + 1, "spearman").value == pytest.approx(1.0)
    flat = correlation(a, np.ones(40), "pearson")
    assert np.isnan(flat.value) and flat.ci_low is None
    assert correlation(a[:3], b[:3], "pearson").ci_low is None  # too few pairs for an interval
    with pytest.raises(ValueError, match="statistic"):
        correlation(a, b, "kendall")


def test_grouped_correlation_resamples_groups():
    rng = np.random.default_rng(5)
    groups = []
    for _ in range(8):
        a = rng.normal(size=6)
        groups.append((a, -a + rng.normal(scale=0.3, size=6)))
    c = grouped_correlation(groups, "pearson", n_boot=300)
    pooled = np.corrcoef(np.concatenate([g[0] for g in groups]), np.concatenate([g[1] for g in groups]))[0, 1]
    assert c.value == pytest.approx(pooled) and c.n == 48
    assert c.ci_low <= c.value <= c.ci_high < 0 and c.method == "percentile bootstrap over 8 groups"
    single = grouped_correlation(groups[:1], "pearson", n_boot=300)
    assert single == correlation(*groups[0], "pearson", n_boot=300)


class FakeSource:
    """Text embeddings of one dataset whose samples carry labels (``None``: unlabelled)."""

    def __init__(self, labels):
        x, _ = planted(n=len(labels), d=8)
        self.labels = labels
        ids = np.array([f"s{i}" for i in range(len(labels))], dtype=object)
        self.text = TextSet("pol", "en", ids + "-en", ids, np.full(len(labels), -1), ["t"] * len(labels),
                            x.astype(np.float32))

    def text_set(self, dataset, lang):
        return self.text

    def sample_labels(self, dataset):
        return {f"s{i}": (-1 if v is None else v) for i, v in enumerate(self.labels)}


def _profile(**section):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["datasets"]["pol"] = {"kind": "polarity", "n": 40}
    raw["cluster_training"] = {"datasets": ["pol"], **section}
    return parse_profile(raw, "p.yaml")


def test_trajectory_rows_per_seed_and_over_seeds():
    profile = _profile(updates=6, record_every=3, seeds=[0, 1])
    labels = [0, 1] * 20 + [None] * 4  # unlabelled texts are left out
    steps, summary = trajectory_rows(profile, "tiny.random", FakeSource(labels))
    assert len(steps) == 2 * 3 and {r["n"] for r in steps} == {40}
    assert {(r["seed"], r["step"]) for r in steps} == {(s, t) for s in (0, 1) for t in (0, 3, 6)}
    assert {(r["seed"], r["statistic"]) for r in summary} == {(s, st) for s in (0, 1, None)
                                                               for st in ("pearson", "spearman")}
    assert {r["n"] for r in summary if r["seed"] is None} == {6}
    assert all(r["dataset"] == "pol" and r["lang"] == "en" for r in steps + summary)
    with pytest.raises(UnlabelledDataset, match="'pol'"):
        trajectory_rows(profile, "tiny.random", FakeSource([0] * 30 + [None] * 10))


def test_the_profile_section_is_validated():
    spec = _profile().cluster_training
    assert (spec.updates, spec.record_every, spec.seeds, spec.lr) == (1000, 50, (0, 1, 2), 1e-3)
    from conescope.profile import ProfileError

    with pytest.raises(ProfileError, match=r"cluster_training.datasets\[0\]: 'nope' is not one of"):
        raw = copy.deepcopy(TINY_PROFILE)
        raw["cluster_training"] = {"datasets": ["nope"]}
        parse_profile(raw, "p.yaml")
    with pytest.raises(ProfileError, match="cluster_training.seeds"):
        _profile(seeds=[])


def _geometry(model, lang, modality, transform, iso, sil):
    key = {"model": model, "lang": lang, "dataset": "d", "modality": modality, "transform": transform,
           "fit_set": "d:train", "eval_set": "d:test"}
    return {**key, "value": iso}, {**key, "value": sil}


def test_transform_rows_are_changes_from_the_identity():
    iso, sil = [], []
    for g, (model, lang) in enumerate([("m1", "en"), ("m1", "fr"), ("m2", "en")]):
        for t, (di, ds) in {"identity": (0, 0), "centering": (0.1, -0.05), "whitening_4": (0.3, -0.2),
                            "pca_4": (-0.1, 0.02)}.items():
            for modality in ("image", "text"):
                a, b = _geometry(model, lang, modality, t, 0.2 + g / 10 + di, 0.3 + ds + g / 100)
                iso.append(a)
                sil.append(b)
    a, _ = _geometry("m3", "en", "text", "centering", 0.5, 0.5)  # no silhouette: no point
    iso.append(a)
    points, summary = transform_rows(iso, sil, MetricSettings(bootstrap=200))
    assert len(points) == 3 * 4 * 2
    w = next(p for p in points if p["model"] == "m1" and p["lang"] == "fr" and p["transform"] == "whitening_4"
             and p["modality"] == "text")
    assert w["d_isoscore"] == pytest.approx(0.3) and w["d_silhouette"] == pytest.approx(-0.2)
    assert {(r["modality"], r["statistic"]) for r in summary} == {(m, s) for m in ("image", "text", "all")
                                                                   for s in ("pearson", "spearman")}
    text = next(r for r in summary if r["modality"] == "text" and r["statistic"] == "pearson")
    assert text["n"] == 9 and text["groups"] == 3 and text["value"] < -0.9
    assert next(r for r in summary if r["modality"] == "all" and r["statistic"] == "pearson")["n"] == 18
    # a group without an identity transform keeps its points, without changes
    no_identity = [r for r in iso if r["transform"] != "identity"], [r for r in sil if r["transform"] != "identity"]
    points, summary = transform_rows(*no_identity, MetricSettings(bootstrap=200))
    assert points and all(p["d_isoscore"] is None for p in points) and summary == []


def test_experiment_tables_leave_the_metric_tables_alone(tmp_path):
    from storage import metric_rows
    from storage.warehouse import Warehouse, experiment_rows
    from storage.warehouse import metric_rows as metric_table

    wh = Warehouse(tmp_path / "warehouse.duckdb")
    metric = metric_table([{"dataset": "d", "model": "m", "lang": "en", "modality": "text", "metric": "isoscore",
                            "value": 0.5, "n": 3}], "metrics.isotropy", "v")
    wh.replace_rows("metrics.isotropy", metric, {"model": "m", "lang": "en"}, {"transform": "x"})
    step = {"dataset": "d", "lang": "en", "seed": 0, "step": 0, "isoscore": 0.4, "silhouette": 0.1,
            "train_accuracy": 0.5, "loss": 0.7, "n": 10}
    for model in ("m", "other"):
        wh.replace_tables({"experiments.cluster_training": experiment_rows([{**step, "model": model}],
                                                                            "cluster_training", "v1")},
                          {"model": model})
    wh.replace_tables({"experiments.cluster_training": experiment_rows([{**step, "model": "m", "step": 5}],
                                                                        "cluster_training", "v2")}, {"model": "m"})
    rows = metric_rows.experiment_table(wh, "cluster_training")
    assert [(r["model"], r["step"]) for r in rows] == [("m", 5), ("other", 0)]
    with pytest.raises(ValueError, match="outside the table"):
        experiment_rows([{"nope": 1}], "cluster_training", "v")
    point = {"dataset": "d", "model": "m", "lang": "en", "modality": "text", "transform": "t", "isoscore": 0.1,
             "silhouette": 0.2}
    for n in (3, 1):
        wh.replace_whole_tables({"experiments.transform_clusters": experiment_rows([point] * n,
                                                                                  "transform_clusters", "v")})
    assert len(metric_rows.experiment_table(wh, "transform_clusters")) == 1
    with duckdb.connect(str(wh.path), read_only=True) as con:
        assert con.execute("SELECT metric, value FROM metrics.isotropy").fetchall() == [("isoscore", 0.5)]


def test_the_page_draws_both_curves_the_scatter_and_the_transforms():
    x, y = planted(n=60, d=8)
    records = [r for s in (0, 1) for r in train_trajectory(x, y, s, updates=20, record_every=10)]
    steps = [{"model": "m", "dataset": "d", "lang": "en", "seed": r.seed, "step": r.step, "isoscore": r.isoscore,
              "silhouette": r.silhouette, "train_accuracy": r.train_accuracy, "loss": r.loss} for r in records]
    summary = [{"model": "m", "dataset": "d", "lang": "en", "seed": None, "statistic": "pearson", "value": -0.9,
                "ci_low": -0.95, "ci_high": -0.8, "n": 6, "params": '{"ci": "bca-bootstrap over pairs"}'}]
    points = [{"model": "m", "lang": "en", "dataset": "d", "modality": "text", "transform": t, "eval_set": "d:test",
               "isoscore": 0.2 + k / 10, "silhouette": 0.3 - k / 20, "d_isoscore": k / 10, "d_silhouette": -k / 20}
              for k, t in enumerate(["identity", "centering", "whitening_4"])]
    tsummary = [{"modality": "text", "statistic": "pearson", "value": -1.0, "ci_low": None, "ci_high": None, "n": 2,
                 "groups": 1, "params": None}]
    report = render_isotropy_clusters_report(steps, summary, points, tsummary, {"profile": "p"})
    html = report.html
    assert html.count("<svg") >= 3 and "IsoScore, seed 1" in html and "silhouette against IsoScore" in html
    assert "change from the identity" in html and "whitening_4" in html and not external_urls(html)
    assert report.headline == {"m/d/en/pearson": -0.9, "transforms/text/pearson": -1.0}
    assert report.preview_png.startswith("data:image/png")
    assert render_isotropy_clusters_report(steps, summary, points, tsummary, {"profile": "p"}).html == html
    empty = render_isotropy_clusters_report([], [], [], [], {})
    assert "names no dataset" in empty.html and "No transform" in empty.html


def test_assets_train_the_polarity_texts_per_model(tmp_path):
    """A profile whose cluster_training names the bundled polarity data: experiments/cluster_training runs
    in model_summary_job, one partition per model, and the page is written; without transforms there is
    no cross-transform asset."""
    entries = copy.deepcopy(TINY_PROFILE)
    entries.update(languages=["en"], models={"tiny.random": TINY_PROFILE["models"]["tiny.random"]})
    entries["datasets"] = {"digits": TINY_PROFILE["datasets"]["digits"], "pol": {"kind": "polarity", "n": 40}}
    entries.pop("transforms")
    entries["cluster_training"] = {"datasets": ["pol"], "updates": 4, "record_every": 2, "seeds": [0, 1]}
    profile, root, defs, _ = materialize_profile(tmp_path, entries)
    from assets.experiments import CLUSTER_TRAINING, TRANSFORM_CLUSTERS

    graph = defs.resolve_asset_graph()
    assert graph.has(CLUSTER_TRAINING) and not graph.has(TRANSFORM_CLUSTERS)
    assert CLUSTER_TRAINING in defs.resolve_job_def("model_summary_job").asset_layer.executable_asset_keys
    with duckdb.connect(str(root.root / "warehouse.duckdb"), read_only=True) as con:
        steps = con.execute("SELECT model, dataset, lang, seed, step, n FROM experiments.cluster_training "
                            "ORDER BY seed, step").fetchall()
        assert steps == [("tiny.random", "pol", "en", s, t, 40) for s in (0, 1) for t in (0, 2, 4)]
        assert con.execute("SELECT count(*) FROM experiments.cluster_training_summary").fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM experiments.transform_clusters").fetchone()[0] == 0
        from tests.doc_pages import section, sql_queries

        answers = [con.execute(q).fetchall() for q in sql_queries(section("docs/storage.md", "## Experiments"))]
        assert len(answers) == 3 and answers[0] and answers[1] and not answers[2]  # no transforms here
    page = root.summary_report_dir("isotropy_clusters") / "index.html"
    assert "tiny.random: pol (en)" in page.read_text(encoding="utf-8")
    from tests.test_checks import run_checks

    found = run_checks(defs, "tiny.random", asset_keys=[CLUSTER_TRAINING])
    assert {check for _, check in found} == {"complete_runs", "correlation_in_ci"}
    assert all(e.passed for e in found.values()), {k: e.description for k, e in found.items()}


def test_the_tiny_pipeline_pairs_isoscore_and_silhouette_across_transforms(materialized):
    _, root, _, _ = materialized
    with duckdb.connect(str(root.root / "warehouse.duckdb"), read_only=True) as con:
        sil = con.execute("SELECT DISTINCT transform, eval_set FROM metrics.clusters WHERE transform <> 'none'"
                          ).fetchall()
        points = con.execute("SELECT model, lang, transform, d_isoscore, d_silhouette FROM "
                             "experiments.transform_clusters").fetchall()
        summary = con.execute("SELECT modality, statistic, value, groups FROM experiments.transform_clusters_summary"
                              ).fetchall()
    # in-domain only (geometry), never the gap-shift sweep
    assert sil and all(e.endswith(":test") and e.count(":") == 1 and not t.startswith("gap_shift") for t, e in sil)
    assert {m for m, *_ in points} == {"tiny.random", "tiny.random-nobias"}
    assert all((d is None) == (ds is None) for *_, d, ds in points)
    assert any(d is not None for *_, d, _ in points)
    assert summary and all(g >= 1 for *_, g in summary)
    assert (root.summary_report_dir("isotropy_clusters") / "index.html").is_file()
    from assets.experiments import TRANSFORM_CLUSTERS
    from tests.test_checks import run_checks

    found = run_checks(materialized[2], None, asset_keys=[TRANSFORM_CLUSTERS])
    assert len(found) == 2 and all(e.passed for e in found.values()), {k: e.description for k, e in found.items()}


def test_the_experiment_checks_name_what_is_missing_or_wrong():
    from conescope import checks

    step = {"dataset": "d", "lang": "en", "isoscore": 0.3, "silhouette": 0.1, "train_accuracy": 0.5, "loss": 0.7}
    steps = [{**step, "seed": s, "step": t} for s in (0, 1) for t in (0, 5)]
    summary = [{"dataset": "d", "lang": "en", "seed": s, "statistic": st, "value": -0.9, "ci_low": -0.95,
                "ci_high": -0.8} for s in (0, 1, None) for st in ("pearson", "spearman")]
    assert checks.training_runs(steps, summary, [("d", "en")], (0, 1), (0, 5)).passed
    broken = [r for r in steps if (r["seed"], r["step"]) != (1, 5)] + [{**step, "seed": 0, "step": 9,
                                                                        "loss": float("nan")}]
    f = checks.training_runs(broken, summary[:-1], [("d", "en")], (0, 1), (0, 5))
    assert not f.passed and f.offending == ["d/en seed 1 step 5 (missing)", "d/en seed 0 step 9 (not expected)",
                                            "d/en seed 0 step 9 (non-finite loss)",
                                            "d/en seed all spearman (missing correlation)"]
    assert checks.correlation_intervals(summary).passed
    bad = [{**summary[0], "value": -0.7}, {**summary[1], "ci_high": None}, {**summary[2], "value": 1.5,
                                                                          "ci_low": None, "ci_high": None},
           {**summary[3], "value": float("nan"), "ci_low": None, "ci_high": None}]
    f = checks.correlation_intervals(bad)
    assert f.count == 3 and "not in" in f.offending[0] and "half-null" in f.offending[1] and "outside" in f.offending[2]
    point = {"model": "m", "lang": "en", "dataset": "d", "modality": "text", "transform": "t", "isoscore": 0.1,
             "silhouette": 0.2, "d_isoscore": 0.1, "d_silhouette": None}
    f = checks.transform_points([point], [{"modality": "text", "statistic": "pearson"}])
    assert f.offending == ["m/en/d/text/t (one change null)", "text spearman (missing correlation)"]


def test_the_storage_contract_documents_every_experiment_table_and_column():
    import re

    from conescope.metric_families import EXPERIMENT_TABLES, EXPERIMENTS
    from storage.warehouse import EXPERIMENT_COLUMNS
    from tests.doc_pages import section

    text = section("docs/storage.md", "## Experiments")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\|\s*`experiments\.(\w+)`\s*\|(.*)\|\s*$", text, re.M)}
    assert sorted(rows) == sorted(EXPERIMENT_TABLES) == sorted(EXPERIMENT_COLUMNS)
    for table, cells in rows.items():
        named = set(re.findall(r"`(\w+)`", cells.split("|")[1]))
        assert named <= {c for c, _ in EXPERIMENT_COLUMNS[table]} | {"pearson", "spearman", "identity", "image",
                                                                      "text", "all"}, table
        assert {c for c, _ in EXPERIMENT_COLUMNS[table]} - {"computed_at", "code_version"} <= named, table
    assert {e.name for e in EXPERIMENTS} == set(re.findall(r"`experiments/(\w+)`", text))


def test_the_mickus_profile_materializes_offline(tmp_path):
    """configs/mickus.yaml, as `conescope materialize --profile mickus` walks it, at a small scale (60
    sentences, 4 updates): the bundled polarity data, all-MiniLM-L6-v2 from its pip package, the
    experiment and its page, offline."""
    import dagster as dg
    import yaml

    from conescope.profile import load_profile
    from pipelines.definitions import build_definitions
    from pipelines.refresh import execute_plan, full_plan
    from storage.paths import DataRoot

    full = load_profile("mickus")
    assert full.cluster_training.datasets == ("polarity",) and full.cluster_training.updates == 1000
    from tests.doc_pages import REPO

    entries = yaml.safe_load((REPO / full.source).read_text(encoding="utf-8"))
    entries["datasets"]["polarity"]["n"] = 60
    entries["cluster_training"].update(updates=4, record_every=2)
    entries["embedding"]["device"] = "cpu"
    path = tmp_path / "mickus.yaml"
    path.write_text(yaml.safe_dump(entries))
    profile = load_profile(str(path))
    defs = build_definitions(profile, str(tmp_path / "data"))
    assert execute_plan(defs, full_plan(profile, "test"), dg.DagsterInstance.ephemeral(), log=lambda _: None)
    root = DataRoot(tmp_path / "data")
    with duckdb.connect(str(root.root / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM experiments.cluster_training WHERE model = 'minilm'").fetchone()[0] \
            == 3 * 3
        raw = con.execute("SELECT value FROM metrics.clusters WHERE model = 'minilm' AND dataset = 'polarity'"
                          ).fetchone()[0]
        start = con.execute("SELECT avg(silhouette) FROM experiments.cluster_training WHERE step = 0").fetchone()[0]
    assert start == pytest.approx(raw, abs=1e-6)  # update 0 is the stored embeddings, measured as metrics/clusters
    assert (root.summary_report_dir("isotropy_clusters") / "index.html").is_file()
