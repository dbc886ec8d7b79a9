"""Streaming, resumable partitions: a crash or a kill keeps the committed parts, the next run embeds
only the rest and the result is the uninterrupted run's; memory does not grow with the dataset."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from conescope import engine
from conescope.embedding import text_layer_states
from conescope.model_kinds.open_clip import load_model
from storage.embedding_sets import load_text_layers
from storage.parquet_store import IMAGE_KEY_COLUMNS, read_embeddings
from storage.paths import DataRoot
from storage.resumable import MAIN, PartitionAlreadyBeingWritten, ResumablePartition, Stream

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny():
    return load_model("conescope-tiny", None, seed=0, zero_bias=False, device="cpu")


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


IMAGES = [_png(i) for i in range(23)]
IMAGES[6] = b"corrupt"
IDS = [f"s{i:03d}" for i in range(len(IMAGES))]


class Crash(RuntimeError):
    pass


def _crash_after(batches, k):
    for n, batch in enumerate(batches):
        if n == k:
            raise Crash(f"simulated crash after {k} batches")
        yield batch


def _embed_partition(tiny, root: Path, crash_after: int | None = None, key: str = "v1", part_rows: int = 4):
    """One run of the image partition; returns the positions it had to embed."""
    target = root / "emb" / "model=m"
    streams = {MAIN: Stream(target, IMAGE_KEY_COLUMNS)}
    with ResumablePartition(streams, root / "tmp", {"model": "m"}, {"model": "m", "key": key},
                            part_rows=part_rows) as part:
        pending = [i for i, sid in enumerate(IDS) if sid not in part.done_keys]
        batches = engine.embed_images(tiny, IMAGES, engine.EngineSettings(4, 0), pending,
                                      on_reject=lambda i, why: part.reject(i, IDS[i], why))
        if crash_after is not None:
            batches = _crash_after(batches, crash_after)
        for rows, emb in batches:
            part.write(rows, {MAIN: ({"sample_id": [IDS[i] for i in rows]}, emb)})
        part.finalize()
    return pending, part


def test_resume_after_a_crash_gives_the_uninterrupted_result(tiny, tmp_path):
    _embed_partition(tiny, tmp_path / "clean")
    clean_keys, clean = read_embeddings(tmp_path / "clean" / "emb" / "model=m")

    root = tmp_path / "crashed"
    with pytest.raises(Crash):
        _embed_partition(tiny, root, crash_after=3)
    assert not (root / "emb" / "model=m").exists(), "an unfinished partition is never visible"
    pending, part = _embed_partition(tiny, root)
    # Batches 0-2 (positions 0-11, 6 rejected) were committed: only the rest is embedded again,
    # and the rejected sample is reported from the committed part without being decoded again.
    assert pending == list(range(12, len(IMAGES)))
    assert part.resumed_rows == 11
    assert [(r["key"], r["position"]) for r in part.previous_rejects] == [("s006", 6)]
    keys, emb = read_embeddings(root / "emb" / "model=m")
    ids = keys.column("sample_id").to_pylist()
    assert ids == clean_keys.column("sample_id").to_pylist() == [s for s in IDS if s != "s006"]
    assert len(set(ids)) == len(ids)
    np.testing.assert_array_equal(emb, clean)
    assert not (root / "tmp" / "resume").exists(), "staging is removed once the partition is complete"


def test_a_part_whose_files_are_gone_is_embedded_again(tiny, tmp_path):
    with pytest.raises(Crash):
        _embed_partition(tiny, tmp_path, crash_after=3)
    staging = next((tmp_path / "tmp" / "resume").glob("*/*"))
    (staging / "main-000001.parquet").unlink()  # e.g. moved by a finalize that was cut short
    pending, part = _embed_partition(tiny, tmp_path)
    assert pending == list(range(4, len(IMAGES)))
    keys, _ = read_embeddings(tmp_path / "emb" / "model=m")
    assert keys.column("sample_id").to_pylist() == [s for s in IDS if s != "s006"]


def test_a_crash_before_any_commit_leaves_nothing_and_the_rerun_embeds_everything(tiny, tmp_path):
    with pytest.raises(Crash):
        _embed_partition(tiny, tmp_path, crash_after=2, part_rows=1000)
    pending, part = _embed_partition(tiny, tmp_path, part_rows=1000)
    assert pending == list(range(len(IMAGES))) and part.resumed_rows == 0


def test_other_provenance_starts_from_scratch_and_stale_staging_is_removed(tiny, tmp_path):
    with pytest.raises(Crash):
        _embed_partition(tiny, tmp_path, crash_after=3, key="old-weights")
    pending, _ = _embed_partition(tiny, tmp_path, key="new-weights")
    assert pending == list(range(len(IMAGES)))
    assert not (tmp_path / "tmp" / "resume").exists()


def test_two_runs_never_write_one_partition_at_once(tmp_path):
    streams = {MAIN: Stream(tmp_path / "emb", IMAGE_KEY_COLUMNS)}
    with ResumablePartition(streams, tmp_path / "tmp", {}, {"k": 1}), \
            pytest.raises(PartitionAlreadyBeingWritten, match="another run is writing"), \
            ResumablePartition(streams, tmp_path / "tmp", {}, {"k": 1}):
        pass


def test_all_rejected_is_an_error_naming_the_partition(tmp_path):
    streams = {MAIN: Stream(tmp_path / "model=m", IMAGE_KEY_COLUMNS)}
    with ResumablePartition(streams, tmp_path / "tmp", {}, {}) as part, \
            pytest.raises(ValueError, match="model=m: no embeddings were produced"):
        part.reject(0, "s0", "broken")
        part.finalize()


# --- killed process -------------------------------------------------------------------------------

_WRITER = """
import sys, time
import numpy as np
from pathlib import Path
from storage.parquet_store import IMAGE_KEY_COLUMNS
from storage.resumable import MAIN, ResumablePartition, Stream

root, n, delay = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
ids = [f"s{i:04d}" for i in range(n)]
with ResumablePartition({MAIN: Stream(root / "emb", IMAGE_KEY_COLUMNS)}, root / "tmp", {"model": "fake"},
                        {"model": "fake"}, part_rows=10) as part:
    pending = [i for i in range(n) if ids[i] not in part.done_keys]
    print(pending[0] if pending else -1, flush=True)
    for start in range(0, len(pending), 5):
        rows = np.asarray(pending[start:start + 5])
        emb = np.stack([np.random.default_rng(int(i)).normal(size=8) for i in rows]).astype(np.float32)
        part.write(rows, {MAIN: ({"sample_id": [ids[i] for i in rows]}, emb)})
        time.sleep(delay)
    part.finalize()
"""


def _writer(root: Path, n: int, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(n), str(delay)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_resume_after_the_process_is_killed(tmp_path):
    clean = _writer(tmp_path / "clean", 80, 0.0)
    assert clean.wait(timeout=60) == 0
    proc = _writer(tmp_path / "killed", 80, 0.2)
    staging = tmp_path / "killed" / "tmp" / "resume"
    deadline = time.monotonic() + 60
    while len(list(staging.rglob("commit-*.json"))) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "the writer never committed two parts"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (tmp_path / "killed" / "emb").exists()
    rerun = _writer(tmp_path / "killed", 80, 0.0)
    first_pending = int(rerun.stdout.readline())
    assert rerun.wait(timeout=60) == 0
    assert 20 <= first_pending < 80  # two parts of 10 rows or more survived the kill
    keys, emb = read_embeddings(tmp_path / "killed" / "emb")
    clean_keys, clean_emb = read_embeddings(tmp_path / "clean" / "emb")
    assert keys.column("sample_id").to_pylist() == clean_keys.column("sample_id").to_pylist() == [
        f"s{i:04d}" for i in range(80)]
    np.testing.assert_array_equal(emb, clean_emb)


# --- text layers ----------------------------------------------------------------------------------

def test_text_layer_states_are_stored_with_the_embeddings_and_read_back(tiny, tmp_path):
    from assets.embeddings import LAYER_KEY_COLUMNS, LAYERS

    root = DataRoot(tmp_path)
    texts = ["a red circle", "a blue square", "ein Stern", "une étoile", "seven", "x", "y", "z", "w"]
    ids = [f"t{i}" for i in range(len(texts))]
    streams = {MAIN: Stream(root.text_embeddings("d", "m", "en"), [("text_id", pa.string())]),
               LAYERS: Stream(root.text_layers("d", "m", "en"), LAYER_KEY_COLUMNS, vector="state")}

    def run(crash_after=None):
        with ResumablePartition(streams, root.scratch, {}, {}, part_rows=2) as part:
            pending = [i for i, t in enumerate(ids) if t not in part.done_keys]
            batches = engine.embed_texts(tiny, texts, engine.EngineSettings(2, 0), pending, with_layers=True)
            for rows, emb, layers in batches if crash_after is None else _crash_after(batches, crash_after):
                n_layers = layers.shape[1]
                part.write(rows, {MAIN: ({"text_id": [ids[i] for i in rows]}, emb),
                                  LAYERS: ({"text_id": [ids[i] for i in rows for _ in range(n_layers)],
                                            "layer": np.tile(np.arange(n_layers), len(rows))},
                                           layers.reshape(-1, layers.shape[2]))})
            part.finalize()

    with pytest.raises(Crash):
        run(crash_after=2)
    run()
    stored = load_text_layers(root, "d", "m", "en", np.asarray(ids, dtype=object))
    reference = text_layer_states(tiny, texts, batch_size=2)
    assert len(stored) == len(reference) == 3
    for got, ref in zip(stored, reference, strict=True):
        np.testing.assert_array_equal(got, ref)
    # States that do not cover the texts asked for are an error; no states at all are None.
    with pytest.raises(ValueError, match="do not match the text embeddings"):
        load_text_layers(root, "d", "m", "en", np.asarray(ids[::-1], dtype=object))
    assert load_text_layers(root, "d", "m", "fr", np.asarray(ids, dtype=object)) is None


# --- bounded memory --------------------------------------------------------------------------------

_MEMORY = """
import json, sys, tempfile, tracemalloc
from pathlib import Path
import numpy as np, pyarrow as pa, torch
from PIL import Image
from torchvision.transforms import ToTensor
from conescope import engine
from conescope.model_kinds.open_clip import LoadedModel
from storage.parquet_store import IMAGE_KEY_COLUMNS
from storage.resumable import MAIN, ResumablePartition, Stream

BATCH, DIM = int(sys.argv[1]), int(sys.argv[2])


class Wide:
    # A tower with wide outputs (DIM floats a row), so that keeping rows would show in the peak.
    def encode_image(self, x, normalize=False):
        return x.reshape(len(x), -1)[:, :1] * torch.ones(1, DIM) + torch.arange(DIM)


tmp = Path(tempfile.mkdtemp())
paths = []
for i in range(8):
    paths.append(str(tmp / f"{i}.png"))
    Image.fromarray(np.full((32, 32, 3), i * 20, np.uint8)).save(paths[-1])
loaded = LoadedModel(Wide(), ToTensor(), None, "cpu", {})


def run(name, n, keep=False):
    # Peak MB above the start of the run: Python and numpy (tracemalloc), Arrow (its memory pool).
    images = [paths[i % len(paths)] for i in range(n)]
    kept = []
    streams = {MAIN: Stream(tmp / name, IMAGE_KEY_COLUMNS)}
    arrow_base, arrow_peak = pa.total_allocated_bytes(), 0
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    with ResumablePartition(streams, tmp / "scratch", {}, {"run": name}, part_rows=4 * BATCH) as part:
        for rows, emb in engine.embed_images(loaded, images, engine.EngineSettings(BATCH, 0)):
            part.write(rows, {MAIN: ({"sample_id": [str(i) for i in rows]}, emb)})
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_base)
            if keep:
                kept.append(emb)
        part.finalize()
    return (tracemalloc.get_traced_memory()[1] - base) / 2**20, arrow_peak / 2**20


tracemalloc.start()
run("warm-up", 2 * BATCH)
streamed, streamed_arrow = run("streamed", 20 * BATCH)
kept, _ = run("kept", 20 * BATCH, keep=True)
print(json.dumps({"streamed_mb": streamed, "streamed_arrow_mb": streamed_arrow, "kept_mb": kept,
                  "batch_mb": BATCH * DIM * 4 / 2**20}))
"""


def test_peak_memory_scales_with_the_batch_not_the_dataset():
    # In a fresh process, so that nothing else the suite did counts.
    out = subprocess.run([sys.executable, "-c", _MEMORY, "32", "16384"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # 20 batches streamed through the engine and the writer: the peak is a few batches (the batch,
    # its copy for Arrow, its norms), while keeping the rows (the control, measured the same way)
    # costs the whole dataset.
    batch, dataset = figures["batch_mb"], 20 * figures["batch_mb"]
    assert figures["streamed_mb"] < 4 * batch and figures["streamed_arrow_mb"] < 4 * batch, figures
    assert figures["kept_mb"] > 0.9 * dataset, figures
