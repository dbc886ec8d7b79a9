"""What every reader shares: the manifest builder, reject bookkeeping, and input errors.

A reader turns one source format into the normalized manifest of docs/storage.md (``conescope.datasets``
schemas). Bad samples (a missing or undecodable image, an empty caption, an unknown label) are
skipped and recorded as rejects ``(sample_id, reason)``; the caller stores them in the warehouse table
``datasets.rejects`` (stage ``ingest``) and fails the run only when their fraction passes the
dataset's ``max_reject_fraction``. A file that cannot be parsed at all raises :class:`IngestError`
naming the file and the line or row.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from conescope.datasets import SAMPLES_SCHEMA, TEST_FRACTION, TEXTS_SCHEMA, Manifest


class IngestError(ValueError):
    """A source file is malformed; the message names the file and the line or row."""


class TooManyRejects(ValueError):
    """More samples were rejected than the dataset's ``max_reject_fraction`` allows."""


@dataclass(frozen=True)
class Reject:
    sample_id: str
    reason: str


@dataclass
class IngestResult:
    manifest: Manifest
    rejects: list[Reject]
    seen: int  # samples (or texts, for text-only sources) read before rejection
    languages: tuple[str, ...]  # languages with at least one text
    info: dict = field(default_factory=dict)  # reader settings recorded in the provenance
    tables: dict[str, pa.Table] = field(default_factory=dict)  # extra manifest tables (e.g. STS pairs)

    @property
    def has_images(self) -> bool:
        s = self.manifest.samples
        return s.num_rows > 0 and (s.column("image").null_count < s.num_rows
                                   or s.column("image_path").null_count < s.num_rows)

    def check_rejects(self, dataset: str, max_fraction: float) -> None:
        fraction = len(self.rejects) / self.seen if self.seen else 0.0
        if fraction > max_fraction:
            examples = "; ".join(f"{r.sample_id}: {r.reason}" for r in self.rejects[:5])
            raise TooManyRejects(
                f"dataset {dataset!r}: {len(self.rejects)} of {self.seen} samples rejected "
                f"({fraction:.1%} > max_reject_fraction {max_fraction:.1%}); first: {examples}. "
                f"Every reject is in the warehouse table datasets.rejects (stage 'ingest').")


def check_image(data: bytes | Path) -> str | None:
    """None when ``data`` (bytes or a file) holds a decodable image, else why not."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, Path) and not data.is_file():
        return f"image file missing: {data}"
    try:
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as img:
            img.verify()  # checks structure without decoding every pixel
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as img:
            # truncated files pass verify() and fail here; JPEGs decode at 1/8 scale (draft mode still
            # reads the whole entropy-coded stream), so checking 40k COCO images stays cheap
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"image could not be decoded: {exc}"
    return None


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def seeded_splits(n: int, seed: int, test_fraction: float = TEST_FRACTION) -> list[str]:
    """The split of the in-domain protocol (docs/transforms.md): a seeded 80/20 train/test split."""
    rng = np.random.default_rng(seed)
    test = np.zeros(n, dtype=bool)
    test[rng.permutation(n)[: int(round(n * test_fraction))]] = True
    return ["test" if t else "train" for t in test]


class ManifestBuilder:
    """Collects samples and texts, validating each one; rejected ones go to :attr:`rejects`."""

    def __init__(self, name: str, validate_images: bool = True):
        self.name = name
        self.validate_images = validate_images
        self.samples: dict[str, list] = {k: [] for k in SAMPLES_SCHEMA.names}
        self.texts: dict[str, list] = {k: [] for k in TEXTS_SCHEMA.names}
        self.rejects: list[Reject] = []
        self.seen = 0
        self._sample_ids: set[str] = set()

    def reject(self, sample_id: str, reason: str) -> None:
        self.rejects.append(Reject(sample_id, reason))

    def add_sample(self, sample_id: str, split: str, image: bytes | Path | None, label: int | None = None,
                   label_name: str | None = None, where: str | None = None) -> bool:
        """Add one sample (``image`` as encoded bytes, a file path, or None for text-only sources);
        returns False (and records a reject) when its image is missing or corrupt, or when its id was
        added before (the first stays; ``where``, the file and line, goes into the reason)."""
        self.seen += 1
        if sample_id in self._sample_ids:
            self.reject(sample_id, f"{where + ': ' if where else ''}duplicate sample id {sample_id!r} "
                                   f"(the first one is kept)")
            return False
        if image is not None and self.validate_images:
            problem = check_image(image)
            if problem:
                self.reject(sample_id, problem)
                return False
        self._sample_ids.add(sample_id)
        path = str(Path(image).resolve()) if isinstance(image, Path) else None
        for key, value in (("sample_id", sample_id), ("split", split),
                           ("image", image if isinstance(image, bytes) else None), ("image_path", path),
                           ("label", label), ("label_name", label_name)):
            self.samples[key].append(value)
        return True

    def has_sample(self, sample_id: str) -> bool:
        return sample_id in self._sample_ids

    def add_text(self, text_id: str, sample_id: str | None, label: int | None, lang: str, text: str | None) -> bool:
        """Add a caption (``sample_id`` set) or a class prompt (``label`` set); an empty text is rejected."""
        if text is None or not str(text).strip():
            self.reject(text_id, f"empty {lang} text")
            return False
        for key, value in (("text_id", text_id), ("sample_id", sample_id), ("label", label), ("lang", lang),
                           ("text", str(text).strip())):
            self.texts[key].append(value)
        return True

    def result(self, info: dict | None = None, seen: int | None = None) -> IngestResult:
        samples = pa.table(self.samples, schema=SAMPLES_SCHEMA)
        texts = pa.table(self.texts, schema=TEXTS_SCHEMA)
        languages = tuple(dict.fromkeys(self.texts["lang"]))
        return IngestResult(Manifest(samples, texts), self.rejects, self.seen if seen is None else seen,
                            languages, info or {})


def not_utf8(path: Path) -> IngestError | None:
    """An :class:`IngestError` naming the line and column of the first byte of ``path`` that is not
    UTF-8, or None when the whole file decodes."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        return IngestError(f"{path}: line {line}, column {column}: byte 0x{data[exc.start]:02x} is not UTF-8 "
                           f"({exc.reason}); save the file as UTF-8")
    return None


@contextmanager
def open_utf8(path: Path, newline: str | None = None) -> Iterator[io.TextIOWrapper]:
    """``path`` opened as UTF-8 text; a byte that does not decode is an :class:`IngestError` naming
    the file, the line and the column rather than a position in a buffer."""
    with open(path, encoding="utf-8", newline=newline) as fh:
        try:
            yield fh
        except UnicodeDecodeError as exc:
            raise (not_utf8(path) or IngestError(f"{path}: not UTF-8: {exc}")) from exc


def jsonl_objects(path: Path):
    """(line number, object) for each non-blank line of a JSON Lines file; a line that is not a JSON
    object is an :class:`IngestError` naming the file, the line and the column."""
    import json

    with open_utf8(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise IngestError(f"{path}: line {line_no}, column {exc.pos + 1}: not valid JSON: "
                                  f"{exc.msg.removesuffix(' at')}") from exc
            if not isinstance(rec, dict):
                raise IngestError(f"{path}: line {line_no}: expected a JSON object")
            yield line_no, rec


def need_file(path: Path, dataset: str, what: str) -> Path:
    """``path`` if it is a file, else a FileNotFoundError that says what belongs there."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset {dataset!r}: {what} not found at {path}")
    return path


def need_dir(path: Path, dataset: str, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {dataset!r}: {what} (a directory) not found at {path}")
    return path
