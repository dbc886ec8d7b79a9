"""A generic manifest in CSV, JSONL or Parquet: one row per (image, text) or per image or per text.

Columns (all optional except that a row needs an image or a text):

- ``sample_id``: groups rows of one image (several captions, several languages); default: the row number;
- ``image``: a file path (relative to the manifest's folder, or absolute), an ``http(s)://`` URL (fetched
  into the data root through ``fetch``), or, in Parquet, the encoded bytes;
- ``text``, ``lang`` (default ``en``), ``label`` (an integer, or a class name looked up in ``labels``),
  ``label_name``, ``split`` (default: a seeded 80/20 split over samples).

Rows with a text but no image and no ``sample_id`` are text-only. A label not among ``labels`` (when
they are given) rejects the sample.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conescope.dataset_specs import SourceDataset, register_source
from conescope.ingest.common import (
    IngestError,
    IngestResult,
    ManifestBuilder,
    jsonl_objects,
    need_file,
    seeded_splits,
)
from conescope.profile_schema import Flag, Lang, Text, non_empty

FORMATS = ("csv", "jsonl", "parquet")


def manifest_format(path: Path) -> str:
    suffixes = "".join(path.suffixes[-2:]).lower()
    for fmt, exts in (("csv", (".csv",)), ("jsonl", (".jsonl", ".ndjson")), ("parquet", (".parquet", ".pq"))):
        if any(suffixes.endswith(e) for e in exts):
            return fmt
    raise ValueError(f"{path}: cannot tell the manifest format from the extension (use .csv, .jsonl or .parquet)")


def _rows(path: Path, fmt: str) -> Iterator[tuple[str, dict]]:
    """(location for error messages, record) per row."""
    if fmt == "csv":
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            for line_no, rec in enumerate(reader, start=2):
                if None in rec:
                    raise IngestError(f"{path}: line {line_no}: more fields than the header has")
                yield f"line {line_no}", {k: (v if v != "" else None) for k, v in rec.items()}
    elif fmt == "jsonl":
        for line_no, rec in jsonl_objects(path):
            yield f"line {line_no}", rec
    else:
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on non-Parquet input
            raise IngestError(f"{path}: not a readable Parquet file: {exc}") from exc
        row = 0
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                yield f"row {row}", rec
                row += 1


def read_generic(name: str, path: Path, labels: list[str] | None = None, seed: int = 0, default_lang: str = "en",
                 fetch: Callable[[str], Path] | None = None, limit: int | None = None) -> IngestResult:
    need_file(path, name, "manifest")
    fmt = manifest_format(path)
    label_index = {n: i for i, n in enumerate(labels)} if labels else None
    samples: dict[str, dict] = {}
    texts: list[tuple[str, str | None, str, str]] = []  # (where, sample_id, lang, text)
    bad: dict[str, str] = {}
    for i, (where, rec) in enumerate(_rows(path, fmt)):
        if limit is not None and len(samples) >= limit and rec.get("sample_id") not in samples:
            break
        image, text = rec.get("image"), rec.get("text")
        if image is None and text is None:
            raise IngestError(f"{path}: {where}: neither 'image' nor 'text'")
        sid = rec.get("sample_id")
        sid = f"{name}-{sid if sid is not None else i}"
        if image is not None or rec.get("sample_id") is not None:
            entry = samples.setdefault(sid, {"where": where})
            if image is not None:
                entry.setdefault("image", image)
            for key in ("label", "label_name", "split"):
                if rec.get(key) is not None:
                    entry.setdefault(key, rec[key])
            owner = sid
        else:
            owner = None
        if text is not None or image is None:
            texts.append((where, owner, str(rec.get("lang") or default_lang), text))
    split_of = dict(zip(samples, seeded_splits(len(samples), seed), strict=True))
    b = ManifestBuilder(name)
    for sid, entry in samples.items():
        label, label_name = entry.get("label"), entry.get("label_name")
        if label is not None:
            label, label_name, problem = _label(label, label_name, label_index)
            if problem:
                b.seen += 1
                b.reject(sid, f"{path.name} {entry['where']}: {problem}")
                bad[sid] = problem
                continue
        image = entry.get("image")
        if isinstance(image, str):
            if image.startswith(("http://", "https://")):
                if fetch is None:
                    raise ValueError(f"dataset {name!r}: {path} {entry['where']}: image URL but no downloader")
                try:
                    image = fetch(image)
                except OSError as exc:
                    b.seen += 1
                    b.reject(sid, f"{path.name} {entry['where']}: download failed: {exc}")
                    bad[sid] = "download"
                    continue
            else:
                image = Path(image) if Path(image).is_absolute() else path.parent / image
        elif image is not None and not isinstance(image, bytes):
            image = image.get("bytes") if isinstance(image, dict) else None
        if not b.add_sample(sid, str(entry.get("split") or split_of[sid]), image, label, label_name):
            bad[sid] = "image"
    for j, (_where, owner, lang, text) in enumerate(texts):
        if owner is not None and (owner in bad or not b.has_sample(owner)):
            continue
        b.add_text(f"{owner or name}-t{j}-{lang}", owner, None, lang, text)
    return b.result({"format": f"generic-{fmt}", "labels": labels or "from data"})


def _label(label, label_name, index: dict[str, int] | None) -> tuple[int | None, str | None, str | None]:
    if isinstance(label, str) and not label.lstrip("-").isdigit():
        if index is None:
            return None, None, f"label {label!r} is a name but the dataset declares no 'labels' list"
        if label not in index:
            return None, None, f"unknown label {label!r}"
        return index[label], label, None
    value = int(label)
    if index is not None and not 0 <= value < len(index):
        return None, None, f"unknown label {value} ({len(index)} classes)"
    names = list(index) if index else None
    return value, label_name or (names[value] if names else None), None


@register_source
class ManifestSource(SourceDataset):
    """Profile entry ``kind: manifest``: a CSV, JSON Lines or Parquet manifest; ``labels`` names the
    classes in label order; ``text_only: true`` for a manifest without images."""

    kind: Literal["manifest"]
    file: Text
    labels: non_empty(Text) | None = None
    languages: non_empty(Lang) = ("en",)
    text_only: Flag = False

    @property
    def has_images(self) -> bool:
        return not self.text_only

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        from conescope.download import DownloadUnavailable, fetch_http, offline

        def fetch(url: str) -> Path:
            """An image URL, cached under raw/<ds>/url-cache/; a failure rejects that sample only."""
            suffix = Path(url.split("?")[0]).suffix[:8] or ".img"
            dest = raw_dir / "url-cache" / (hashlib.sha256(url.encode()).hexdigest() + suffix)
            if not dest.is_file() and offline():
                raise DownloadUnavailable(f"{url}: downloads are off (CONESCOPE_OFFLINE / HF_HUB_OFFLINE); "
                                          f"put the image at {dest}")
            return fetch_http(url, dest)

        labels = list(self.labels) if self.labels else None
        result = read_generic(self.name, self.at(raw_dir, self.file), labels, self.seed,
                              languages[0] if languages else "en", fetch, self.n)
        texts = result.manifest.texts
        if any(lang not in languages for lang in texts.column("lang").to_pylist()):
            keep = pc.is_in(texts.column("lang"), value_set=pa.array(list(languages), type=pa.string()))
            result.manifest = type(result.manifest)(result.manifest.samples, texts.filter(keep))
        return result
