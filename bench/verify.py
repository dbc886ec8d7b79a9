"""Benchmark of the verification ``conescope materialize`` makes before it decides what to run
(storage/integrity.py, assets/stored.py): prints figures, asserts nothing.

    .venv/bin/python bench/verify.py --home data [--profile demo]
    .venv/bin/python bench/verify.py --synthetic <dir> [--profile demo]

``--home``: a data root the profile was materialized into; only read. ``--synthetic``: first write
into ``<dir>`` a data root shaped like the profile's without running a model: its datasets generated
as the dataset assets do, then every embedding partition of the plan (image, text, text layer
states) written by the resumable writer with random float32 rows of the model's declared dimension
(``--layers`` states per text of that width), ``embedding.part_rows`` rows per part.

Figures: the refresh's verification of every planned run (``damaged_assets``: stat and Parquet
footer of each part, manifests' footers), per refresh and per part; and the full value scan of every
part (what the verification does for a part whose size or modification time changed, and what the
``finite_values`` check reads), with its throughput. ``RESULT <name> <value>`` lines for scripts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _synthesize(profile, root, layers: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from conescope.datasets import build_dataset
    from storage.parquet_store import IMAGE_KEY_COLUMNS, TEXT_KEY_COLUMNS, read_manifest_table, write_manifest
    from storage.resumable import MAIN, ResumablePartition, Stream

    rng = np.random.default_rng(0)
    layer_keys = [("text_id", pa.string()), ("layer", pa.int16())]
    for ds, spec in profile.datasets.items():
        languages = profile.dataset_languages(ds)
        manifest = build_dataset(spec.kind, ds, spec.n, spec.seed, spec.image_size, languages)
        write_manifest(root.dataset_dir(ds), root.scratch, {"samples": manifest.samples, "texts": manifest.texts},
                       {"dataset": ds})
        samples = read_manifest_table(root.dataset_dir(ds), "samples", ["sample_id"]).column("sample_id").to_pylist()
        texts = read_manifest_table(root.dataset_dir(ds), "texts")
        for model, mspec in profile.models.items():
            dim = mspec.declared_dimension()[0] or 512
            jobs = []
            if mspec.has_image_tower and samples:
                jobs.append(({MAIN: Stream(root.image_embeddings(ds, model), IMAGE_KEY_COLUMNS)},
                             {"sample_id": samples}))
            for lang in languages:
                t = texts.filter(pc.equal(texts.column("lang"), lang))
                cols = {name: t.column(name).to_pylist() for name, _ in TEXT_KEY_COLUMNS}
                streams = {MAIN: Stream(root.text_embeddings(ds, model, lang), TEXT_KEY_COLUMNS)}
                if profile.embedding.text_layers and layers:
                    streams["layers"] = Stream(root.text_layers(ds, model, lang), layer_keys, vector="state")
                jobs.append((streams, cols))
            for streams, cols in jobs:
                n = len(next(iter(cols.values())))
                with ResumablePartition(streams, root.scratch, {"model": model}, {"target": str(streams[MAIN].target)},
                                        part_rows=profile.embedding.part_rows) as part:
                    step = profile.embedding.batch_size if isinstance(profile.embedding.batch_size, int) else 256
                    for start in range(0, n, step):
                        rows = np.arange(start, min(start + step, n))
                        batch = {MAIN: ({k: [v[i] for i in rows] for k, v in cols.items()},
                                        rng.standard_normal((len(rows), dim), dtype=np.float32))}
                        if "layers" in streams:
                            batch["layers"] = ({"text_id": [cols["text_id"][i] for i in rows for _ in range(layers)],
                                                "layer": np.tile(np.arange(layers, dtype=np.int16), len(rows))},
                                               rng.standard_normal((len(rows) * layers, dim), dtype=np.float32))
                        part.write(rows, batch)
                    part.finalize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--home", type=Path, help="a materialized data root (only read)")
    where.add_argument("--synthetic", type=Path, help="write a data root shaped like the profile's here first")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--layers", type=int, default=13, help="text layer states per text (synthetic; ViT-B-32: 13)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from conescope.profile import load_profile
    from pipelines.definitions import build_definitions
    from pipelines.refresh import damaged_assets, full_plan
    from storage.integrity import nonfinite_rows, read_part_list
    from storage.paths import DataRoot

    profile = load_profile(args.profile)
    root = DataRoot((args.home or args.synthetic).resolve())
    if args.synthetic:
        t0 = time.perf_counter()
        _synthesize(profile, root, args.layers)
        print(f"synthetic data root of {profile.name} written in {time.perf_counter() - t0:.1f} s")
    defs = build_definitions(profile, str(root.root))
    plan = full_plan(profile, "bench")
    parts = sorted((root.root / "embeddings").rglob("part-*.parquet"))
    manifests = sorted((root.root / "datasets").rglob("*.parquet"))
    size = sum(p.stat().st_size for p in parts)
    lines: list[str] = []
    times, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        found = [damaged_assets(defs, run.job, run.partition_key, lines.append) for run in plan]
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert not any(found) and not lines, lines  # an intact root: nothing may be reported
    refresh_ms, refresh_cpu_ms = statistics.median(times) * 1000, statistics.median(cpu) * 1000
    t0 = time.perf_counter()
    for p in parts:
        listed = read_part_list(p.parent) or {}
        nonfinite_rows(p, listed.get("vector", "embedding"))
    scan_s = time.perf_counter() - t0
    print(f"{len(plan)} planned runs, {len(parts)} embedding parts ({size / 2**20:.1f} MiB), {len(manifests)} "
          f"manifest tables")
    files = max(len(parts) + len(manifests), 1)
    print(f"verification of a refresh: {refresh_ms:.1f} ms wall, {refresh_cpu_ms:.1f} ms CPU (medians of "
          f"{args.repeat}); per file {refresh_ms / files:.2f} ms wall, {refresh_cpu_ms / files:.2f} ms CPU")
    print(f"full value scan of every part: {scan_s * 1000:.0f} ms ({size / 2**20 / scan_s:.0f} MiB/s)")
    for name, value in (("planned_runs", len(plan)), ("parts", len(parts)), ("parts_mib", round(size / 2**20, 1)),
                        ("manifest_tables", len(manifests)), ("refresh_verify_ms", round(refresh_ms, 1)),
                        ("refresh_verify_cpu_ms", round(refresh_cpu_ms, 1)),
                        ("per_file_ms", round(refresh_ms / files, 3)),
                        ("full_scan_ms", round(scan_s * 1000)), ("full_scan_mib_per_s", round(size / 2**20 / scan_s))):
        print(f"RESULT {name} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
