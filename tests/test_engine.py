"""The embedding engine: device and precision choice, out-of-memory back-off, decoding workers,
corrupt images, text layers, progress, lazy manifest columns."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conescope import engine
from conescope.embedding import text_layer_states
from conescope.model_kinds.open_clip import LoadedModel, load_model
from conescope.models import resolve_device, resolve_precision
from storage.parquet_store import ParquetColumn

TEXTS = ["a red circle", "a blue square in the centre", "ein grüner Stern", "une étoile", "digit seven", "x", "y"]


@pytest.fixture(scope="module")
def tiny():
    return load_model("conescope-tiny", None, seed=0, zero_bias=False, device="cpu")


def _png(seed: int, size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


IMAGES = [_png(i) for i in range(11)]


def _all(batches):
    batches = list(batches)
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


# --- device, precision, loader ---------------------------------------------------------------------

def test_device_is_cuda_when_present_and_can_be_forced(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="embedding.device is 'cuda'"):
        resolve_device("cuda")


def test_auto_precision_is_bf16_where_the_hardware_runs_it_natively(monkeypatch):
    import conescope.models as models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == resolve_precision("auto", "cuda:1") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp32"  # older GPUs: fp16 only when asked for
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert models.native_bf16("cpu") and resolve_precision("auto", "cpu") == "bf16"
    assert [resolve_precision(p, "cpu") for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with pytest.raises(ValueError, match="embedding.precision must be one of auto, fp32, bf16, fp16, got 'int8'"):
        resolve_precision("int8", "cpu")


def test_loader_pins_memory_only_for_cuda_and_batch_size_defaults_by_device():
    assert engine.loader_options("cuda", 4, 2) == {"num_workers": 4, "pin_memory": True, "prefetch_factor": 2,
                                                   "multiprocessing_context": "fork"}
    assert engine.loader_options("cpu", 0, 2) == {"num_workers": 0, "pin_memory": False}
    auto = engine.EngineSettings()
    assert auto.resolved_batch_size("cuda") == 256 and auto.resolved_batch_size("cpu") == 32
    assert engine.EngineSettings(batch_size=7).resolved_batch_size("cuda") == 7
    assert engine.EngineSettings(workers=0).resolved_workers("cuda") == 0


def test_default_workers_follow_the_cpus_and_the_device(monkeypatch):
    auto = engine.EngineSettings()
    monkeypatch.setattr(engine, "cpu_count", lambda: 64)
    assert auto.resolved_workers("cuda") == 16 and auto.resolved_workers("cpu") == 1
    monkeypatch.setattr(engine, "cpu_count", lambda: 8)
    assert auto.resolved_workers("cuda:1") == 8
    monkeypatch.setattr(engine, "cpu_count", lambda: 2)
    assert auto.resolved_workers("cuda") == 2 and auto.resolved_workers("cpu") == 0


def test_concurrent_steps_claim_different_gpus(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    with engine.claimed_device("auto", tmp_path) as a, engine.claimed_device("cuda", tmp_path) as b:
        with engine.claimed_device("auto", tmp_path) as c:
            assert (a, b, c) == ("cuda:0", "cuda:1", "cuda:2")
        with engine.claimed_device("auto", tmp_path) as again:
            assert again == "cuda:2"  # released by the step that held it
    with engine.claimed_device("auto", tmp_path) as first:
        assert first == "cuda:0"
    with engine.claimed_device("cpu", tmp_path) as cpu:
        assert cpu == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with engine.claimed_device("auto", tmp_path) as only:
        assert only == "cuda"


@pytest.fixture(scope="module")
def tiny_bf16():
    return load_model("conescope-tiny", None, seed=0, zero_bias=False, device="cpu", precision="bf16")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bf16_weights_give_float32_rows_close_to_fp32(tiny, tiny_bf16):
    # The weights themselves are bfloat16 (not autocast over float32 weights); rows come back float32.
    assert {p.dtype for p in tiny_bf16.model.parameters()} == {torch.bfloat16}
    assert tiny_bf16.provenance["precision"] == "bf16" and tiny.provenance["precision"] == "fp32"
    assert tiny_bf16.logit_scale == tiny.logit_scale == pytest.approx(1 / 0.07)  # read before the cast
    run = engine.EngineRun()
    rows, emb = _all(engine.embed_images(tiny_bf16, IMAGES, engine.EngineSettings(4, 0), run=run))
    _, ref = _all(engine.embed_images(tiny, IMAGES, engine.EngineSettings(4, 0)))
    assert run.precision == "bf16" and emb.dtype == np.float32 and rows.tolist() == list(range(len(IMAGES)))
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9 per operation): a two-block tower stays
    # within a cosine of 0.999 of its float32 rows (measured: above 0.9998), yet is not identical.
    cos = _cosines(emb, ref)
    assert cos.min() > 0.999 and not np.array_equal(emb, ref)
    out = list(engine.embed_texts(tiny_bf16, TEXTS, engine.EngineSettings(3, 0), with_layers=True))
    text = np.concatenate([e for _, e, _ in out])
    layers = np.concatenate([lay for _, _, lay in out])
    ref_text = np.concatenate([e for _, e, _ in engine.embed_texts(tiny, TEXTS, engine.EngineSettings(3, 0))])
    assert text.dtype == layers.dtype == np.float32 and _cosines(text, ref_text).min() > 0.999


def test_batches_reach_the_device_in_the_weights_dtype_and_tokens_stay_integers(tiny, tiny_bf16):
    images, tokens = torch.rand(2, 3, 32, 32), torch.tensor([[1, 2, 3]])
    assert engine._to_device(images, tiny_bf16).dtype == torch.bfloat16
    assert engine._to_device(images, tiny).dtype == torch.float32
    assert engine._to_device(tokens, tiny_bf16).dtype == torch.int64


# --- out-of-memory back-off -------------------------------------------------------------------------

def test_batch_sizer_halves_on_out_of_memory_and_keeps_every_row():
    calls = []

    def encode(chunk):
        calls.append(len(chunk))
        if len(chunk) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return chunk * 2

    sizer = engine.BatchSizer(16)
    out = sizer.run(encode, np.arange(10), 10)
    np.testing.assert_array_equal(np.concatenate(out), np.arange(10) * 2)
    assert sizer.backoffs == [16, 8, 4] and sizer.size == 2
    assert calls == [10, 8, 4, 2, 2, 2, 2, 2]
    # The size it settled on carries over to the next batch.
    assert [len(c) for c in sizer.run(lambda c: c, np.arange(5), 5)] == [2, 2, 1]


def test_out_of_memory_at_batch_size_one_is_raised():
    def encode(chunk):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine.BatchSizer(4).run(encode, np.arange(3), 3)


class _SmallMemoryModel:
    """The tiny model behind an encoder that runs out of memory above ``limit`` rows."""

    def __init__(self, model, limit: int):
        self.model, self.limit = model, limit

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode_image(self, x, normalize=False):
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory ({x.shape[0]} rows)")
        return self.model.encode_image(x, normalize=normalize)


def test_engine_backs_off_and_embeds_the_same_rows(tiny):
    _, ref = _all(engine.embed_images(tiny, IMAGES, engine.EngineSettings(1, 0)))
    small = LoadedModel(_SmallMemoryModel(tiny.model, 2), tiny.preprocess, tiny.tokenizer, "cpu", tiny.provenance)
    run = engine.EngineRun()
    rows, emb = _all(engine.embed_images(small, IMAGES, engine.EngineSettings(8, 0), run=run))
    assert rows.tolist() == list(range(len(IMAGES)))
    assert run.backoffs == [8, 4] and run.batch_size == 2 and run.rows == len(IMAGES)
    np.testing.assert_allclose(emb, ref, rtol=1e-4, atol=1e-5)


# --- decoding workers, corrupt images ---------------------------------------------------------------

def test_decoding_workers_give_the_rows_of_the_main_process(tiny):
    rows0, emb0 = _all(engine.embed_images(tiny, IMAGES, engine.EngineSettings(4, 0)))
    run = engine.EngineRun()
    rows2, emb2 = _all(engine.embed_images(tiny, IMAGES, engine.EngineSettings(4, 2), run=run))
    assert run.workers == 2
    assert rows2.tolist() == rows0.tolist() == list(range(len(IMAGES)))
    np.testing.assert_array_equal(emb2, emb0)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_is_reported_and_the_rest_of_its_batch_kept(tiny, workers):
    images = list(IMAGES[:6])
    images[1], images[4] = b"not an image at all", IMAGES[4][:40]  # garbage, truncated PNG
    rejected = []
    batches = list(engine.embed_images(tiny, images, engine.EngineSettings(3, workers),
                                       on_reject=lambda i, why: rejected.append((i, why))))
    assert [b[0].tolist() for b in batches] == [[0, 2], [3, 5]]
    assert [i for i, _ in rejected] == [1, 4] and all("could not be decoded" in why for _, why in rejected)
    _, ref = _all(engine.embed_images(tiny, [IMAGES[i] for i in (0, 2, 3, 5)], engine.EngineSettings(1, 0)))
    np.testing.assert_allclose(np.concatenate([b[1] for b in batches]), ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="image at position 1"):
        list(engine.embed_images(tiny, images, engine.EngineSettings(3, 0)))


def test_positions_select_and_order_the_samples(tiny, tmp_path):
    paths = []
    for i in (0, 3, 5):  # file paths work as sources as well as bytes
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(IMAGES[i])
    rows, emb = _all(engine.embed_images(tiny, IMAGES, engine.EngineSettings(2, 0), positions=[0, 3, 5]))
    assert rows.tolist() == [0, 3, 5]
    _, from_files = _all(engine.embed_images(tiny, [str(p) for p in paths], engine.EngineSettings(2, 0)))
    np.testing.assert_array_equal(emb, from_files)


# --- texts ------------------------------------------------------------------------------------------

def test_texts_in_batches_with_layers_match_the_reference_states(tiny):
    run = engine.EngineRun()
    settings = engine.EngineSettings(3, 2, text_workers=2)
    out = list(engine.embed_texts(tiny, TEXTS, settings, with_layers=True, run=run))
    assert run.workers == 2 and [len(r) for r, _, _ in out] == [3, 3, 1]
    layers = np.concatenate([lay for _, _, lay in out])
    assert layers.shape == (len(TEXTS), 3, 64)
    reference = text_layer_states(tiny, TEXTS, batch_size=len(TEXTS))
    for i, ref in enumerate(reference):
        np.testing.assert_allclose(layers[:, i], ref, rtol=1e-4, atol=1e-5)
    cpu_run = engine.EngineRun()
    plain = np.concatenate([e for _, e, _ in engine.embed_texts(tiny, TEXTS, engine.EngineSettings(3, 2),
                                                                run=cpu_run)])
    assert cpu_run.workers == 0  # on the CPU texts are tokenized in process unless asked otherwise
    np.testing.assert_array_equal(np.concatenate([e for _, e, _ in out]), plain)


def test_a_repeated_text_is_embedded_once_and_every_row_comes_back(tiny):
    texts = ["a red circle", "a blue star", "a red circle", "x", "a blue star", "a red circle", "y", "x", "z"]
    run = engine.EngineRun()
    out = list(engine.embed_texts(tiny, texts, engine.EngineSettings(2, 0), with_layers=True, run=run))
    rows = np.concatenate([r for r, _, _ in out])
    emb, layers = np.concatenate([e for _, e, _ in out]), np.concatenate([lay for _, _, lay in out])
    assert rows.tolist() == list(range(len(texts))) and run.rows == len(texts)
    assert run.embedded == len(set(texts)) == 5
    # each row equals the text embedded on its own, as when every row is run through the tower
    for i, text in enumerate(texts):
        _, alone, alone_layers = next(engine.embed_texts(tiny, [text], engine.EngineSettings(1, 0), with_layers=True))
        np.testing.assert_allclose(emb[i], alone[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layers[i], alone_layers[0], rtol=1e-4, atol=1e-5)


def test_text_groups_hold_a_repeat_only_until_its_last_row_and_within_the_limit():
    texts = ["a", "b", "a", "c", "d", "b", "e", "a"]
    groups = engine.plan_text_groups(texts, range(len(texts)), batch_size=2, max_rows=3)
    assert [g.rows for g in groups] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [g.new for g in groups] == [[0, 1], [3, 4], [6]]
    assert [g.keep for g in groups] == [["a", "b"], [], []]
    assert [g.expire for g in groups] == [[], ["b"], ["a"]]
    # with room for one held text, the second repeat is embedded again where it recurs
    limited = engine.plan_text_groups(texts, range(len(texts)), batch_size=2, max_rows=3, cache_limit=1)
    assert [g.new for g in limited] == [[0, 1], [3, 4], [5, 6]] and limited[0].keep == ["a"]
    # positions (a resumed run) are planned in the caller's order
    assert [g.rows for g in engine.plan_text_groups(texts, [1, 5, 7], batch_size=4)] == [[1, 5, 7]]


# --- progress ---------------------------------------------------------------------------------------

def test_progress_reports_rate_and_eta_at_most_every_interval():
    now = [0.0]
    lines = []
    progress = engine.Progress("shapes images", 100, lines.append, every_s=10, done_before=20, clock=lambda: now[0])
    now[0] = 4.0
    progress.update(20)
    assert lines == []  # too soon
    now[0] = 10.0
    progress.update(20)  # 40 embedded in 10 s, 40 left
    assert lines == ["shapes images: 60/100 (4.0/s, ETA 10 s, 20 from an earlier run)"]
    now[0] = 15.0
    progress.update(30)
    progress.finish()
    progress.finish()
    assert lines[-1] == "shapes images: 90/100 (4.7/s, ETA 2 s, 20 from an earlier run)" and len(lines) == 2


# --- lazy manifest column ---------------------------------------------------------------------------

def test_parquet_column_reads_row_groups_lazily(tmp_path):
    values = [f"v{i}".encode() for i in range(23)]
    pq.write_table(pa.table({"image": values}), tmp_path / "m.parquet", row_group_size=5)
    column = ParquetColumn(tmp_path / "m.parquet", "image")
    assert len(column) == 23
    assert [column[i] for i in (0, 4, 5, 22, 3)] == [values[i] for i in (0, 4, 5, 22, 3)]
    import pickle

    copy = pickle.loads(pickle.dumps(column))  # what a spawned decoding worker receives
    assert copy[22] == values[22] and copy._values is not None and column._group == 0
    with pytest.raises(IndexError, match="row 23 out of range"):
        column[23]
    with pytest.raises(KeyError, match="no column 'text'"):
        ParquetColumn(tmp_path / "m.parquet", "text")


def test_no_inference_mode_or_hooks_leak_between_batches(tiny):
    hooks_before = len(tiny.model.transformer._forward_pre_hooks)
    batches = engine.embed_texts(tiny, TEXTS, engine.EngineSettings(3, 0), with_layers=True)
    next(batches)
    assert not torch.is_inference_mode_enabled()
    assert len(tiny.model.transformer._forward_pre_hooks) == hooks_before
    images = engine.embed_images(tiny, IMAGES, engine.EngineSettings(4, 0))
    next(images)
    assert not torch.is_inference_mode_enabled()
