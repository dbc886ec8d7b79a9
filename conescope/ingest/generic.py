"""A generic manifest in CSV, JSONL or Parquet: one row per (image, text) or per image or per text.

Columns (all optional except that a row needs an image or a text):

- ``sample_id``: groups rows of one image (several captions, several languages); default: the row number;
- ``image``: a file path (relative to the manifest's folder, or absolute), an ``http(s)://`` URL (fetched
  into the data root through ``fetch``), or, in Parquet, the encoded bytes;
- ``text``, ``lang`` (default ``en``), ``label`` (an integer, or a class name looked up in ``labels``),
  ``label_name``, ``split`` (default: a seeded 80/20 split over samples).

Rows with a text but no image and no ``sample_id`` are text-only. Of the rows of one sample, the first
that gives an image, a label, a label name or a split sets it; a later row giving another one, or
repeating an earlier row of the sample in every column, is rejected (its reason names both rows).
The rules are the same for every format: a blank text (empty or only spaces) is an empty caption and
rejected; a null text means the row gives no text (JSON Lines: ``text`` absent or null; Parquet: null).
A CSV file has no null text: a row of a file with a ``text`` column has a text, and an empty cell is an
empty caption. A blank value of any other column is the same as a null one (no image, no label, ...). A
label not among ``labels`` (when they are given) rejects the sample. Files are scanned with polars;
errors name the file and the line (CSV, JSON Lines) or row (Parquet).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from conescope.dataset_specs import SourceDataset, register_source
from conescope.ingest.common import (
    IngestError,
    IngestResult,
    ManifestBuilder,
    jsonl_objects,
    need_file,
    open_utf8,
    seeded_splits,
)
from conescope.profile_schema import Flag, Lang, Text, non_empty

COLUMNS = ("sample_id", "image", "text", "lang", "label", "label_name", "split")
_TEXT_COLUMNS = ("sample_id", "text", "lang", "label_name", "split")


def manifest_format(path: Path) -> str:
    suffixes = "".join(path.suffixes[-2:]).lower()
    for fmt, exts in (("csv", (".csv",)), ("jsonl", (".jsonl", ".ndjson")), ("parquet", (".parquet", ".pq"))):
        if any(suffixes.endswith(e) for e in exts):
            return fmt
    raise ValueError(f"{path}: cannot tell the manifest format from the extension (use .csv, .jsonl or .parquet)")


def _scan(path: Path, fmt: str) -> pl.DataFrame:
    """The manifest's rows with every column of :data:`COLUMNS` and ``where`` (the line or row)."""
    if fmt == "csv":
        frame = _csv(path)
        where = pl.format("line {}", pl.int_range(2, pl.len() + 2))
    elif fmt == "jsonl":
        frame, lines = _jsonl(path)
        where = pl.format("line {}", pl.Series(lines, dtype=pl.Int64))
    else:
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # polars raises ComputeError/OSError on non-Parquet input
            raise IngestError(f"{path}: not a readable Parquet file: {exc}") from exc
        where = pl.format("row {}", pl.int_range(0, pl.len()))
    missing = [pl.lit(None, dtype=pl.String).alias(c) for c in COLUMNS if c not in frame.columns]
    frame = frame.with_columns(*missing, where.alias("where"))
    if frame.schema["label"].is_numeric():  # 3.0 is label 3, as int() reads it
        frame = frame.with_columns(pl.col("label").cast(pl.Int64, strict=False))
    frame = frame.with_columns(pl.col(*_TEXT_COLUMNS, "label").cast(pl.String))
    blank = [c for c in COLUMNS if c != "text" and frame.schema[c] == pl.String]
    return frame.with_columns(pl.when(pl.col(c).str.strip_chars() != "").then(pl.col(c)).alias(c) for c in blank)


def _csv(path: Path) -> pl.DataFrame:
    try:
        frame = pl.read_csv(path, infer_schema=False, raise_if_empty=False)
    except pl.exceptions.ComputeError as exc:
        raise _csv_error(path, exc) from exc
    if "text" in frame.columns:  # a CSV cell cannot be null: an empty one is an empty caption
        frame = frame.with_columns(pl.col("text").fill_null(""))
    return frame


def _csv_error(path: Path, exc: Exception) -> IngestError:
    import csv

    with open_utf8(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        for row in reader:
            if len(row) > len(header):
                return IngestError(f"{path}: line {reader.line_num}: more fields than the header has")
    return IngestError(f"{path}: not a readable CSV file: {exc}")


def _jsonl(path: Path) -> tuple[pl.DataFrame, list[int]]:
    """The rows and the line number of each (blank lines hold no row)."""
    with open_utf8(path) as fh:
        lines = [n for n, line in enumerate(fh, start=1) if line.strip()]
    try:
        return pl.read_ndjson(path, infer_schema_length=None), lines
    except Exception as exc:  # polars names no line: find it
        for _ in jsonl_objects(path):
            pass
        raise IngestError(f"{path}: not readable as JSON Lines: {exc}") from exc


def _owners(rows: pl.DataFrame, name: str, limit: int | None) -> pl.DataFrame:
    """Each row's sample (``owner``: null for a text-only row), cut before the row that would bring
    the ``limit + 1``-th sample."""
    sid = pl.format("{}-{}", pl.lit(name), pl.coalesce("sample_id", pl.int_range(0, pl.len()).cast(pl.String)))
    rows = rows.with_columns(
        pl.when(pl.col("image").is_not_null() | pl.col("sample_id").is_not_null()).then(sid).alias("owner"))
    if limit is not None:
        first = rows.with_row_index("i").filter(pl.col("owner").is_not_null()).group_by(
            "owner", maintain_order=True).agg(pl.col("i").first())
        if first.height > limit:
            rows = rows.head(first["i"][limit])
    return rows


_SAMPLE_COLUMNS = ("image", "label", "label_name", "split")


def _duplicates(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the rows kept, the rows rejected with their ``problem``): a row of a sample that repeats an
    earlier row of it in every column, or gives it another image, label, label name or split than the
    first of its rows that gives one (which stays)."""
    rows = rows.with_row_index("_row")
    owned = pl.col("owner").is_not_null()
    repeats = pl.col("_row").first().over("owner", *COLUMNS)
    problem = pl.when(owned & (pl.col("_row") != repeats)).then(pl.format(
        "repeats {} (sample_id '{}')", pl.col("where").first().over("owner", *COLUMNS), pl.col("sample_id")))
    for column in _SAMPLE_COLUMNS:
        given = pl.col(column).is_not_null()
        first = pl.col(column).filter(given).first().over("owner")
        problem = problem.when(owned & given & (pl.col(column) != first)).then(pl.format(
            "sample_id '{}' again, with another {} than {} (that one is kept)", pl.col("sample_id"),
            pl.lit(column.replace("_", " ")), pl.col("where").filter(given).first().over("owner")))
    rows = rows.with_columns(problem.alias("problem"))
    bad = pl.col("problem").is_not_null()
    return rows.filter(~bad).drop("_row", "problem"), rows.filter(bad)


def _labelled(samples: pl.DataFrame, labels: list[str] | None) -> pl.DataFrame:
    """``label`` as an integer and ``label_name``, or ``problem`` saying why the label is unusable."""
    label = pl.col("label")
    is_name = label.is_not_null() & ~label.str.contains(r"^-?\d+$")
    number = label.cast(pl.Int64, strict=False)
    names = labels or []
    by_name = label.replace_strict(names, list(range(len(names))), default=None, return_dtype=pl.Int64)
    named = pl.lit(None, dtype=pl.String) if not names else number.replace_strict(
        list(range(len(names))), names, default=None, return_dtype=pl.String)
    problem = (
        pl.when(is_name & (labels is None))
        .then(pl.format("label '{}' is a name but the dataset declares no 'labels' list", label))
        .when(is_name & by_name.is_null()).then(pl.format("unknown label '{}'", label))
        .when(~is_name & label.is_not_null() & (labels is not None) & ~number.is_between(0, len(names) - 1))
        .then(pl.format("unknown label {} ({} classes)", number, pl.lit(len(names))))
    )
    return samples.with_columns(
        pl.when(is_name).then(by_name).otherwise(number).alias("label"),
        pl.when(is_name).then(label).otherwise(pl.coalesce("label_name", named)).alias("label_name"),
        problem.alias("problem"))


def read_generic(name: str, path: Path, labels: list[str] | None = None, seed: int = 0, default_lang: str = "en",
                 fetch: Callable[[str], Path] | None = None, limit: int | None = None) -> IngestResult:
    need_file(path, name, "manifest")
    fmt = manifest_format(path)
    rows = _scan(path, fmt)
    empty = rows.filter(pl.col("image").is_null() & pl.col("text").is_null())
    if empty.height:
        raise IngestError(f"{path}: {empty['where'][0]}: neither 'image' nor 'text'")
    rows = _owners(rows, name, limit)
    rows, duplicates = _duplicates(rows)
    samples = _labelled(rows.filter(pl.col("owner").is_not_null()).group_by("owner", maintain_order=True).agg(
        pl.col("where").first(), *(pl.col(c).drop_nulls().first() for c in ("image", "label", "label_name", "split"))),
        labels)
    samples = samples.with_columns(pl.coalesce("split", pl.Series(seeded_splits(samples.height, seed))))
    b = ManifestBuilder(name)
    for sid, where, problem in duplicates.select("owner", "where", "problem").iter_rows():
        b.seen += 1
        b.reject(sid, f"{path.name} {where}: {problem}")
    bad: set[str] = set()
    for sid, where, image, label, label_name, split, problem in samples.select(
            "owner", "where", "image", "label", "label_name", "split", "problem").iter_rows():
        if problem is None:
            image, problem = _image(image, path, where, name, fetch)
        if problem is not None:
            b.seen += 1
            b.reject(sid, f"{path.name} {where}: {problem}")
            bad.add(sid)
        elif not b.add_sample(sid, split, image, label, label_name):
            bad.add(sid)
    texts = rows.filter(pl.col("text").is_not_null()).with_row_index("j").with_columns(
        pl.col("lang").fill_null(default_lang))
    for j, owner, lang, text in texts.select("j", "owner", "lang", "text").iter_rows():
        if owner is not None and (owner in bad or not b.has_sample(owner)):
            continue
        b.add_text(f"{owner or name}-t{j}-{lang}", owner, None, lang, text)
    return b.result({"format": f"generic-{fmt}", "labels": labels or "from data"})


def _image(image, path: Path, where: str, name: str,
           fetch: Callable[[str], Path] | None) -> tuple[bytes | Path | None, str | None]:
    """The sample's image as bytes or a file (a URL fetched), or why there is none."""
    if isinstance(image, dict):  # Parquet image structs as the hub writes them: {bytes, path}
        return image.get("bytes"), None
    if not isinstance(image, str):
        return image, None
    if not image.startswith(("http://", "https://")):
        return (Path(image) if Path(image).is_absolute() else path.parent / image), None
    if fetch is None:
        raise ValueError(f"dataset {name!r}: {path} {where}: image URL but no downloader")
    try:
        return fetch(image), None
    except OSError as exc:
        return None, f"download failed: {exc}"


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
