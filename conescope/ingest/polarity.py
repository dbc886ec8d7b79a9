"""Sentence polarity data v1.0 (Pang & Lee 2005): movie-review sentences labelled negative (0) or
positive (1), text only; the data of Mickus et al.'s first setup ("Isotropy, Clusters, and Classifiers").

Two files, one sentence per line: ``rt-polarity.neg`` (label 0) and ``rt-polarity.pos`` (label 1),
5,331 lines each. Each line is one sample (``label``, ``label_name``, no image) with one English text.
Cornell's archive is Windows-1252 in places where the copies in circulation are UTF-8: a line is
decoded as UTF-8, else as Windows-1252 (as the original files are written); a line that is neither,
or blank, is rejected with its file and line number. Splits: the seeded 80/20 split of every source
kind (``conescope.ingest.common.seeded_splits``) over the samples in file order, negatives first.

``files: bundled`` (default) reads the copies shipped in ``conescope/bundled/polarity/`` (provenance
and licence in its ``PROVENANCE.md``), offline; ``files: cornell`` reads
``rt-polaritydata/rt-polarity.{neg,pos}`` under the raw folder, which the default ``download`` entry
fetches from Cornell's movie-review data page and unpacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from conescope.dataset_specs import SourceDataset, register_source
from conescope.ingest.common import IngestResult, ManifestBuilder, need_file, seeded_splits

BUNDLED = Path(__file__).resolve().parent.parent / "bundled" / "polarity"
CORNELL_URL = "https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz"
CORNELL_FOLDER = "rt-polaritydata"
# (file, label, label name), in the order the samples are written
POLARITY_FILES = (("rt-polarity.neg", 0, "negative"), ("rt-polarity.pos", 1, "positive"))


def decode_line(raw: bytes) -> str | None:
    """The line as text: UTF-8, else Windows-1252 (Cornell's files); None when it is neither (a byte
    Windows-1252 leaves undefined: 0x81, 0x8d, 0x8f, 0x90, 0x9d)."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


def read_polarity(name: str, folder: Path, seed: int = 0, limit: int | None = None) -> IngestResult:
    """The two files of ``folder``; ``limit``: at most this many samples, the first ``limit // 2``
    negative lines and the first ``limit - limit // 2`` positive ones (both classes kept)."""
    b = ManifestBuilder(name, validate_images=False)
    kept: list[tuple[str, int, str, str]] = []  # (sample id, label, label name, text)
    for k, (filename, label, label_name) in enumerate(POLARITY_FILES):
        path = need_file(folder / filename, name, f"sentence polarity file {filename}")
        quota = None if limit is None else (limit // 2 if k == 0 else limit - limit // 2)
        taken = 0
        # split on \n only: a Windows-1252 line may hold bytes that str.splitlines takes for breaks
        lines = path.read_bytes().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for line_no, raw in enumerate(lines, start=1):
            if quota is not None and taken >= quota:
                break
            sid = f"{name}-{label_name[:3]}-{line_no}"
            text = decode_line(raw.rstrip(b"\r"))
            if text is None:
                b.seen += 1
                b.reject(sid, f"{filename}: line {line_no}: neither UTF-8 nor Windows-1252")
                continue
            if not text.strip():
                b.seen += 1
                b.reject(sid, f"{filename}: line {line_no}: blank sentence")
                continue
            kept.append((sid, label, label_name, text))
            taken += 1
    for (sid, label, label_name, text), split in zip(kept, seeded_splits(len(kept), seed), strict=True):
        b.add_sample(sid, split, None, label, label_name)
        b.add_text(f"{sid}-en", sid, None, "en", text)
    return b.result({"format": "polarity", "files": [f for f, _, _ in POLARITY_FILES]})


@register_source
class PolaritySource(SourceDataset):
    """Profile entry ``kind: polarity``: the bundled copy (``files: bundled``) or Cornell's archive
    under the raw folder (``files: cornell``, fetched by the default ``download`` entry)."""

    kind: Literal["polarity"]
    files: Literal["bundled", "cornell"] = "bundled"
    has_images: ClassVar[bool] = False
    languages: ClassVar[tuple[str, ...]] = ("en",)

    @classmethod
    def from_yaml(cls, data: dict) -> dict:
        if data.get("files") == "cornell" and "download" not in data:
            data["download"] = [{"url": CORNELL_URL, "file": "rt-polaritydata.tar.gz", "unpack": True,
                                 "provides": f"{CORNELL_FOLDER}/{POLARITY_FILES[0][0]}"}]
        return data

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        folder = BUNDLED if self.files == "bundled" else raw_dir / CORNELL_FOLDER
        return read_polarity(self.name, folder, self.seed, self.n)
