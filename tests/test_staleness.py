"""What is recomputed: code versions from the code each asset runs, data versions from content, and
``execute_plan`` running only what Dagster calls stale or missing (``--force``: everything).

A small profile (one model, two datasets, two languages, two transforms) is materialized once per
module into its own data root and Dagster home; each test works on a copy of both."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml

from conescope import code_versions
from conescope.profile import load_profile
from pipelines.definitions import build_definitions
from pipelines.refresh import execute_plan, full_plan, stale_or_missing
from tests.conftest import TINY_PROFILE

REPO = Path(__file__).resolve().parent.parent
PROFILE = {**TINY_PROFILE, "models": {"tiny.random": TINY_PROFILE["models"]["tiny.random"]},
           "transforms": {**TINY_PROFILE["transforms"], "kinds": ["identity", "centering"]}}
PARTITION_REPORT = dg.AssetKey(["reports", "partition_report"])
EMBEDDINGS = {"embeddings/shapes_image", "embeddings/shapes_text", "embeddings/digits_image", "embeddings/digits_text"}


class Root:
    """A copy of the materialized data root with its Dagster home, its profile and definitions."""

    def __init__(self, base: Path, profile: dict):
        self.base = base
        (base / "profile.yaml").write_text(yaml.safe_dump(profile))
        self.profile = load_profile(str(base / "profile.yaml"))
        self.defs = build_definitions(self.profile, str(base / "data"))
        self.instance = dg.DagsterInstance.local_temp(str(base / "dagster"))
        self.lines: list[str] = []
        self.runs: dict[tuple[str, str | None], int] = {}  # materializations per asset and partition

    def materialize(self, force: bool = False, langs: list[str] | None = None) -> dict[str, dict[str | None, dict]]:
        """Run the whole plan (``langs``: of these languages); what it materialized: asset -> partition
        -> metadata values."""
        cursor = self.instance.event_log_storage.get_maximum_record_id() or 0
        assert execute_plan(self.defs, full_plan(self.profile, "test", langs=langs), self.instance,
                            log=self.lines.append, force=force)
        done: dict[str, dict[str | None, dict]] = {}
        for key in self.defs.resolve_asset_graph().materializable_asset_keys:
            records = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor), limit=1000).records
            for record in records:
                mat, name = record.asset_materialization, key.to_user_string()
                self.runs[name, mat.partition] = self.runs.get((name, mat.partition), 0) + 1
                done.setdefault(name, {})[mat.partition] = {k: v.value for k, v in mat.metadata.items()}
        return done

    @staticmethod
    def materialized(base: Path, profile: dict) -> Path:
        """``base`` with the whole plan of ``profile`` materialized in it (a module fixture's work)."""
        (base / "dagster").mkdir()
        Root(base, profile).materialize()
        return base

    @staticmethod
    def copies(materialized: Path, folder: Path, default: dict):
        """A copy of a :meth:`materialized` base in ``folder``, opened (with ``default`` or another profile)
        by the returned function: each test edits its own."""
        shutil.copytree(materialized, folder)
        return lambda profile=default: Root(folder, profile)

    def not_fresh(self) -> set[str]:
        """Every asset partition that Dagster calls stale or missing, as ``asset[partition]``."""
        return {f"{key.to_user_string()}[{run.partition_key or ''}]"
                for run in full_plan(self.profile, "check")
                for key in stale_or_missing(self.defs, self.instance, run.job, run.partition_key)}


@pytest.fixture(scope="module")
def materialized_root(tmp_path_factory) -> Path:
    return Root.materialized(tmp_path_factory.mktemp("staleness"), PROFILE)


@pytest.fixture
def root(materialized_root: Path, tmp_path: Path):
    yield Root.copies(materialized_root, tmp_path / "copy", PROFILE)
    code_versions.clear_cache()  # a test that edits sources leaves the real versions behind it


def test_a_second_run_recomputes_nothing_and_everything_is_fresh(root):
    r = root()
    assert r.not_fresh() == set()
    done = r.materialize()
    # the datasets are always rebuilt (cheap; the way to notice changed source files), nothing else runs
    assert set(done) == {"datasets/shapes", "datasets/digits"}
    assert r.not_fresh() == set()
    assert all("nothing stale" in line for line in r.lines[1:]), r.lines


def _edited(module: str, addition: str):
    original = code_versions.read_source

    def read(name: str) -> str:
        return original(name) + addition if name == module else original(name)

    return read


def test_b_editing_one_metric_module_recomputes_that_family_only(root, monkeypatch):
    before = root()
    monkeypatch.setattr(code_versions, "read_source",
                        _edited("conescope.metrics.clusters", "\n\ndef _edited() -> int:\n    return 1\n"))
    code_versions.clear_cache()
    r = root()
    # the family's assets, and those that measure the silhouette too: after the in-domain transforms, and
    # the cross-transform experiment (Mickus et al.)
    using = {"metrics/clusters", "metrics/image_clusters", "metrics/transforms", "experiments/transform_clusters"}
    assert {name.split("[")[0] for name in r.not_fresh()} == using
    changed = {k.to_user_string() for k in r.defs.resolve_asset_graph().materializable_asset_keys
               if r.defs.resolve_asset_graph().get(k).code_version
               != before.defs.resolve_asset_graph().get(k).code_version}
    assert changed == using
    done = r.materialize()
    # the rows are the same, so their readers (the reports) stay fresh
    assert set(done) == {"datasets/shapes", "datasets/digits", *using}
    assert set(done["metrics/clusters"]) == {"en|tiny.random", "fr|tiny.random"}
    assert r.not_fresh() == set()


def test_c_changing_one_dataset_recomputes_it_and_what_is_downstream_only(root, monkeypatch):
    profile = {**PROFILE, "datasets": {**PROFILE["datasets"], "shapes": {**PROFILE["datasets"]["shapes"], "n": 14}}}
    # the report's code changed too: stale now, it must still wait for its new inputs and run once, last
    monkeypatch.setattr(code_versions, "read_source", _edited("conescope.reports.partition", "\nEDITED = 1\n"))
    code_versions.clear_cache()
    r = root(profile)
    done = r.materialize()
    assert r.runs["reports/partition_report", "en|tiny.random"] == 1
    assert EMBEDDINGS & set(done) == {"embeddings/shapes_image", "embeddings/shapes_text"}
    assert set(done["embeddings/shapes_text"]) == {"en|tiny.random", "fr|tiny.random"}
    assert all(meta["embedded_rows"] > 0 for meta in done["embeddings/shapes_text"].values())
    assert {"metrics/isotropy", "metrics/transforms", "reports/partition_report", "reports/comparison_report"} \
        <= set(done)
    assert r.not_fresh() == set()


def test_d_force_re_embeds_everything(root):
    r = root()
    done = r.materialize(force=True)
    assert set(done) == {k.to_user_string() for k in r.defs.resolve_asset_graph().materializable_asset_keys}
    for name in EMBEDDINGS:
        assert all(meta["embedded_rows"] == meta["rows"] > 0 for meta in done[name].values()), name
    assert r.not_fresh() == set()


def test_a_forgotten_dagster_home_reruns_every_step_but_keeps_the_embeddings(root):
    """A new Dagster home (or "Materialize all" in the UI) runs every step; an embedding step whose
    stored partition has its fingerprint keeps it (0 forward passes) and reports the same data version."""
    r = root()
    versions = {key: r.instance.get_latest_data_version_record(key, False, "en|tiny.random")
                for key in (dg.AssetKey(["embeddings", "shapes_text"]), dg.AssetKey(["embeddings", "digits_text"]))}
    shutil.rmtree(r.base / "dagster")
    (r.base / "dagster").mkdir()
    r = Root(r.base, PROFILE)
    done = r.materialize(langs=["en"])  # the datasets, the image run and one model x lang run
    assert {"datasets/shapes", "metrics/isotropy", "reports/partition_report"} <= set(done)
    for name in EMBEDDINGS:
        assert all(meta["embedded_rows"] == 0 and meta["kept"] for meta in done[name].values()), name
    for key, before in versions.items():
        after = r.instance.get_latest_data_version_record(key, False, "en|tiny.random")
        assert after.event_log_entry.tags["dagster/data_version"] == before.event_log_entry.tags["dagster/data_version"]


def test_e_a_report_rendered_again_from_the_same_inputs_keeps_its_data_version(root, monkeypatch):
    """The report's code changed (it renders again) and so did the git commit (an edit anywhere in the work
    tree): the page is the same, so its data version is, and the reports that read it stay fresh."""
    import assets.reports

    before = root()
    versions = {p: before.instance.get_latest_data_version_record(PARTITION_REPORT, False, p)
                .event_log_entry.tags["dagster/data_version"] for p in ("en|tiny.random", "fr|tiny.random")}
    monkeypatch.setattr(code_versions, "read_source", _edited("conescope.reports.partition", "\nEDITED = 1\n"))
    monkeypatch.setattr(assets.reports, "git_commit", lambda: "0.0.0+gdeadbeef.dirty")
    code_versions.clear_cache()
    r = root()
    graph, graph_before = r.defs.resolve_asset_graph(), before.defs.resolve_asset_graph()
    changed = {k.to_user_string() for k in graph.materializable_asset_keys
               if graph.get(k).code_version != graph_before.get(k).code_version}
    assert "reports/partition_report" in changed
    done = r.materialize()
    # what renders the page changed; nothing reruns because a page it reads changed
    assert set(done) == {"datasets/shapes", "datasets/digits", *changed}
    assert all(meta["git_commit"] == "0.0.0+gdeadbeef.dirty" for meta in done["reports/partition_report"].values())
    for p, version in versions.items():
        record = r.instance.get_latest_data_version_record(PARTITION_REPORT, False, p)
        assert record.event_log_entry.tags["dagster/data_version"] == version
    assert r.not_fresh() == set()


def _automation_route(r: Root) -> set[tuple[str, str | None]]:
    """What the automation sensors run until nothing is requested: each tick's requests grouped into runs as
    the sensor groups them (by partitions definition, equal ones together, and partition key), each run
    executed as the daemon launches it (the implicit asset job, the run's assets and partition)."""
    job, graph = r.defs.resolve_implicit_global_asset_job_def(), r.defs.resolve_asset_graph()
    cursor, ran = None, set()
    for _ in range(30):
        result = dg.evaluate_automation_conditions(r.defs, r.instance, cursor=cursor)
        cursor = result.cursor
        runs: dict[tuple, list[dg.AssetKey]] = {}
        for key in graph.get_all_asset_keys():
            for p in result.get_requested_partitions(key) if result.get_num_requested(key) else []:
                runs.setdefault((graph.get(key).partitions_def, p), []).append(key)
        if not runs:
            return ran
        for (_, p), selection in runs.items():
            assert job.execute_in_process(instance=r.instance, partition_key=p, asset_selection=selection).success
            ran |= {(k.to_user_string(), p) for k in selection}
    raise AssertionError(f"the automation still requests runs after 30 ticks: {ran}")


@pytest.mark.parametrize("module", ["conescope.metrics.clip_loss", "conescope.metrics.clusters"])
def test_f_both_routes_run_the_same_asset_partitions_after_a_metric_module_changed(materialized_root, tmp_path,
                                                                                     monkeypatch, module):
    """One metric module edited: ``conescope materialize`` and the automation sensors run the same asset
    partitions, and leave everything fresh (the datasets aside: the CLI rebuilds them every time, cheaply,
    to notice changed source files; the automation on the nightly tick)."""
    monkeypatch.setattr(code_versions, "read_source", _edited(module, "\n\ndef _edited() -> int:\n    return 1\n"))
    code_versions.clear_cache()
    for name in ("cli", "automation"):
        shutil.copytree(materialized_root, tmp_path / name)
    cli, automation = Root(tmp_path / "cli", PROFILE), Root(tmp_path / "automation", PROFILE)
    cli.materialize()
    by_cli = {(name, p) for (name, p), n in cli.runs.items() if not name.startswith("datasets/")}
    by_automation = _automation_route(automation)
    assert by_cli and by_automation == by_cli
    assert automation.not_fresh() == set() and cli.not_fresh() == set()
    code_versions.clear_cache()


# --- the code versions themselves ------------------------------------------------------------------------

def test_every_asset_declares_a_code_version(tiny_profile):
    graph = build_definitions(tiny_profile, "unused").resolve_asset_graph()
    assert all(graph.get(key).code_version for key in graph.materializable_asset_keys)


# The metric modules of some families (partition_metrics.FAMILIES declares them; importing it loads torch)
FAMILY_MODULES = {name: (f"conescope.metrics.{name}",) for name in
                  ("isotropy", "clip_loss", "retrieval", "zero_shot", "clusters", "layers", "multilingual")}


def _family_versions() -> dict[str, str]:
    profile = load_profile("demo")
    out = {name: code_versions.metric_family(profile, modules) for name, modules in FAMILY_MODULES.items()}
    out.update(embedding=code_versions.embedding(profile, "text"), dataset=code_versions.dataset(profile, "shapes"),
               report=code_versions.report(profile, "conescope.reports.partition"),
               transforms=code_versions.fit_transforms(profile))
    return out


def test_an_edit_of_a_shared_module_changes_the_versions_of_its_importers_only(monkeypatch):
    before = _family_versions()
    # conescope.metrics.logits is imported by the clip loss, retrieval and zero-shot modules only
    monkeypatch.setattr(code_versions, "read_source", _edited("conescope.metrics.logits", "\nEDITED = 1\n"))
    code_versions.clear_cache()
    try:
        after = _family_versions()
    finally:
        code_versions.clear_cache()
    assert {name for name in before if before[name] != after[name]} == {"clip_loss", "retrieval", "zero_shot"}


def test_comments_and_docstrings_change_no_version(monkeypatch):
    before = _family_versions()
    original = code_versions.read_source

    def read(name: str) -> str:
        source = original(name)
        return '"""A new docstring."""\n# a comment\n' + source.split('"""', 2)[2] if name == "conescope.engine" \
            else source

    monkeypatch.setattr(code_versions, "read_source", read)
    code_versions.clear_cache()
    try:
        assert _family_versions() == before
    finally:
        code_versions.clear_cache()


def test_versions_are_the_same_in_another_process():
    """No dict order, hash seed, path or time enters a version: the code server, the daemon and the
    CLI agree on them (the automation compares them between processes)."""
    body = inspect.getsource(_family_versions)
    script = (f"import json\nfrom conescope import code_versions\nfrom conescope.profile import load_profile\n"
              f"FAMILY_MODULES = {FAMILY_MODULES!r}\n{body}\nprint(json.dumps(_family_versions()))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert json.loads(out) == _family_versions()


def test_closure_follows_project_imports_and_leaves_out_what_the_docstring_names():
    modules = code_versions.closure(code_versions.EMBEDDING)
    assert "conescope.engine" in modules and "conescope.models" in modules
    assert not {"conescope.profile", "conescope.file_lock", "conescope.provenance", "pipelines.partitions"} \
        & set(modules)
    # families imports every metric module but is opaque: a family sees only the modules it names
    isotropy = code_versions.closure(tuple(sorted((*code_versions.METRIC_SHARED, "conescope.metrics.isotropy"))))
    assert "conescope.families" in isotropy and "conescope.metrics.zero_shot" not in isotropy


def test_batch_size_changes_embeddings_in_the_last_float32_bits_only():
    """Why ``embedding.batch_size`` is not part of the embedding code version (code_versions.embedding)."""
    from conescope.datasets import build_dataset
    from conescope.embedding import embed_images, embed_texts
    from conescope.model_kinds.open_clip import load_model

    loaded = load_model("conescope-tiny", None, 0, False, "cpu", "fp32")
    manifest = build_dataset("shapes", "shapes", 12, 1, 32, ("en",))
    for embed, data in ((embed_texts, manifest.texts.column("text").to_pylist()),
                        (embed_images, manifest.samples.column("image").to_pylist())):
        one, five, all_ = (np.concatenate([e for _, e in embed(loaded, data, b)]) for b in (1, 5, len(data)))
        scale = np.abs(one).max()
        assert np.abs(one - five).max() <= 1e-5 * scale and np.abs(one - all_).max() <= 1e-5 * scale
