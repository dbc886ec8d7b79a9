"""Parquet store and warehouse: atomic writes, partition-exact replacement, clear errors."""

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from conescope.embedding import embed_images
from conescope.model_kinds.open_clip import load_model
from storage.parquet_store import (
    IMAGE_KEY_COLUMNS,
    atomic_directory,
    read_embeddings,
    read_provenance,
    write_embeddings,
)
from storage.warehouse import Warehouse, metric_rows


def test_embeddings_round_trip_with_provenance(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(3, 6)).astype(np.float32)]
    batches = [({"sample_id": [f"s{i}" for i in range(4)]}, chunks[0]),
               ({"sample_id": [f"s{i}" for i in range(4, 7)]}, chunks[1])]
    target = tmp_path / "emb" / "model=m"
    assert write_embeddings(target, tmp_path / "scratch", IMAGE_KEY_COLUMNS, batches, {"model": "m"}) == 7
    keys, emb = read_embeddings(target)
    assert keys.column("sample_id").to_pylist() == [f"s{i}" for i in range(7)]
    np.testing.assert_array_equal(emb, np.vstack(chunks))
    assert read_provenance(target / "part-00000.parquet") == {"model": "m", "dim": 6}


def test_failed_write_keeps_the_previous_version(tmp_path):
    target, scratch = tmp_path / "out", tmp_path / "scratch"
    with atomic_directory(target, scratch) as staging:
        (staging / "a.txt").write_text("old")

    def failing():
        yield {"sample_id": ["x"]}, np.ones((1, 2), np.float32)
        raise RuntimeError("tower crashed")

    with pytest.raises(RuntimeError, match="tower crashed"):
        write_embeddings(target, scratch, IMAGE_KEY_COLUMNS, failing(), {})
    assert (target / "a.txt").read_text() == "old"
    assert list(scratch.iterdir()) == []


def test_no_embeddings_is_an_error_naming_the_partition(tmp_path):
    with pytest.raises(ValueError, match="model=m: no embeddings"):
        write_embeddings(tmp_path / "model=m", tmp_path / "s", IMAGE_KEY_COLUMNS, iter([]), {})
    with pytest.raises(FileNotFoundError, match="materialize the embedding asset"):
        read_embeddings(tmp_path / "nowhere")


def _rows(model, lang, value):
    return metric_rows([{"dataset": "d", "model": model, "lang": lang, "modality": "text", "metric": "i1",
                         "value": value, "n": 3}])


def test_replace_rows_is_partition_exact(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_rows("metrics.isotropy", _rows("a", "en", 1.0), {"model": "a", "lang": "en"})
    wh.replace_rows("metrics.isotropy", _rows("a", "fr", 2.0), {"model": "a", "lang": "fr"})
    assert wh.replace_rows("metrics.isotropy", _rows("a", "en", 3.0), {"model": "a", "lang": "en"}) == 1
    with wh.connect(read_only=True) as con:
        rows = con.execute("SELECT lang, value FROM metrics.isotropy ORDER BY lang").fetchall()
    assert rows == [("en", 3.0), ("fr", 2.0)]


def test_replace_rows_refuses_rows_of_another_partition(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_rows("metrics.isotropy", _rows("a", "en", 1.0), {"model": "a", "lang": "en"})
    with pytest.raises(ValueError, match="rows outside the partition"):
        wh.replace_rows("metrics.isotropy", _rows("a", "fr", 2.0), {"model": "a", "lang": "en"})
    with pytest.raises(ValueError, match="without a partition filter"):
        wh.replace_rows("metrics.isotropy", _rows("a", "en", 2.0), {})
    with wh.connect(read_only=True) as con:
        assert con.execute("SELECT value FROM metrics.isotropy").fetchall() == [(1.0,)]


def test_failed_insert_rolls_back_the_delete(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_rows("metrics.isotropy", _rows("a", "en", 1.0), {"model": "a", "lang": "en"})
    bad = pa.table({"model": ["a"], "lang": ["en"], "value": ["not a number"]})
    with pytest.raises(Exception):  # noqa: B017 - duckdb's conversion error class varies by version
        wh.replace_rows("metrics.isotropy", bad, {"model": "a", "lang": "en"})
    with wh.connect(read_only=True) as con:
        assert con.execute("SELECT value FROM metrics.isotropy").fetchall() == [(1.0,)]


def test_metric_rows_reject_columns_outside_the_contract():
    with pytest.raises(ValueError, match="outside the contract"):
        metric_rows([{"model": "a", "score": 1.0}])


def test_read_only_without_a_warehouse_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="conescope materialize"), \
            Warehouse(tmp_path / "none.duckdb").connect(read_only=True):
        pass


def test_corrupt_image_is_skipped_and_the_rest_of_the_batch_kept():
    loaded = load_model("conescope-tiny", None, seed=0, zero_bias=False, device="cpu")
    good = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(good, format="PNG")
    images = [good.getvalue(), b"not an image at all", good.getvalue()]
    rejected = []
    batches = list(embed_images(loaded, images, batch_size=3, on_reject=lambda i, why: rejected.append((i, why))))
    assert len(batches) == 1
    rows, emb = batches[0]
    assert rows.tolist() == [0, 2] and emb.shape == (2, 32)
    assert rejected[0][0] == 1 and "could not be decoded" in rejected[0][1]


def test_raw_and_transform_rows_share_a_partition_without_deleting_each_other(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")

    def rows(transform, value):
        return metric_rows([{"dataset": "d", "model": "a", "lang": "en", "modality": "text", "metric": "i1",
                             "value": value, "n": 3, "transform": transform}], "metrics.isotropy")

    raw = {"model": "a", "lang": "en", "transform": "none"}  # the raw metric assets' filter
    part = {"model": "a", "lang": "en"}
    wh.replace_rows("metrics.isotropy", rows("none", 1.0), raw)
    wh.replace_tables({"metrics.isotropy": rows("centering", 2.0), "metrics.clip_loss": rows("centering", 5.0)},
                      part, {"transform": "none"})
    assert wh.replace_rows("metrics.isotropy", rows("none", 3.0), raw) == 1
    assert wh.replace_tables({"metrics.isotropy": rows("pca_4", 4.0), "metrics.clip_loss": rows("pca_4", 6.0)},
                             part, {"transform": "none"}) == {"metrics.isotropy": 1, "metrics.clip_loss": 1}
    with wh.connect(read_only=True) as con:
        got = con.execute("SELECT transform, value FROM metrics.isotropy ORDER BY value").fetchall()
        assert con.execute("SELECT transform, value FROM metrics.clip_loss").fetchall() == [("pca_4", 6.0)]
    assert got == [("none", 3.0), ("pca_4", 4.0)]
    with pytest.raises(ValueError, match="outside this writer's filter"):
        wh.replace_tables({"metrics.isotropy": rows("none", 9.0)}, part, {"transform": "none"})


def test_replace_tables_is_all_or_nothing(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    good = metric_rows([{"dataset": "d", "model": "a", "lang": "en", "modality": "text", "metric": "loss",
                         "value": 1.0, "n": 3, "transform": "lstsq"}], "metrics.clip_loss")
    wh.replace_tables({"metrics.clip_loss": good}, {"model": "a", "lang": "en"}, {"transform": "none"})
    bad = pa.table({"model": ["a"], "lang": ["en"], "transform": ["lstsq"], "value": ["not a number"]})
    with pytest.raises(Exception):  # noqa: B017 - duckdb's conversion error class varies by version
        wh.replace_tables({"metrics.clip_loss": good, "metrics.isotropy": bad}, {"model": "a", "lang": "en"},
                          {"transform": "none"})
    with wh.connect(read_only=True) as con:
        assert con.execute("SELECT value FROM metrics.clip_loss").fetchall() == [(1.0,)]


def _write_and_hang(target: str, scratch: str, ready) -> None:
    from pathlib import Path

    with atomic_directory(Path(target), Path(scratch)) as staging:
        (staging / "samples.parquet").write_bytes(b"half written")
        ready.set()
        import time

        time.sleep(600)


def test_staging_of_a_killed_write_is_removed_once_its_target_is_in_place(tmp_path):
    """A writer killed in the middle of a directory write leaves its staging; the next successful
    write of the same target removes it, and keeps a live writer's staging and other targets'."""
    import multiprocessing as mp
    import os
    import signal

    scratch, target, other = tmp_path / "tmp", tmp_path / "datasets" / "shapes", tmp_path / "datasets" / "digits"
    ctx = mp.get_context("fork")
    staged = []
    for victim_target in (target, other):
        ready = ctx.Event()
        victim = ctx.Process(target=_write_and_hang, args=(str(victim_target), str(scratch), ready))
        victim.start()
        assert ready.wait(60)
        os.kill(victim.pid, signal.SIGKILL)
        victim.join()
        staged.append({p for p in scratch.glob("new-*") if p.is_dir()} - set().union(*staged))
    ready = ctx.Event()
    live = ctx.Process(target=_write_and_hang, args=(str(target), str(scratch), ready))
    live.start()
    try:
        assert ready.wait(60)
        live_staging = {p for p in scratch.glob("new-*") if p.is_dir()} - staged[0] - staged[1]
        assert all(len(s) == 1 for s in (*staged, live_staging))
        with atomic_directory(target, scratch) as staging:
            (staging / "samples.parquet").write_bytes(b"complete")
        assert (target / "samples.parquet").read_bytes() == b"complete"
        left = {p for p in scratch.glob("new-*") if p.is_dir()}
        assert left == staged[1] | live_staging, "the dead writer's staging of this target is gone, no other"
    finally:
        live.kill()
        live.join()
