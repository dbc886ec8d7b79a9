"""Benchmark of the metric suite at COCO scale: prints figures, asserts nothing.

    .venv/bin/python bench/metrics.py [--n 40000] [--d 512] [--repeats 3] [--skip-baselines]

Part 1 times every metric family as the pipeline computes it (``conescope.families``) on a
synthetic cone (n image rows, n paired captions, 100 labelled classes with one prompt each) and
reports the peak memory above the data itself; each family runs ``--repeats`` times, each in a fresh
process so that its peak resident set is its own, and the median time is reported (single runs vary
by +-20% on a shared 2-core machine). Retrieval runs twice: on the test split (the default
``metrics.retrieval_eval_set``, about n/5 images) and over all n images. "pairwise intervals" times the
intervals of the four means over pairs alone (image, caption and joint rows, random image-caption
pairs): part of isotropy and modality_gap, so outside the suite's sum.
Part 2 prints, per metric, the ratio to the straightforward library
call it replaces (bench/metrics_geometry.py and bench/metrics_quality.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FAMILIES = ["isotropy image", "isotropy text", "isotropy joint", "modality_gap", "clip_loss", "zero_shot",
            "retrieval", "clusters", "linear_probe", "retrieval (all rows)", "pairwise intervals"]
# "pairwise intervals" times alone the intervals of the means over pairs that isotropy and modality_gap
# compute (mean_cosine of image, text and joint rows, rand_cosine_mean): already in the suite's total
OUTSIDE_SUITE = ("linear_probe", "retrieval (all rows)", "pairwise intervals")


def synthetic_sets(n: int, d: int, seed: int = 0, classes: int = 100):
    """Image and caption embeddings of a cone: a shared offset per modality, a class signal shared by
    the pair, and noise; 100 class prompts near their class centre; a seeded 80/20 split."""
    from conescope.sets import ImageSet, TextSet

    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n)
    centres = rng.normal(size=(classes, d))
    latent = centres[labels] + 0.8 * rng.normal(size=(n, d))
    image_offset, text_offset = 4.0 * rng.normal(size=d), 4.0 * rng.normal(size=d)
    image = (latent + image_offset + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    text = (latent + text_offset + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    prompts = (centres + text_offset + 0.3 * rng.normal(size=(classes, d))).astype(np.float32)
    ids = np.asarray([f"s{i}" for i in range(n)], dtype=object)
    splits = np.where(rng.random(n) < 0.8, "train", "test").astype(object)
    img = ImageSet("bench", ids, labels, splits, image)
    txt = TextSet("bench", "en", np.asarray([f"t{i}" for i in range(n + classes)], dtype=object),
                  np.concatenate([ids, np.full(classes, None, dtype=object)]),
                  np.concatenate([np.full(n, -1), np.arange(classes)]),
                  [f"caption {i}" for i in range(n)] + [f"a photo of class {c}" for c in range(classes)],
                  np.vstack([text, prompts]))
    return img, txt


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Reset the peak resident set (VmHWM) to the current one, so that the peak of building the data
    is not counted as the metric's (Linux: /proc/PID/clear_refs, value 5)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _run_family(family: str, n: int, d: int, queue) -> None:
    from dataclasses import replace

    import torch

    from conescope import families
    from conescope.metrics import bootstrap
    from conescope.profile import MetricSettings

    torch.set_num_threads(max(1, mp.cpu_count()))
    img, txt = synthetic_sets(n, d)
    captions = _captions(txt)
    s = MetricSettings()
    joint = np.vstack([img.emb, captions.emb]) if family == "pairwise intervals" else None
    _reset_peak()
    base = _status_mb("VmRSS")
    calls = {
        "isotropy image": lambda: families.isotropy_rows("bench", "image", img.emb, s),
        "isotropy text": lambda: families.isotropy_rows("bench", "text", captions.emb, s),
        "isotropy joint": lambda: families.isotropy_rows("bench", "joint", np.vstack([img.emb, captions.emb]), s),
        "modality_gap": lambda: families.gap_rows(img, txt, s),
        "clip_loss": lambda: families.clip_loss_rows(img, txt, 100.0, None, s),
        "zero_shot": lambda: families.zero_shot_rows(img, txt, s),
        "retrieval": lambda: families.retrieval_rows(img, txt, s),
        "clusters": lambda: families.silhouette_rows("bench", "image", img.emb, img.labels, s),
        "linear_probe": lambda: families.linear_probe_rows(img, s),
        "retrieval (all rows)": lambda: families.retrieval_rows(img, txt, replace(s, retrieval_eval_set="all")),
        "pairwise intervals": lambda: [bootstrap.pairwise_mean_cosine_ci(img.emb),
                                       bootstrap.pairwise_mean_cosine_ci(captions.emb),
                                       bootstrap.pairwise_mean_cosine_ci(joint),
                                       bootstrap.cross_pair_mean_cosine_ci(img.emb, captions.emb)],
    }
    t0 = time.perf_counter()
    rows = calls[family]()
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    values = ({r["metric"]: round(r["value"], 4) for r in rows} if family != "pairwise intervals" else
              {name: [round(v, 4) for v in ci] for name, ci in zip(("image", "text", "joint", "random pairs"), rows,
                                                                    strict=True)})
    queue.put({"family": family, "seconds": seconds, "peak_above_data_mb": max(0.0, peak - base),
               "rows": len(rows), "values": values})


def _captions(txt):
    from conescope.sets import TextSet

    rows = txt.caption_rows
    return TextSet(txt.dataset, txt.lang, txt.text_ids[rows], txt.sample_ids[rows], txt.labels[rows],
                   [txt.texts[i] for i in rows], txt.emb[rows])


def suite(n: int, d: int, repeats: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    results = []
    for family in FAMILIES:
        runs = []
        for _ in range(repeats):
            queue = ctx.Queue()
            proc = ctx.Process(target=_run_family, args=(family, n, d, queue))
            proc.start()
            runs.append(queue.get())
            proc.join()
        result = dict(runs[0])
        result["seconds"] = float(np.median([r["seconds"] for r in runs]))
        result["spread"] = (min(r["seconds"] for r in runs), max(r["seconds"] for r in runs))
        result["peak_above_data_mb"] = max(r["peak_above_data_mb"] for r in runs)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process runs per family (median)")
    parser.add_argument("--skip-baselines", action="store_true")
    args = parser.parse_args()
    data_mb = 2 * args.n * args.d * 4 / 2**20
    print(f"metric suite on a synthetic cone: {args.n} image + {args.n} caption rows, d = {args.d} "
          f"(float32 data {data_mb:.0f} MB), {mp.cpu_count()} CPU cores\n")
    results = suite(args.n, args.d, args.repeats)
    print(f"{'family':<21} {'median s':>8} {'min-max s':>11} {'peak MB above data':>19}  values")
    for r in results:
        spread = f"{r['spread'][0]:.2f}-{r['spread'][1]:.2f}"
        print(f"{r['family']:<21} {r['seconds']:>8.2f} {spread:>11} {r['peak_above_data_mb']:>19.0f}  {r['values']}")
    total = sum(r["seconds"] for r in results if r["family"] not in OUTSIDE_SUITE)
    print(f"\nwhole suite except the linear probe (retrieval on the test split): {total:.2f} s (sum of medians)")
    if args.skip_baselines:
        return
    from bench import metrics_geometry, metrics_quality

    print("\nper metric, against the straightforward library call it replaces:")
    print(f"{'metric':<28} {'seconds':>8}  {'baseline':<44} {'seconds':>8} {'speed-up':>8}  note")
    for row in metrics_geometry.run(args.n, args.d) + metrics_quality.run(args.n, args.d):
        ratio = row.get("ratio")
        base_s = row.get("baseline_seconds")
        print(f"{row['metric']:<28} {row['seconds']:>8.3f}  {str(row.get('baseline') or ''):<44} "
              f"{'' if base_s is None else f'{base_s:.3f}':>8} {'' if ratio is None else f'{ratio:.1f}x':>8}  "
              f"{row.get('note', '')}")


if __name__ == "__main__":
    main()
