"""The embedding engine: image and text towers over many samples, as fast as the hardware allows.

- Images are decoded and preprocessed in ``torch.utils.data.DataLoader`` worker processes (count
  from the settings, default one per CPU up to 16), batched there, and pinned in page-locked memory
  when the model runs on CUDA, so decoding overlaps the forward pass.
- The forward pass runs under ``torch.inference_mode``; on CUDA under autocast (bfloat16 where the
  device supports it, else float16), on the CPU in float32. Outputs are returned as float32.
- The loader batch is split into micro-batches of the current batch size; a CUDA out-of-memory error
  halves that size and retries the same micro-batch, so an automatic batch size settles on what fits.
- Texts are tokenized a batch at a time (in the loader's collate function).
- A sample whose image cannot be decoded is reported through ``on_reject`` and dropped from its
  batch; the other samples of the batch are embedded.

Every iterator yields ``(rows, embeddings)``: the positions (in the caller's sequence) of the rows
embedded, ascending, and their float32 ``(n, d)`` raw tower outputs (not normalized).
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from conescope.file_lock import try_lock
from conescope.models import LoadedModel

MAX_DEFAULT_WORKERS = 16
AUTO_BATCH = {"cuda": 256, "cpu": 32}  # first try of the automatic batch size; CUDA backs off on OOM


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, which containers and taskset restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(device: str) -> int:
    """One decoding process per CPU (at most 16) when a GPU runs the model. On the CPU device the
    cores run the model and decoding is a few percent of a ViT's forward pass: one process overlaps
    it where there are more than two cores; on two or fewer, a worker only preempts the forward
    pass's threads (measured with bench/embed.py on two cores), so decoding stays in process."""
    if device.startswith("cuda"):
        return min(cpu_count(), MAX_DEFAULT_WORKERS)
    return 1 if cpu_count() > 2 else 0


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs. ``batch_size`` None: automatic (AUTO_BATCH of the device, halved on
    out-of-memory); ``workers`` None: see default_workers; 0 decodes in the calling process."""

    batch_size: int | None = None
    workers: int | None = None
    prefetch: int = 2  # batches each worker prepares ahead
    # Tokenizing processes; None: ``workers`` on CUDA, none on the CPU, where tokenizing is a sliver
    # of the forward pass and extra processes only compete with it for cores.
    text_workers: int | None = None

    def resolved_batch_size(self, device: str) -> int:
        return self.batch_size or AUTO_BATCH["cuda" if device.startswith("cuda") else "cpu"]

    def resolved_workers(self, device: str) -> int:
        return default_workers(device) if self.workers is None else self.workers


def autocast_dtype(device: str) -> torch.dtype | None:
    """bfloat16 on CUDA devices that support it, float16 on older ones, None (float32) elsewhere."""
    if not device.startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16-autocast", torch.float16: "fp16-autocast"}[dtype]


def _autocast(device: str, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def loader_options(device: str, workers: int, prefetch: int) -> dict[str, Any]:
    """DataLoader keyword arguments: pinned host memory only when the batches go to a CUDA device."""
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": device.startswith("cuda")}
    if workers > 0:
        options["prefetch_factor"] = prefetch
        # A process started with spawn (Dagster's multiprocess executor starts steps that way)
        # passes spawn on to its children: spawned workers would re-import the step's entry point
        # (which fails) and pickle the dataset. Forked workers start at once and share it.
        if "fork" in multiprocessing.get_all_start_methods():
            options["multiprocessing_context"] = "fork"
    return options


@dataclass
class BatchSizer:
    """The micro-batch size of the forward pass; halves on CUDA out-of-memory (never below 1)."""

    size: int
    backoffs: list[int] = field(default_factory=list)  # the sizes that ran out of memory

    def run(self, encode: Callable[[Any], Any], batch: Any, length: int) -> list[Any]:
        """``encode`` applied to consecutive slices of ``batch`` (of ``length`` rows), in order."""
        out, start = [], 0
        while start < length:
            stop = min(start + self.size, length)
            try:
                out.append(encode(batch[start:stop]))
            except torch.OutOfMemoryError:
                if self.size == 1:
                    raise
                self.backoffs.append(self.size)
                self.size = max(1, self.size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start = stop
        return out


@contextlib.contextmanager
def claimed_device(requested: str, lock_dir: Path, poll_s: float = 1.0) -> Iterator[str]:
    """The device one step runs on. On a machine with several GPUs, the step holds an exclusive file
    lock on one of them (``lock_dir/cuda-<i>.lock``, released when the step ends or its process dies)
    and gets ``cuda:<i>``, so steps running side by side (the "gpu" pool, one slot per GPU) spread
    over the GPUs instead of all landing on the first one. With every GPU claimed it waits."""
    from conescope.models import resolve_device

    device = resolve_device(requested)
    count = torch.cuda.device_count() if device == "cuda" else 0
    if count < 2:
        yield device
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(count):
            fd = try_lock(lock_dir / f"cuda-{i}.lock")
            if fd is None:
                continue
            try:
                yield f"cuda:{i}"
            finally:
                os.close(fd)
            return
        time.sleep(poll_s)


# --- images --------------------------------------------------------------------------------------

def decode_image(source: bytes | str | Path):
    """An RGB PIL image from encoded bytes or a file path."""
    from PIL import Image

    if source is None:
        raise ValueError("no image (null in the manifest)")
    data = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    with Image.open(data) as img:
        return img.convert("RGB")


class _ImageDataset(Dataset):
    def __init__(self, images: Sequence, positions: Sequence[int], preprocess: Callable):
        self.images, self.positions, self.preprocess = images, positions, preprocess

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int):
        i = int(self.positions[k])
        try:
            return i, self.preprocess(decode_image(self.images[i])), None
        except Exception as exc:  # PIL and the transforms raise many types for corrupt data
            return i, None, f"image could not be decoded: {exc}"


def _collate_images(items: list) -> tuple[np.ndarray, torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, t) for i, t, err in items if err is None]
    rejects = [(i, err) for i, _, err in items if err is not None]
    rows = np.asarray([i for i, _ in good], dtype=np.int64)
    return rows, (torch.stack([t for _, t in good]) if good else None), rejects


@dataclass
class EngineRun:
    """What a run did, for the asset's metadata and the progress log."""

    device: str = ""
    precision: str = ""
    batch_size: int = 0
    workers: int = 0
    rows: int = 0
    rejected: int = 0
    seconds: float = 0.0
    backoffs: list[int] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _start(run: EngineRun | None, loaded: LoadedModel, settings: EngineSettings, n: int,
           workers: int) -> tuple[EngineRun, BatchSizer]:
    """The run record to fill (the caller's, when given) and the batch sizer. Workers are capped at
    the number of batches after the first: starting a process costs more than it can overlap."""
    run = run or EngineRun()
    run.device, run.precision = loaded.device, precision_name(autocast_dtype(loaded.device))
    run.batch_size = settings.resolved_batch_size(loaded.device)
    run.workers = min(workers, max(0, -(-n // run.batch_size) - 1))
    return run, BatchSizer(run.batch_size)


def _finish(info: EngineRun, start: float, progress: Progress | None) -> None:
    info.seconds = time.perf_counter() - start
    if progress is not None:
        progress.finish()


def embed_images(loaded: LoadedModel, images: Sequence, settings: EngineSettings = EngineSettings(),
                 positions: Sequence[int] | None = None, on_reject: Callable[[int, str], None] | None = None,
                 progress: Progress | None = None, run: EngineRun | None = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Embed ``images[i]`` (encoded bytes or file paths) for ``i`` in ``positions`` (default: all), in
    that order. Without ``on_reject`` a corrupt image is an error naming its position."""
    positions = range(len(images)) if positions is None else positions
    info, sizer = _start(run, loaded, settings, len(positions), settings.resolved_workers(loaded.device))
    dtype = autocast_dtype(loaded.device)
    loader = DataLoader(_ImageDataset(images, positions, loaded.preprocess), batch_size=info.batch_size,
                        shuffle=False, collate_fn=_collate_images,
                        **loader_options(loaded.device, info.workers, settings.prefetch))

    # Grad mode and hooks are set around each forward pass, never across a yield: the caller's code
    # between batches must not run in inference mode, nor an abandoned iterator leave state behind.
    def encode(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), _autocast(loaded.device, dtype):
            out = loaded.model.encode_image(x.to(loaded.device, non_blocking=True), normalize=False)
        return out.float().cpu().numpy()

    start = time.perf_counter()
    for rows, batch, rejects in loader:
        for i, reason in rejects:
            if on_reject is None:
                raise ValueError(f"image at position {i}: {reason}")
            on_reject(i, reason)
        info.rejected += len(rejects)
        if batch is not None:
            emb = np.concatenate(sizer.run(encode, batch, len(rows)))
            info.rows += len(rows)
            info.backoffs, info.batch_size = sizer.backoffs, sizer.size
            info.seconds = time.perf_counter() - start
            yield rows, emb
        if progress is not None:
            progress.update(len(rows) + len(rejects))
    _finish(info, start, progress)


# --- texts ---------------------------------------------------------------------------------------

class _TextDataset(Dataset):
    def __init__(self, texts: Sequence[str], positions: Sequence[int]):
        self.texts, self.positions = texts, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> tuple[int, str]:
        i = int(self.positions[k])
        return i, self.texts[i]


class _TokenizeBatch:
    """Collate function: one tokenizer call per batch (picklable for worker processes)."""

    def __init__(self, tokenizer: Callable):
        self.tokenizer = tokenizer

    def __call__(self, items: list[tuple[int, str]]) -> tuple[np.ndarray, torch.Tensor]:
        return np.asarray([i for i, _ in items], dtype=np.int64), self.tokenizer([t for _, t in items])


@contextlib.contextmanager
def capture_text_layers(model: Any) -> Iterator[list[torch.Tensor]]:
    """Record the input of an open_clip text transformer and the output of each of its blocks during
    the forward passes made inside the block (the list is appended to; clear it between passes)."""
    blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__}: layer-wise states need an open_clip text transformer "
                         f"with resblocks (CLIP-style towers); this model's text tower is not one")
    captured: list[torch.Tensor] = []
    hooks = [model.transformer.register_forward_pre_hook(lambda _m, args, _kw=None: captured.append(args[0]))]
    hooks += [b.register_forward_hook(lambda _m, _in, out: captured.append(out)) for b in blocks]
    try:
        yield captured
    finally:
        for hook in hooks:
            hook.remove()


def embed_texts(loaded: LoadedModel, texts: Sequence[str], settings: EngineSettings = EngineSettings(),
                positions: Sequence[int] | None = None, with_layers: bool = False,
                progress: Progress | None = None, run: EngineRun | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Embed ``texts[i]`` for ``i`` in ``positions``; yields ``(rows, embeddings, layers)`` where
    ``layers`` (with ``with_layers``) is the ``(n, n_layers + 1, width)`` float32 stack of pooled hidden
    states (Wolfe & Caliskan 2022, section 3): index 0 is the input to the first block (token +
    position embeddings), index l the output of block l, each pooled at the token the tower itself
    pools (EOS for CLIP), before ``ln_final`` and the projection. A text-only sentence-transformers
    model (``conescope.text_models``) is run through its own encoder, in the same batches."""
    positions = range(len(texts)) if positions is None else positions
    if getattr(loaded, "text_only", False):
        yield from _embed_texts_sentence_transformers(loaded, texts, settings, positions, with_layers, progress, run)
        return
    workers = settings.text_workers
    if workers is None:
        workers = settings.resolved_workers(loaded.device) if loaded.device.startswith("cuda") else 0
    info, sizer = _start(run, loaded, settings, len(positions), workers)
    dtype = autocast_dtype(loaded.device)
    loader = DataLoader(_TextDataset(texts, positions), batch_size=info.batch_size, shuffle=False,
                        collate_fn=_TokenizeBatch(loaded.tokenizer),
                        **loader_options(loaded.device, info.workers, settings.prefetch))
    model = loaded.model
    if with_layers:
        with capture_text_layers(model):  # fail before any work if the tower has no layers to read
            pass
    pool_type = getattr(model, "text_pool_type", "argmax")
    eos_id = getattr(model, "text_eos_id", None)

    def encode(tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        tokens = tokens.to(loaded.device, non_blocking=True)
        layer_ctx = capture_text_layers(model) if with_layers else contextlib.nullcontext([])
        with torch.inference_mode(), layer_ctx as captured, _autocast(loaded.device, dtype):
            out = model.encode_text(tokens, normalize=False)
            if not with_layers:
                return out.float().cpu().numpy(), None
            from open_clip.transformer import text_global_pool

            pooled = [text_global_pool(s, tokens, pool_type, eos_token_id=eos_id).float() for s in captured]
            return out.float().cpu().numpy(), torch.stack(pooled, dim=1).cpu().numpy()

    start = time.perf_counter()
    for rows, tokens in loader:
        parts = sizer.run(encode, tokens, len(rows))
        emb = np.concatenate([p[0] for p in parts])
        layers = np.concatenate([p[1] for p in parts]) if with_layers else None
        info.rows += len(rows)
        info.backoffs, info.batch_size = sizer.backoffs, sizer.size
        info.seconds = time.perf_counter() - start
        yield rows, emb, layers
        if progress is not None:
            progress.update(len(rows))
    _finish(info, start, progress)


def _embed_texts_sentence_transformers(loaded, texts: Sequence[str], settings: EngineSettings,
                                      positions: Sequence[int], with_layers: bool, progress: Progress | None,
                                      run: EngineRun | None
                                      ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """:func:`embed_texts` for a text-only model: sentence-transformers tokenizes and batches itself,
    so there are no loader workers; the states of every layer are pooled as the model pools."""
    from conescope.text_models import embed_texts_st, text_layer_states_st

    info = run or EngineRun()
    info.device, info.precision, info.workers = loaded.device, "fp32", 0
    info.batch_size = settings.resolved_batch_size(loaded.device)
    start = time.perf_counter()
    for first in range(0, len(positions), info.batch_size):
        rows = np.asarray(positions[first:first + info.batch_size], dtype=np.int64)
        batch = [texts[i] for i in rows]
        emb = np.concatenate([e for _, e in embed_texts_st(loaded, batch, len(batch))])
        layers = np.stack(text_layer_states_st(loaded, batch, len(batch)), axis=1) if with_layers else None
        info.rows += len(rows)
        info.seconds = time.perf_counter() - start
        yield rows, emb, layers
        if progress is not None:
            progress.update(len(rows))
    _finish(info, start, progress)


# --- progress ------------------------------------------------------------------------------------

class Progress:
    """Throughput and ETA, reported through ``log`` at most every ``every_s`` seconds and at the end.

    ``done_before`` counts samples a resumed run found already embedded: they are part of the total
    but not of the rate."""

    def __init__(self, label: str, total: int, log: Callable[[str], None], every_s: float = 10.0,
                 done_before: int = 0, clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.log, self.every_s, self.clock = label, total, log, every_s, clock
        self.done_before = done_before
        self.done = 0
        self.start = self.last = clock()
        self.logged = -1  # ``done`` at the last line, so that finish() does not repeat it

    @property
    def rate(self) -> float:
        elapsed = self.clock() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def message(self) -> str:
        rate, have = self.rate, self.done_before + self.done
        left = self.total - have
        eta = f"{left / rate:.0f} s" if rate > 0 else "unknown"
        resumed = f", {self.done_before} from an earlier run" if self.done_before else ""
        return f"{self.label}: {have}/{self.total} ({rate:.1f}/s, ETA {eta}{resumed})"

    def update(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last, self.logged = now, self.done
            self.log(self.message())

    def finish(self) -> None:
        if self.logged != self.done:
            self.logged = self.done
            self.log(self.message())
