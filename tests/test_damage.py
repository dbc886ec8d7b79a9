"""Damaged stored data is found and healed: ``conescope materialize`` verifies the files the assets
keep (storage/integrity.py, assets/stored.py) before it decides what to run, names each damaged file
in one line, embeds again only the damaged parts (the result is the uninterrupted run's, bit for
bit) and rewrites a damaged manifest; the embedding checks name the damaged file and the partition;
the metric loader names the file of a NaN.

A small profile (one model, one language, parts of one batch each, text layer states stored) is
materialized once per module; each test damages a copy of it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from assets.stored import verify_lake
from conescope.profile import load_profile
from pipelines.definitions import build_definitions
from pipelines.refresh import execute_plan, full_plan, stale_or_missing
from pipelines.resources import ConescopeHome
from storage.embedding_sets import load_image_set
from storage.integrity import PART_LIST, read_part_list, verify_files, verify_parts
from storage.parquet_store import read_embeddings
from storage.paths import DataRoot
from tests.conftest import TINY_PROFILE

MODEL = "tiny.random"
PROFILE = {**TINY_PROFILE, "languages": ["en"], "models": {MODEL: TINY_PROFILE["models"][MODEL]},
           # batches of 5 rows, a part per batch: shapes' 12 images are 3 parts
           "embedding": {**TINY_PROFILE["embedding"], "part_rows": 5, "text_layers": True},
           "transforms": {**TINY_PROFILE["transforms"], "kinds": ["identity"]}}


class Root:
    """A copy of the materialized data root, its Dagster home, profile and definitions."""

    def __init__(self, base: Path):
        self.base = base
        (base / "profile.yaml").write_text(yaml.safe_dump(PROFILE))
        self.profile = load_profile(str(base / "profile.yaml"))
        self.data = DataRoot(base / "data")
        self.defs = build_definitions(self.profile, str(self.data.root))
        self.instance = dg.DagsterInstance.local_temp(str(base / "dagster"))
        self.lines: list[str] = []

    def materialize(self) -> dict[str, dict[str | None, dict]]:
        """Run the refresh; what it materialized: asset -> partition -> metadata values."""
        cursor = self.instance.event_log_storage.get_maximum_record_id() or 0
        self.lines.clear()
        assert execute_plan(self.defs, full_plan(self.profile, "test"), self.instance, log=self.lines.append)
        done: dict[str, dict[str | None, dict]] = {}
        for key in self.defs.resolve_asset_graph().materializable_asset_keys:
            for record in self.instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor), limit=100).records:
                mat = record.asset_materialization
                done.setdefault(key.to_user_string(), {})[mat.partition] = {k: v.value for k, v in
                                                                            mat.metadata.items()}
        return done

    def not_fresh(self) -> set[str]:
        return {f"{key.to_user_string()}[{run.partition_key or ''}]" for run in full_plan(self.profile, "check")
                for key in stale_or_missing(self.defs, self.instance, run.job, run.partition_key)}

    def checks(self, partition: str) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
        """The embedding checks of ``partition``, evaluated by Dagster."""
        graph = self.defs.resolve_asset_graph()
        wanted = [k for k in graph.asset_check_keys if k.asset_key.path[0] == "embeddings"
                  and partition in graph.get(k.asset_key).partitions_def.get_partition_keys()]
        job = dg.define_asset_job("embedding_checks", selection=dg.AssetSelection.checks(*wanted))
        result = dg.Definitions.merge(self.defs, dg.Definitions(jobs=[job])).resolve_job_def(
            "embedding_checks").execute_in_process(instance=dg.DagsterInstance.ephemeral(),
                                                   tags={"dagster/partition": partition})
        return {(e.asset_check_evaluation_data.asset_key.to_user_string(), e.asset_check_evaluation_data.check_name):
                e.asset_check_evaluation_data for e in result.all_events
                if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def stored(data: DataRoot) -> dict[str, tuple[list, bytes]]:
    """Every embedding partition's keys and raw float32 bytes (image, text, layer states)."""
    out = {}
    for directory in sorted({p.parent for p in (data.root / "embeddings").rglob("part-*.parquet")}):
        vector = "state" if "text_layers" in directory.parts else "embedding"
        keys, matrix = read_embeddings(directory, vector=vector)
        out[str(directory.relative_to(data.root))] = (keys.to_pylist(), matrix.tobytes())
    return out


@pytest.fixture(scope="module")
def materialized(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("damage")
    (base / "dagster").mkdir()
    Root(base).materialize()
    return base


@pytest.fixture
def root(materialized: Path, tmp_path: Path) -> Root:
    copy = tmp_path / "copy"
    shutil.copytree(materialized, copy)  # copy2: modification times kept, as cp -a
    return Root(copy)


def _rewrite_with_nan(part: Path, row: int) -> None:
    table = pq.read_table(part)
    emb = table.column("embedding").combine_chunks()
    values = emb.flatten().to_numpy().copy()
    values[row * emb.type.list_size] = np.nan
    col = pa.FixedSizeListArray.from_arrays(pa.array(values, type=pa.float32()), emb.type.list_size)
    pq.write_table(table.set_column(table.schema.get_field_index("embedding"), "embedding", col)
                   .replace_schema_metadata(table.schema.metadata), part)


def test_the_writer_records_its_parts(materialized: Path):
    data = DataRoot(materialized / "data")
    directory = data.image_embeddings("shapes", MODEL)
    listed = read_part_list(directory)
    files = sorted(directory.glob("part-*.parquet"))
    assert [p["file"] for p in listed["parts"]] == [f.name for f in files] and len(files) == 3
    assert [p["rows"] for p in listed["parts"]] == [pq.read_metadata(f).num_rows for f in files] == [5, 5, 2]
    assert [(p["first"], p["last"]) for p in listed["parts"]] == [(0, 4), (5, 9), (10, 11)]
    assert all(p["nonfinite"] == 0 for p in listed["parts"]) and listed["vector"] == "embedding"
    layers = read_part_list(data.text_layers("shapes", MODEL, "en"))
    assert layers["vector"] == "state" and layers["key"] == read_part_list(data.text_embeddings("shapes", MODEL, "en"))[
        "key"] != listed["key"]
    assert verify_parts(directory, values="all") == []


def test_a_truncated_part_is_named_and_only_it_is_embedded_again(root: Root, materialized: Path):
    clean = stored(DataRoot(materialized / "data"))
    part = root.data.image_embeddings("shapes", MODEL) / "part-00001.parquet"
    size = part.stat().st_size
    with part.open("r+b") as f:
        f.truncate(size // 2)
    [damage] = verify_parts(part.parent)
    assert damage.path == part and damage.part == 1 and damage.reason.startswith(f"truncated to {size // 2} of {size}")
    done = root.materialize()
    rel = f"embeddings/shapes/image/model={MODEL}/part-00001.parquet"
    named = [line for line in root.lines if line.startswith(f"{rel} is damaged (truncated")]
    assert len(named) == 1 and named[0].endswith(f"; re-embedding shapes image for {MODEL}"), root.lines
    # only the damaged part's rows were embedded; the partition's data version is unchanged, so nothing
    # downstream ran
    meta = done["embeddings/shapes_image"][MODEL]
    assert (meta["embedded_rows"], meta["resumed_rows"], meta["rows"]) == (5, 7, 12)
    assert set(done) == {"datasets/shapes", "datasets/digits", "embeddings/shapes_image"}
    assert stored(root.data) == clean
    assert verify_parts(part.parent, values="all") == [] and root.not_fresh() == set()
    root.materialize()
    assert not any("damaged" in line for line in root.lines)


def test_nan_written_into_a_part_is_named_by_the_checks_and_the_loader_then_healed(root: Root, materialized: Path):
    clean = stored(DataRoot(materialized / "data"))
    directory = root.data.text_embeddings("shapes", MODEL, "en")
    part = directory / "part-00002.parquet"
    _rewrite_with_nan(part, 1)
    rel = f"embeddings/shapes/text/model={MODEL}/lang=en/part-00002.parquet"
    partition = f"en|{MODEL}"
    # the embedding checks: the file and the partition
    found = root.checks(partition)
    finite = found[("embeddings/shapes_text", "finite_values")]
    assert not finite.passed and finite.description.startswith(f"[{partition}] 1 rows with NaN or inf in {rel}")
    assert finite.metadata["files"].value == [rel]
    assert found[("embeddings/shapes_text", "parts_intact")].passed  # the file itself is whole
    assert all(e.passed for (asset, _), e in found.items() if asset != "embeddings/shapes_text")
    # a metric step reading it: the partition and the file, not scikit-learn's "Input X contains NaN"
    with pytest.raises(ValueError, match=rf"shapes text embeddings \(en\) of {MODEL}: 1 of \d+ rows .* in {rel}"):
        from storage.embedding_sets import load_text_set

        load_text_set(root.data, "shapes", MODEL, "en")
    # the refresh: written after the writer stored none, so damage: named and embedded again
    done = root.materialize()
    named = [line for line in root.lines if line.startswith(f"{rel} is damaged (1 rows with NaN or inf")]
    assert len(named) == 1 and named[0].endswith(f"; re-embedding shapes text (en) for {MODEL}"), root.lines
    meta = done["embeddings/shapes_text"][partition]
    assert meta["embedded_rows"] == pq.read_metadata(part).num_rows and meta["text_layers"] is True
    assert stored(root.data) == clean
    assert all(e.passed for e in root.checks(partition).values())


def test_a_missing_or_foreign_part_and_a_damaged_manifest(root: Root, materialized: Path):
    clean = stored(DataRoot(materialized / "data"))
    images = root.data.image_embeddings("digits", MODEL)
    (images / "part-00000.parquet").unlink()
    layers = root.data.text_layers("digits", MODEL, "en")
    shutil.copy(layers / "part-00000.parquet", layers / "part-00099.parquet")
    texts = root.data.dataset_dir("shapes") / "texts.parquet"
    original = pq.read_table(texts)
    texts.write_bytes(texts.read_bytes()[:100])
    # the checks name the missing part before anything is healed
    found = root.checks(MODEL)
    intact = found[("embeddings/digits_image", "parts_intact")]
    assert not intact.passed and f"embeddings/digits/image/model={MODEL}/part-00000.parquet: missing" in \
        intact.description
    assert root.checks(f"en|{MODEL}")[("embeddings/digits_text", "parts_intact")].description.startswith(
        f"[en|{MODEL}] 1 damaged parts: embeddings/digits/text_layers/model={MODEL}/lang=en/part-00099.parquet: "
        f"not in the partition's part list")
    done = root.materialize()
    lines = "\n".join(root.lines)
    assert "datasets/shapes/texts.parquet is damaged (unreadable: " in lines
    assert f"embeddings/digits/image/model={MODEL}/part-00000.parquet is damaged (missing)" in lines
    assert f"embeddings/digits/text_layers/model={MODEL}/lang=en/part-00099.parquet is damaged (not in" in lines
    assert pq.read_table(texts).equals(original)  # the datasets run wrote it again, the same rows
    assert done["embeddings/digits_image"][MODEL]["embedded_rows"] == 5
    # every part of the text partition was intact: kept, the foreign file dropped with the directory
    assert done["embeddings/digits_text"][f"en|{MODEL}"]["embedded_rows"] == 0
    assert not (layers / "part-00099.parquet").exists()
    assert stored(root.data) == clean and root.not_fresh() == set()


def test_the_embedding_step_run_by_itself_does_not_keep_a_damaged_partition(root: Root, materialized: Path):
    """Dagster-native: a run of the image job (as the UI or the automation would launch) embeds the
    damaged part again instead of keeping the partition as complete."""
    clean = stored(DataRoot(materialized / "data"))
    part = root.data.image_embeddings("shapes", MODEL) / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:-10])
    result = root.defs.resolve_job_def("image_job").execute_in_process(
        instance=root.instance, partition_key=MODEL, asset_selection=[dg.AssetKey(["embeddings", "shapes_image"])])
    mats = [e.materialization for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    assert [m.metadata["embedded_rows"].value for m in mats] == [5] and "kept" not in mats[0].metadata
    assert stored(root.data) == clean


def test_a_part_rewritten_with_its_values_kept_is_intact(tmp_path: Path, materialized: Path):
    """A changed modification time alone (rewritten with the same values) is no damage; a partition
    without a part list (written before they were kept) is checked by its footers."""
    directory = DataRoot(tmp_path).image_embeddings("shapes", "m")
    shutil.copytree(DataRoot(materialized / "data").image_embeddings("shapes", MODEL), directory)
    part = directory / "part-00001.parquet"
    pq.write_table(pq.read_table(part), part)
    assert verify_parts(directory) == []
    (directory / PART_LIST).unlink()
    assert verify_parts(directory) == []
    part.write_bytes(b"PAR1 not a footer")
    [damage] = verify_parts(directory)
    assert damage.path == part and damage.part is None and damage.reason.startswith("unreadable: ")
    with pytest.raises(ValueError, match=r"part-00001.parquet: damaged embedding part"):
        load_image_set(DataRoot(tmp_path), "shapes", "m")


def test_damaged_lake_files_are_named(tmp_path: Path):
    lake = tmp_path / "lake" / "main" / "isotropy"
    lake.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), lake / "ok.parquet")
    (lake / "bad.parquet").write_bytes((lake / "ok.parquet").read_bytes()[:20])
    home = ConescopeHome(home=str(tmp_path), warehouse_kind="ducklake", warehouse_catalog="sqlite:catalog.sqlite")
    assert [d.path.name for d in verify_lake(home)] == ["bad.parquet"]
    assert verify_lake(ConescopeHome(home=str(tmp_path))) == []
    assert verify_files([lake / "ok.parquet"]) == []
    assert json.dumps([d.reason for d in verify_lake(home)]).count("unreadable") == 1


def test_nan_from_the_model_is_no_damage_the_check_and_the_metric_step_name_the_file(tmp_path: Path, monkeypatch,
                                                                                     capsys):
    """NaN that the tower itself produced: recorded in the part list, so not damage (never embedded again
    in a loop); the refresh prints the failed check, and the metric step stops naming the partition and
    the part file instead of scikit-learn's "Input X contains NaN"."""
    from conescope import engine

    real = engine.embed_images

    def with_nan(*args, **kwargs):
        for n, (rows, emb) in enumerate(real(*args, **kwargs)):
            if n == 1:
                emb = emb.copy()
                emb[2, 3] = np.nan
            yield rows, emb

    monkeypatch.setattr(engine, "embed_images", with_nan)
    (tmp_path / "dagster").mkdir()
    root = Root(tmp_path)
    assert not execute_plan(root.defs, full_plan(root.profile, "test"), root.instance, log=root.lines.append)
    rel = f"embeddings/shapes/image/model={MODEL}/part-00001.parquet"
    assert f"check embeddings/shapes_image finite_values failed (error): [{MODEL}] 1 rows with NaN or inf in " \
           f"{rel}" in "\n".join(root.lines), root.lines
    err = capsys.readouterr().err
    # the first metric step to read a NaN row stops the run (shapes' or digits': both got one)
    assert re.search(rf"the (shapes|digits) image embeddings of {MODEL}: 1 of \d+ rows hold NaN or inf \(first: "
                     rf"\S+\) in embeddings/\1/image/model={MODEL}/part-00001.parquet; see the embeddings' "
                     rf"finite_values check", err), err
    assert "Input X contains NaN" not in err
    listed = read_part_list(root.data.image_embeddings("shapes", MODEL))
    assert [p["nonfinite"] for p in listed["parts"]] == [0, 1, 0]
    assert verify_parts(root.data.image_embeddings("shapes", MODEL), values="all") == []
