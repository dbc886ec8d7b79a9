"""Embedding throughput and peak memory: the engine (conescope/engine.py) at ``embedding.precision:
auto`` against the plain float32 open_clip loop a user would write, on the same model, batch size
and data; the engine at fp32 against the same loop as well.

The data: COCO-sized JPEGs (640x480 by default, smooth gradients with shapes, written with PIL into
a temporary directory) and one distinct generated caption per image (so the engine's reuse of
repeated texts plays no part). The model: a randomly initialised ViT-B-32 (weights cannot be
downloaded here; the compute is that of trained weights). The loop decodes with PIL in the main
process, stacks, and runs the float32 tower under ``torch.no_grad``; texts are tokenized and
encoded a batch at a time.

Two phases, each in subprocesses of its own:

1. speed: one process loads the models once and runs the sides in lockstep, batch by batch (each
   side's iterator advanced one batch in turn, the order rotating every step), after one untimed
   warm-up batch per side; the data is gone through ``--rounds`` times. On a machine shared with
   other work the absolute rates move with the load, but the ratio of two sides measured within
   the same second survives it far better: the ratios are the figures to read, per round and their
   median.
2. memory: each side alone in a fresh process over the same data, reporting its peak resident
   memory (ru_maxrss: model loading included; decoding workers separately).

    .venv/bin/python bench/embed.py                 # 2-core CPU: 128 images, batch 32, 3 rounds
    .venv/bin/python bench/embed.py --n 8192 --batch-size 256 --device cuda     # GPU machine

Besides a table it prints one ``RESULT <name> <value>`` line per figure, for scripts. Figures are
printed, never asserted: they depend on the machine (docs/benchmarks.md records them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star"]
SIDES = ("loop_fp32", "engine_fp32", "engine_auto")


def make_data(directory: Path, n: int, width: int, height: int, seed: int = 0) -> tuple[list[str], list[str]]:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    paths, captions = [], []
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(n):
        base = rng.integers(0, 255, 3)
        slope = rng.normal(0, 0.2, (2, 3))
        img = np.clip(base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
                      + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
        pil = Image.fromarray(img)
        draw = ImageDraw.Draw(pil)
        colour, shape = COLOURS[i % len(COLOURS)], SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        draw.ellipse([x0, y0, x0 + width // 3, y0 + height // 3], fill=colour)
        paths.append(str(directory / f"{i:06d}.jpg"))
        pil.save(paths[-1], quality=90)
        captions.append(f"a photo of a {colour} {shape} on a textured background, number {i}")
    return paths, captions


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


class Side:
    """One way of embedding: ``images(paths)`` and ``texts(captions)`` each return the row count."""

    def __init__(self, name: str, device: str, batch_size: int, workers: int | None, arch: str = "ViT-B-32"):
        import torch

        from conescope import engine
        from conescope.models import load_model

        self.name, self.batch_size = name, batch_size
        precision = "auto" if name == "engine_auto" else "fp32"
        self.loaded = load_model(arch, None, seed=0, zero_bias=False, device=device, precision=precision)
        self.precision = self.loaded.precision
        self.settings = engine.EngineSettings(batch_size=batch_size, workers=workers)
        self.workers = self.settings.resolved_workers(self.loaded.device) if name != "loop_fp32" else 0
        cuda = self.loaded.device.startswith("cuda")
        self.sync = torch.cuda.synchronize if cuda else (lambda: None)

    def batches(self, kind: str, items: list) -> Iterator[int]:
        """Embed ``items`` (image paths or captions), yielding the row count of each batch."""
        from conescope import engine

        if self.name == "loop_fp32":
            fn = self._loop_images if kind == "images" else self._loop_texts
            for start in range(0, len(items), self.batch_size):
                fn(items[start:start + self.batch_size])
                self.sync()
                yield min(self.batch_size, len(items) - start)
            return
        batches = (engine.embed_images(self.loaded, items, self.settings) if kind == "images"
                   else engine.embed_texts(self.loaded, items, self.settings))
        for out in batches:
            self.sync()
            yield len(out[0])

    def images(self, paths: list[str]) -> int:
        return sum(self.batches("images", paths))

    def texts(self, captions: list[str]) -> int:
        return sum(self.batches("texts", captions))

    # --- the plain loop ---------------------------------------------------------------------------
    def _loop_images(self, batch: list[str]):
        import torch
        from PIL import Image

        tensors = []
        for p in batch:
            with Image.open(p) as img:
                tensors.append(self.loaded.preprocess(img.convert("RGB")))
        with torch.no_grad():
            return self.loaded.model.encode_image(torch.stack(tensors).to(self.loaded.device)).cpu().numpy()

    def _loop_texts(self, batch: list[str]):
        import torch

        with torch.no_grad():
            tokens = self.loaded.tokenizer(batch).to(self.loaded.device)
            return self.loaded.model.encode_text(tokens).cpu().numpy()



def lockstep(sides: list[Side], kind: str, items: list) -> dict[str, float]:
    """Rows per second of each side over ``items``, the sides advanced one batch each in turn."""
    iterators = {s.name: s.batches(kind, items) for s in sides}
    seconds = dict.fromkeys(iterators, 0.0)
    rows = dict.fromkeys(iterators, 0)
    step = 0
    while iterators:
        names = list(iterators)
        for name in names[step % len(names):] + names[:step % len(names)]:
            t0 = time.perf_counter()
            n = next(iterators[name], None)
            seconds[name] += time.perf_counter() - t0
            if n is None:
                del iterators[name]
            else:
                rows[name] += n
        step += 1
    return {name: rows[name] / seconds[name] for name in rows}


def _data(path: Path) -> tuple[list[str], list[str]]:
    spec = json.loads((path / "data.json").read_text())
    return spec["paths"], spec["captions"]


def run_interleaved(data: Path, batch_size: int, workers: int | None, device: str, rounds: int,
                    arch: str) -> dict:
    """Phase 1, in this process: every side in every round; rates per side and round."""
    import torch

    paths, captions = _data(data)
    sides = [Side(name, device, batch_size, workers, arch) for name in SIDES]
    for side in sides:  # warm-up: first calls allocate, pick kernels, fill caches
        side.images(paths[:batch_size])
        side.texts(captions[:batch_size])
    paths, captions = paths[batch_size:], captions[batch_size:]
    rates: dict[str, dict[str, list[float]]] = {s.name: {"images": [], "texts": []} for s in sides}
    for _ in range(rounds):
        for kind, items in (("images", paths), ("texts", captions)):
            for name, rate in lockstep(sides, kind, items).items():
                rates[name][kind].append(rate)
    return {"rates": rates, "threads": torch.get_num_threads(), "device": sides[0].loaded.device,
            "precision": {s.name: s.precision for s in sides}, "workers": {s.name: s.workers for s in sides}}


def run_memory(side_name: str, data: Path, batch_size: int, workers: int | None, device: str, arch: str) -> dict:
    """Phase 2, in this process: one side over every image and caption; its peak memory."""
    paths, captions = _data(data)
    side = Side(side_name, device, batch_size, workers, arch)
    side.images(paths)
    side.texts(captions)
    return {"side": side_name, "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF),
            # the largest child (a decoding worker; its RSS counts the pages it shares with the parent)
            "workers_peak_rss_mb": _peak_mb(resource.RUSAGE_CHILDREN)}


def _subprocess(args: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=128, help="images (and captions), warm-up batch included")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="engine decoding workers (default: by device)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--size", default="640x480", help="image width x height")
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random initialisation)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory phase")
    parser.add_argument("--phase", choices=("speed", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "speed":
        print(json.dumps(run_interleaved(args.data, args.batch_size, args.workers, args.device, args.rounds,
                                         args.arch)))
        return
    if args.phase == "memory":
        print(json.dumps(run_memory(args.side, args.data, args.batch_size, args.workers, args.device, args.arch)))
        return
    if args.n <= args.batch_size:
        parser.error("--n must exceed --batch-size (the first batch is a warm-up)")
    width, height = (int(v) for v in args.size.lower().split("x"))
    common = ["--batch-size", str(args.batch_size), "--device", args.device, "--arch", args.arch]
    if args.workers is not None:
        common += ["--workers", str(args.workers)]
    with tempfile.TemporaryDirectory(prefix="conescope-bench-") as tmp:
        t0 = time.perf_counter()
        paths, captions = make_data(Path(tmp), args.n, width, height)
        size_kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
        (Path(tmp) / "data.json").write_text(json.dumps({"paths": paths, "captions": captions}))
        print(f"data: {args.n} JPEGs {width}x{height} (mean {size_kb:.0f} kB) and captions, written in "
              f"{time.perf_counter() - t0:.1f} s; batch size {args.batch_size}; model {args.arch} (random init)",
              flush=True)
        speed = _subprocess(["--phase", "speed", "--data", tmp, "--rounds", str(args.rounds), *common])
        memory = {} if args.no_memory else {
            side: _subprocess(["--phase", "memory", "--side", side, "--data", tmp, *common])
            for side in ("loop_fp32", "engine_auto")}
    report(speed, memory, args.rounds)


def report(speed: dict, memory: dict, rounds: int) -> None:
    rates, precision, workers = speed["rates"], speed["precision"], speed["workers"]
    print(f"device {speed['device']}, {speed['threads']} torch threads, {rounds} rounds, sides interleaved batch by "
          f"batch (rates move with the machine's load; the ratios are the figures to compare)")
    print(f"{'side':12} {'precision':9} {'workers':>7} {'images/s':>9} {'texts/s':>9} {'peak RSS MB':>12}")
    for side in SIDES:
        med = {k: statistics.median(rates[side][k]) for k in ("images", "texts")}
        rss = memory.get(side, {}).get("peak_rss_mb")
        print(f"{side:12} {precision[side]:9} {workers[side]:>7} {med['images']:>9.1f} {med['texts']:>9.1f} "
              f"{'' if rss is None else f'{rss:.0f}':>12}")
    results: list[tuple[str, float]] = []
    for side in SIDES:
        for kind in ("images", "texts"):
            results.append((f"{side}.{kind}_per_s", statistics.median(rates[side][kind])))
    for side in ("engine_auto", "engine_fp32"):
        for kind in ("images", "texts"):
            per_round = [a / b for a, b in zip(rates[side][kind], rates["loop_fp32"][kind], strict=True)]
            print(f"ratio {kind:6} {side} ({precision[side]}) / loop_fp32: median {statistics.median(per_round):.2f} "
                  f"(rounds: {', '.join(f'{x:.2f}' for x in per_round)})")
            results.append((f"ratio.{kind}.{side}_over_loop_fp32", statistics.median(per_round)))
    for side, m in memory.items():
        results.append((f"{side}.peak_rss_mb", m["peak_rss_mb"]))
        if workers[side]:
            results.append((f"{side}.workers_peak_rss_mb", m["workers_peak_rss_mb"]))
    if memory:
        results.append(("rss.engine_auto_minus_loop_fp32_mb",
                        memory["engine_auto"]["peak_rss_mb"] - memory["loop_fp32"]["peak_rss_mb"]))
    for name, value in results:
        print(f"RESULT {name} {value:.3f}")
    print(f"RESULT precision.engine_auto {precision['engine_auto']}")


if __name__ == "__main__":
    main()
