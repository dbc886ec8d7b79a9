"""Benchmark of ingestion: prints figures, asserts nothing.

    .venv/bin/python bench/ingest.py [--coco 2000] [--cifar 10000] [--manifest 5000] [--texts 100000] [--repeats 3]

COCO: ``--coco`` JPEGs of 640x480 (COCO's typical size, noise content so that they do not compress
away) with five captions each, read by ``read_coco`` (every image checked: header, then a 1/8-scale
decode that still reads the whole stream). CIFAR-100: an official-layout python archive of ``--cifar``
images, read by ``read_cifar_archive`` (every image PNG-encoded). Reports the median of ``--repeats``
runs in images per second and the extrapolation to the real sizes (40,504 COCO val2014 images,
60,000 CIFAR-100 images). Generic manifests (``read_generic``) in CSV, JSON Lines and Parquet:
``--manifest`` labelled images (one small PNG file each) with an English caption on the image row and a
French one on a second row, and ``--texts`` text-only rows. Single runs vary by +-20% on a shared
2-core machine.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _coco(root: Path, n: int) -> tuple[Path, Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = root / "val2014"
    images.mkdir()
    # one noisy base image, shifted per file: realistic JPEG sizes without n random draws
    base = rng.integers(0, 256, size=(480, 700, 3), dtype=np.uint8)
    records, anns = [], []
    for i in range(n):
        name = f"COCO_val2014_{i:012d}.jpg"
        Image.fromarray(base[:, i % 60: i % 60 + 640]).save(images / name, quality=85)
        records.append({"id": i, "file_name": name})
        anns += [{"image_id": i, "id": 5 * i + j, "caption": f"a caption {j} of image {i}"} for j in range(5)]
    path = root / "captions_val2014.json"
    path.write_text(json.dumps({"images": records, "annotations": anns}))
    return path, images


def _cifar(root: Path, n: int) -> Path:
    from conescope.ingest.cifar import CIFAR100_COARSE, CIFAR100_FINE

    rng = np.random.default_rng(0)
    path = root / "cifar-100-python.tar.gz"

    def member(tar, name, obj):
        data = pickle.dumps(obj)
        info = tarfile.TarInfo(f"cifar-100-python/{name}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w:gz") as tar:
        member(tar, "meta", {b"fine_label_names": [x.encode() for x in CIFAR100_FINE],
                             b"coarse_label_names": [x.encode() for x in CIFAR100_COARSE]})
        fine = [int(x) for x in rng.integers(0, 100, size=n)]
        member(tar, "train", {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"fine_labels": fine,
                              b"coarse_labels": [f // 5 for f in fine]})
        member(tar, "test", {b"data": np.zeros((0, 3072), dtype=np.uint8), b"fine_labels": [], b"coarse_labels": []})
    return path


def _manifests(root: Path, samples: int, texts: int) -> dict[str, Path]:
    """The same rows written in every manifest format: ``captioned.<fmt>`` and ``texts.<fmt>``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from PIL import Image

    folder = root / "manifest"
    folder.mkdir()
    names = [f"class{c}" for c in range(10)]
    for i in range(samples):
        Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(folder / f"{i}.png")
    captioned = pa.table({
        "sample_id": [str(i // 2) for i in range(2 * samples)],
        "image": [f"{i // 2}.png" if i % 2 == 0 else None for i in range(2 * samples)],
        "text": [f"a picture number {i // 2}" if i % 2 == 0 else f"une image numéro {i // 2}"
                 for i in range(2 * samples)],
        "lang": ["en" if i % 2 == 0 else "fr" for i in range(2 * samples)],
        "label": [names[(i // 2) % 10] if i % 2 == 0 else None for i in range(2 * samples)]})
    only_texts = pa.table({"text": [f"sentence {i}" for i in range(texts)],
                           "lang": ["en" if i % 3 else "de" for i in range(texts)]})
    paths = {}
    for stem, table in (("captioned", captioned), ("texts", only_texts)):
        pacsv.write_csv(table, folder / f"{stem}.csv")
        with open(folder / f"{stem}.jsonl", "w", encoding="utf-8") as fh:
            for row in table.to_pylist():
                fh.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
        pq.write_table(table, folder / f"{stem}.parquet")
        paths.update({f"{stem}.{fmt}": folder / f"{stem}.{fmt}" for fmt in ("csv", "jsonl", "parquet")})
    return paths


def _median_rate(fn, n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco", type=int, default=2000)
    parser.add_argument("--cifar", type=int, default=10000)
    parser.add_argument("--manifest", type=int, default=5000)
    parser.add_argument("--texts", type=int, default=100000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from conescope.ingest.cifar import read_cifar_archive
    from conescope.ingest.coco import read_coco
    from conescope.ingest.generic import read_generic

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        annotations, images = _coco(root, args.coco)
        rate = _median_rate(lambda: read_coco("coco", annotations, images, first_caption=True), args.coco,
                            args.repeats)
        print(f"COCO captions + image checks: {rate:8.0f} images/s  (40,504 val2014 images: ~{40504 / rate:.0f} s)")
        archive = _cifar(root, args.cifar)
        rate = _median_rate(lambda: read_cifar_archive("cifar100", archive), args.cifar, args.repeats)
        print(f"CIFAR-100 archive to PNG:     {rate:8.0f} images/s  (60,000 images: ~{60000 / rate:.0f} s)")
        manifests = _manifests(root, args.manifest, args.texts)
        labels = [f"class{c}" for c in range(10)]
        for key, path in manifests.items():
            captioned = key.startswith("captioned")
            n = 2 * args.manifest if captioned else args.texts
            rate = _median_rate(lambda p=path, c=captioned: read_generic("m", p, labels if c else None), n,
                                args.repeats)
            print(f"manifest {key:18s}   {rate:8.0f} rows/s")


if __name__ == "__main__":
    main()
