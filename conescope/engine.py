"""The embedding engine: image and text towers over many samples, as fast as the hardware allows.

- Images are decoded and preprocessed in ``torch.utils.data.DataLoader`` worker processes (count
  from the settings, default one per CPU up to 16), batched there, and pinned in page-locked memory
  when the model runs on CUDA, so decoding overlaps the forward pass.
- The forward pass runs under ``torch.inference_mode`` at the precision the model was loaded with
  (conescope/models.py: the weights themselves in bfloat16 / float16, or float32; inputs are cast to
  the weights' dtype on the device). Outputs are returned as float32 whatever the compute precision.
- Decoding, preprocessing and tokenizing run with one torch thread (the forward pass with all):
  their tensor operations are tiny, and with several threads each one waits on a fork/join of the
  thread pool; on a busy 2-core machine that made ToTensor + Normalize 40x slower than single-threaded
  (300 ms against 8 ms an image, measured), more than the forward pass itself.
- The loader batch is split into micro-batches of the current batch size; a CUDA out-of-memory error
  halves that size and retries the same micro-batch, so an automatic batch size settles on what fits.
- Texts are tokenized a batch at a time (in the loader). A text that occurs again in the same call
  (a prompt template, a repeated caption) is run through the tower once: the rows are grouped so
  that each forward pass gets up to ``batch_size`` distinct new texts, and a text's outputs are kept
  only until its last occurrence (at most ``TEXT_CACHE_LIMIT`` texts at a time; beyond that a
  repeat is embedded again). The tower is deterministic, so the rows are those of embedding every
  text (up to the summation order of a different batch: float rounding).
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
from conescope.model_specs import EmbeddingModel
from conescope.models import torch_dtype

MAX_DEFAULT_WORKERS = 16
TEXT_CACHE_LIMIT = 65536  # repeated texts whose outputs are held for a later row (memory bound)
TEXT_GROUP_ROWS = 8  # rows of one text group: at most this many times the batch size
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


def _to_device(x: torch.Tensor, loaded: EmbeddingModel) -> torch.Tensor:
    """A float batch on the model's device in the weights' dtype: copied first (from pinned memory,
    asynchronously, on CUDA) and cast there, so the host does no conversion pass."""
    x = x.to(loaded.device, non_blocking=True)
    return x if not x.is_floating_point() else x.to(torch_dtype(loaded.precision))


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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (a no-op where that is already the count, as in
    a loader worker, which torch starts with one)."""
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


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

    def __getitems__(self, ks: list[int]) -> list:
        # the loader fetches a batch through this: one thread for the whole batch (module docstring)
        with torch_threads(1):
            return [self[k] for k in ks]


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
    embedded: int = 0  # rows run through the tower (fewer than ``rows`` when texts repeat)
    rejected: int = 0
    seconds: float = 0.0
    backoffs: list[int] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _start(run: EngineRun | None, loaded: EmbeddingModel, settings: EngineSettings, n: int,
           workers: int) -> tuple[EngineRun, BatchSizer]:
    """The run record to fill (the caller's, when given) and the batch sizer. Workers are capped at
    the number of batches after the first: starting a process costs more than it can overlap."""
    run = run or EngineRun()
    run.device, run.precision = loaded.device, loaded.precision
    run.batch_size = settings.resolved_batch_size(loaded.device)
    run.workers = min(workers, max(0, -(-n // run.batch_size) - 1))
    return run, BatchSizer(run.batch_size)


def _finish(info: EngineRun, start: float, progress: Progress | None) -> None:
    info.seconds = time.perf_counter() - start
    if progress is not None:
        progress.finish()


def embed_images(loaded: EmbeddingModel, images: Sequence, settings: EngineSettings = EngineSettings(),
                 positions: Sequence[int] | None = None, on_reject: Callable[[int, str], None] | None = None,
                 progress: Progress | None = None, run: EngineRun | None = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Embed ``images[i]`` (encoded bytes or file paths) for ``i`` in ``positions`` (default: all), in
    that order. Without ``on_reject`` a corrupt image is an error naming its position."""
    if loaded.preprocess is None:
        raise ValueError(f"{type(loaded).__name__}: the model has no image tower (no preprocess)")
    positions = range(len(images)) if positions is None else positions
    info, sizer = _start(run, loaded, settings, len(positions), settings.resolved_workers(loaded.device))
    loader = DataLoader(_ImageDataset(images, positions, loaded.preprocess), batch_size=info.batch_size,
                        shuffle=False, collate_fn=_collate_images,
                        **loader_options(loaded.device, info.workers, settings.prefetch))

    # Grad mode and hooks are set around each forward pass, never across a yield: the caller's code
    # between batches must not run in inference mode, nor an abandoned iterator leave state behind.
    def encode(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return loaded.encode_images(_to_device(x, loaded))

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
            info.embedded += len(rows)
            info.backoffs, info.batch_size = sizer.backoffs, sizer.size
            info.seconds = time.perf_counter() - start
            yield rows, emb
        if progress is not None:
            progress.update(len(rows) + len(rejects))
    _finish(info, start, progress)


# --- texts ---------------------------------------------------------------------------------------

@dataclass
class TextGroup:
    """Consecutive rows of one text call: ``rows`` (caller positions, ascending), ``new`` (the
    positions whose text is embedded in this group: each distinct text not held from an earlier
    group, once), ``keep`` (texts of ``new`` that a later group needs), ``expire`` (held texts that
    no later row needs: dropped after this group)."""

    rows: list[int]
    new: list[int]
    keep: list[str]
    expire: list[str]


def plan_text_groups(texts: Sequence[str], positions: Sequence[int], batch_size: int,
                     max_rows: int | None = None, cache_limit: int = TEXT_CACHE_LIMIT) -> list[TextGroup]:
    """Group ``positions`` (in order) so that each group has at most ``batch_size`` distinct texts to
    embed and at most ``max_rows`` rows (default ``TEXT_GROUP_ROWS * batch_size``). A text is held
    for later groups only if it occurs again, and at most ``cache_limit`` texts are held at a time;
    the executor replays ``keep`` / ``expire`` in the same order, so what the plan reuses is held."""
    max_rows = max_rows or TEXT_GROUP_ROWS * batch_size
    last = {texts[i]: k for k, i in enumerate(positions)}
    held: set[str] = set()
    groups: list[TextGroup] = []
    group, fresh = TextGroup([], [], [], []), set()  # fresh: the texts of group.new

    def close() -> None:
        groups.append(group)
        held.update(group.keep)
        held.difference_update(group.expire)

    for k, i in enumerate(positions):
        text = texts[i]
        is_new = text not in held and text not in fresh
        # a group closes before a text it has no room for, so repeats that follow a full batch join it
        if (is_new and len(group.new) == batch_size) or len(group.rows) == max_rows:
            close()
            group, fresh = TextGroup([], [], [], []), set()
            is_new = text not in held
        if is_new:
            group.new.append(i)
            fresh.add(text)
            if last[text] > k and len(held) + len(group.keep) < cache_limit:
                group.keep.append(text)
        group.rows.append(i)
        if last[text] == k and (text in held or text in group.keep):
            group.expire.append(text)
    if group.rows:
        close()
    return groups


class _TextGroups(Dataset):
    """One item per group: its rows, and the tokens of its new texts (tokenized in the loader)."""

    def __init__(self, texts: Sequence[str], groups: list[TextGroup], tokenizer: Callable | None):
        self.texts, self.groups, self.tokenizer = texts, groups, tokenizer

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, g: int) -> tuple[int, Any]:
        batch = [self.texts[i] for i in self.groups[g].new]
        if self.tokenizer is None or not batch:
            return g, batch
        with torch_threads(1):
            return g, self.tokenizer(batch)


class _TextCache:
    """The outputs of texts a later group reuses; follows the plan's ``keep`` / ``expire``."""

    def __init__(self, texts: Sequence[str], with_layers: bool):
        self.texts, self.with_layers = texts, with_layers
        self.held: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def rows(self, group: TextGroup, emb: np.ndarray | None, layers: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Every row of ``group`` from the new outputs (in ``group.new`` order; None when the group
        has none) and the held ones."""
        index = {self.texts[i]: j for j, i in enumerate(group.new)}
        if len(index) == len(group.rows):  # no repeats: the new outputs are the rows
            out_emb, out_layers = emb, layers
        else:
            pick = list(zip(group.rows, [index.get(self.texts[i]) for i in group.rows], strict=True))

            def take(new: np.ndarray | None, slot: int) -> np.ndarray:
                return np.stack([new[j] if j is not None else self.held[self.texts[i]][slot] for i, j in pick])

            out_emb = take(emb, 0)
            out_layers = take(layers, 1) if self.with_layers else None
        for text in group.keep:
            j = index[text]
            self.held[text] = (emb[j].copy(), None if layers is None else layers[j].copy())
        for text in group.expire:
            self.held.pop(text, None)
        return np.asarray(group.rows, dtype=np.int64), out_emb, out_layers


def embed_texts(loaded: EmbeddingModel, texts: Sequence[str], settings: EngineSettings = EngineSettings(),
                positions: Sequence[int] | None = None, with_layers: bool = False,
                progress: Progress | None = None, run: EngineRun | None = None, words: str | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Embed ``texts[i]`` for ``i`` in ``positions``; yields ``(rows, embeddings, layers)`` where
    ``layers`` (with ``with_layers``) is the ``(n, n_layers + 1, width)`` float32 stack of pooled hidden
    states (Wolfe & Caliskan 2022, section 3): index 0 is the input to the first block (token +
    position embeddings), index l the output of block l, each pooled as the tower pools its output
    (``EmbeddingModel.text_encoder``). A model without a tokenizer of its own (it tokenizes inside
    its encoder) gets the strings, batched in process. A repeated text is embedded once (module
    docstring). ``words`` (None for sentences): each text is a word fed alone and its layer states are
    the word vector named (``EmbeddingModel.text_encoder``)."""
    positions = range(len(texts)) if positions is None else positions
    tokenizer = loaded.tokenizer
    workers = settings.text_workers
    if workers is None:
        workers = settings.resolved_workers(loaded.device) if loaded.device.startswith("cuda") else 0
    info, sizer = _start(run, loaded, settings, len(positions), 0 if tokenizer is None else workers)
    groups = plan_text_groups(texts, positions, info.batch_size)
    loader = DataLoader(_TextGroups(texts, groups, tokenizer), batch_size=None,
                        shuffle=False, **loader_options(loaded.device, info.workers, settings.prefetch))
    text_encode = loaded.text_encoder(with_layers, words) if words is not None else loaded.text_encoder(with_layers)

    # Grad mode is set around each forward pass, never across a yield.
    def encode(batch: Any) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            return text_encode(_to_device(batch, loaded) if isinstance(batch, torch.Tensor) else batch)

    cache = _TextCache(texts, with_layers)
    start = time.perf_counter()
    for g, batch in loader:
        group = groups[g]
        emb = layers = None
        if group.new:
            parts = sizer.run(encode, batch, len(group.new))
            emb = np.concatenate([p[0] for p in parts])
            layers = np.concatenate([p[1] for p in parts]) if with_layers else None
        rows, emb, layers = cache.rows(group, emb, layers)
        info.rows += len(rows)
        info.embedded += len(group.new)
        info.backoffs, info.batch_size = sizer.backoffs, sizer.size
        info.seconds = time.perf_counter() - start
        yield rows, emb, layers
        if progress is not None:
            progress.update(len(rows))
    _finish(info, start, progress)


# --- progress ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProgressFigures:
    """Where an embedding stands: rows done of ``total`` (``resumed`` of them found from an earlier run),
    the rate of this run's rows since it started (``elapsed_s`` ago), the time left at that rate
    (None while the rate is 0)."""

    done: int
    total: int
    resumed: int
    rate: float
    eta_s: float | None
    elapsed_s: float


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

    def figures(self) -> ProgressFigures:
        elapsed = self.clock() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        have = self.done_before + self.done
        return ProgressFigures(have, self.total, self.done_before, rate,
                               (self.total - have) / rate if rate > 0 else None, elapsed)

    def message(self) -> str:
        f = self.figures()
        eta = f"{f.eta_s:.0f} s" if f.eta_s is not None else "unknown"
        resumed = f", {f.resumed} from an earlier run" if f.resumed else ""
        return f"{self.label}: {f.done}/{f.total} ({f.rate:.1f}/s, ETA {eta}{resumed})"

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
