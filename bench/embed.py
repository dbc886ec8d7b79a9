"""Embedding throughput and peak memory: the engine (conescope/engine.py) against a straightforward
open_clip loop, side by side on the same model, batch size and data.

The data: COCO-sized JPEGs (640x480 by default, smooth gradients with shapes, written with PIL into
a temporary directory) and one generated caption per image. The model: a randomly initialised
ViT-B-32 (weights cannot be downloaded here; the compute is the same as with trained weights).
The loop decodes with PIL in the main process, stacks, and runs the tower under ``torch.no_grad``;
texts are tokenized and encoded a batch at a time. Each side runs in its own subprocess, so that
its peak resident memory (ru_maxrss; the engine's decoding workers separately) is its own; the
sides alternate for ``--repeats`` rounds and the median is reported. One warm-up batch per side is
not timed.

    .venv/bin/python bench/embed.py                        # 2-core CPU: 128 images, batch 32
    .venv/bin/python bench/embed.py --n 4096 --batch-size 256 --workers 16 --device cuda   # GPU box

Figures are printed, never asserted (DESIGN.md, "bench/").
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star"]


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


def run_side(side: str, data: Path, batch_size: int, workers: int | None, device: str) -> dict:
    """One side, in this process: returns images/s, texts/s and peak memory."""
    import torch

    from conescope.models import load_model

    spec = json.loads((data / "data.json").read_text())
    paths, captions = spec["paths"], spec["captions"]
    loaded = load_model("ViT-B-32", None, seed=0, zero_bias=False, device=device)
    result = {"side": side, "device": loaded.device, "threads": torch.get_num_threads()}
    warm, rest = paths[:batch_size], paths[batch_size:]
    warm_t, rest_t = captions[:batch_size], captions[batch_size:]
    sync = torch.cuda.synchronize if loaded.device.startswith("cuda") else (lambda: None)
    if side == "engine":
        from conescope import engine

        settings = engine.EngineSettings(batch_size=batch_size, workers=workers)
        result["workers"] = settings.resolved_workers(loaded.device)
        list(engine.embed_images(loaded, warm, settings))
        t0 = time.perf_counter()
        n = sum(len(rows) for rows, _ in engine.embed_images(loaded, rest, settings))
        sync()
        result["images_per_s"] = n / (time.perf_counter() - t0)
        list(engine.embed_texts(loaded, warm_t, settings))
        t0 = time.perf_counter()
        n = sum(len(rows) for rows, _, _ in engine.embed_texts(loaded, rest_t, settings))
        sync()
        result["texts_per_s"] = n / (time.perf_counter() - t0)
        result["precision"] = engine.precision_name(engine.autocast_dtype(loaded.device))
    else:
        from PIL import Image

        def images(batch):
            tensors = []
            for p in batch:
                with Image.open(p) as img:
                    tensors.append(loaded.preprocess(img.convert("RGB")))
            with torch.no_grad():
                return loaded.model.encode_image(torch.stack(tensors).to(loaded.device)).cpu().numpy()

        def texts(batch):
            with torch.no_grad():
                return loaded.model.encode_text(loaded.tokenizer(batch).to(loaded.device)).cpu().numpy()

        for fn, warm_batch, items, key in ((images, warm, rest, "images_per_s"),
                                           (texts, warm_t, rest_t, "texts_per_s")):
            fn(warm_batch)
            t0 = time.perf_counter()
            for start in range(0, len(items), batch_size):
                fn(items[start:start + batch_size])
            sync()
            result[key] = len(items) / (time.perf_counter() - t0)
        result["precision"] = "fp32"
    result["peak_rss_mb"] = _peak_mb(resource.RUSAGE_SELF)
    # The largest child (a decoding worker; its RSS counts the pages it shares with the parent).
    result["workers_peak_rss_mb"] = _peak_mb(resource.RUSAGE_CHILDREN)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=128, help="images (and captions), warm-up batch included")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decoding workers (default: by device)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--size", default="640x480", help="image width x height")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--side", choices=("engine", "loop"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.data, args.batch_size, args.workers, args.device)))
        return
    if args.n <= args.batch_size:
        parser.error("--n must exceed --batch-size (the first batch is a warm-up)")
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="conescope-bench-") as tmp:
        t0 = time.perf_counter()
        paths, captions = make_data(Path(tmp), args.n, width, height)
        size_kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
        (Path(tmp) / "data.json").write_text(json.dumps({"paths": paths, "captions": captions}))
        print(f"data: {args.n} JPEGs {width}x{height} (mean {size_kb:.0f} kB) and captions, "
              f"written in {time.perf_counter() - t0:.1f} s; batch size {args.batch_size}; "
              f"model ViT-B-32 (random init)")
        runs: dict[str, list[dict]] = {"engine": [], "loop": []}
        for _ in range(args.repeats):
            for side in ("loop", "engine"):
                cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--data", tmp,
                       "--batch-size", str(args.batch_size), "--device", args.device]
                if args.workers is not None:
                    cmd += ["--workers", str(args.workers)]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
                if out.returncode != 0:
                    sys.exit(f"{side} failed:\n{out.stderr}")
                runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'side':8} {'device':6} {'precision':14} {'workers':>7} {'images/s':>9} {'texts/s':>9} "
          f"{'peak RSS MB':>12} {'worker peak MB':>15}")
    for side, results in runs.items():
        med = {k: statistics.median(r[k] for r in results)
               for k in ("images_per_s", "texts_per_s", "peak_rss_mb", "workers_peak_rss_mb")}
        first = results[0]
        print(f"{side:8} {first['device']:6} {first['precision']:14} {first.get('workers', 0):>7} "
              f"{med['images_per_s']:>9.1f} {med['texts_per_s']:>9.1f} {med['peak_rss_mb']:>12.0f} "
              f"{med['workers_peak_rss_mb'] if first.get('workers') else 0:>15.0f}")
        per_round = {k: ", ".join(f"{r[k]:.1f}" for r in results) for k in ("images_per_s", "texts_per_s")}
        print(f"{'':8} per round: images/s {per_round['images_per_s']}; texts/s {per_round['texts_per_s']}")


if __name__ == "__main__":
    main()
