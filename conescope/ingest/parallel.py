"""Parallel multilingual captions: one image (or one sentence group) described in several languages.

- WikiCaps-style TSV (Schamoni et al. 2018, as used by Tyshchuk et al. section 5.4): a header row with
  one column per language code (``en``, ``fr``, ``de``, ``ru``, ...), an optional ``image`` column (a file
  relative to ``image_dir``) and an optional ``id`` column. Without images the dataset is text-only:
  samples carry no image and only text metrics run on it.
- Crossmodal-3600 (Thapliyal et al. 2022): ``captions.jsonl``, one line per image, ``{"image/key": k,
  "<lang>": {"caption": [...]}, ...}`` for 36 languages; images at ``<image_dir>/<k>.jpg``.
- Multi30k (Elliott et al. 2016): ``raw/<split>.<lang>[.gz]`` line-aligned captions and
  ``image_splits/<split>.txt`` naming each line's Flickr30k image.

Languages missing for an image are simply absent from the texts; the manifest records which
languages it has, so a profile can ask only for those.
"""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from conescope.dataset_specs import SourceDataset, register_source
from conescope.ingest.common import (
    IngestError,
    IngestResult,
    ManifestBuilder,
    jsonl_objects,
    need_dir,
    need_file,
    open_utf8,
    seeded_splits,
)
from conescope.profile_schema import Flag, Lang, Text, non_empty, problem

XM3600_LANGUAGES = ("ar", "bn", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fil", "fr", "he", "hi", "hr", "hu",
                    "id", "it", "ja", "ko", "mi", "nl", "no", "pl", "pt", "quz", "ro", "ru", "sv", "sw", "te", "th",
                    "tr", "uk", "vi", "zh")
MULTI30K_LANGUAGES = ("en", "de", "fr", "cs")
_LANG_COLUMN = re.compile(r"^[a-z]{2,3}$")


def read_wikicaps_tsv(name: str, path: Path, image_dir: Path | None = None, languages: tuple[str, ...] | None = None,
                      seed: int = 0, limit: int | None = None) -> IngestResult:
    need_file(path, name, "parallel-caption TSV")
    if image_dir is not None:
        need_dir(image_dir, name, "image folder of the TSV's image column")
    b = ManifestBuilder(name)
    with open_utf8(path, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header:
            raise IngestError(f"{path}: line 1: empty file, expected a header row")
        langs = [c for c in header if _LANG_COLUMN.match(c)]
        if languages:
            absent = [lang for lang in languages if lang not in langs]
            if absent:
                raise IngestError(f"{path}: line 1: no column for language(s) {', '.join(absent)} "
                                  f"(header: {', '.join(header)})")
            langs = list(languages)
        if not langs:
            raise IngestError(f"{path}: line 1: no language column (expected codes such as en, fr; header: "
                              f"{', '.join(header)})")
        if "image" in header and image_dir is None:
            raise ValueError(f"dataset {name!r}: {path} has an image column; set image_dir to its folder")
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise IngestError(f"{path}: line {line_no}: {len(row)} fields, header has {len(header)}")
            rows.append((line_no, dict(zip(header, row, strict=True))))
            if limit is not None and len(rows) >= limit:
                break
    splits = seeded_splits(len(rows), seed)
    for (line_no, rec), split in zip(rows, splits, strict=True):
        sid = f"{name}-{rec.get('id') or line_no}"
        image = image_dir / rec["image"] if image_dir is not None and "image" in rec else None
        if not b.add_sample(sid, split, image, where=f"{path.name} line {line_no}"):
            continue
        for lang in langs:
            b.add_text(f"{sid}-{lang}", sid, None, lang, rec[lang])
    return b.result({"format": "wikicaps-tsv", "languages": langs, "split": f"seeded 80/20, seed {seed}"})


def read_xm3600(name: str, captions: Path, image_dir: Path, languages: tuple[str, ...] | None = None,
                first_caption: bool = True, seed: int = 0, limit: int | None = None) -> IngestResult:
    need_file(captions, name, "Crossmodal-3600 captions (captions.jsonl)")
    need_dir(image_dir, name, "Crossmodal-3600 image folder")
    records = []
    for line_no, rec in jsonl_objects(captions):
        if not isinstance(rec.get("image/key"), str):
            raise IngestError(f"{captions}: line {line_no}: missing 'image/key'")
        records.append((line_no, rec))
        if limit is not None and len(records) >= limit:
            break
    splits = seeded_splits(len(records), seed)
    b = ManifestBuilder(name)
    for (line_no, rec), split in zip(records, splits, strict=True):
        key = rec["image/key"]
        sid = f"{name}-{key}"
        if not b.add_sample(sid, split, image_dir / f"{key}.jpg", where=f"{captions.name} line {line_no}"):
            continue
        for lang, entry in rec.items():
            if lang == "image/key" or (languages and lang not in languages):
                continue
            caps = entry.get("caption") if isinstance(entry, dict) else None
            if not isinstance(caps, list):
                raise IngestError(f"{captions}: line {line_no}: {lang}: expected {{'caption': [...]}}")
            for j, cap in enumerate(caps[:1] if first_caption else caps):
                b.add_text(f"{sid}-{lang}-{j}", sid, None, lang, cap)
    return b.result({"format": "xm3600", "first_caption": first_caption,
                     "languages": list(languages) if languages else "all",
                     "split": f"seeded 80/20, seed {seed}"})


MULTI30K_SPLITS = {"train": "train", "val": "val"}  # every test_* split maps to test


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def read_multi30k(name: str, root: Path, image_dir: Path, splits: tuple[str, ...] = ("train", "val",
                  "test_2016_flickr"), languages: tuple[str, ...] = ("en", "de", "fr", "cs"),
                  limit: int | None = None) -> IngestResult:
    """``root`` is the Multi30k ``data/task1`` folder; ``image_dir`` the Flickr30k images."""
    need_dir(root, name, "Multi30k data/task1 folder")
    need_dir(image_dir, name, "Flickr30k image folder")
    b = ManifestBuilder(name)
    present: list[str] = []
    for split in splits:
        index = need_file(root / "image_splits" / f"{split}.txt", name, f"Multi30k image list of split {split!r}")
        images = [x.strip() for x in _lines(index)]
        captions: dict[str, list[str]] = {}
        for lang in languages:
            candidates = [root / "raw" / f"{split}.{lang}.gz", root / "raw" / f"{split}.{lang}"]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                continue  # not every split has every language (cs and fr lack some test sets)
            lines = _lines(found)
            if len(lines) != len(images):
                raise IngestError(f"{found}: {len(lines)} lines, but {index} lists {len(images)} images "
                                  f"(line {min(len(lines), len(images)) + 1} has no partner)")
            captions[lang] = lines
            present.append(lang)
        target = MULTI30K_SPLITS.get(split, "test" if split.startswith("test") else split)
        for i, image in enumerate(images[:limit] if limit is not None else images):
            sid = f"{name}-{split}-{i:05d}"
            if not image:
                raise IngestError(f"{index}: line {i + 1}: empty image name")
            if not b.add_sample(sid, target, image_dir / image):
                continue
            for lang, lines in captions.items():
                b.add_text(f"{sid}-{lang}", sid, None, lang, lines[i])
    return b.result({"format": "multi30k", "splits": list(splits), "languages": sorted(set(present))})


def _known(languages: tuple[str, ...], known: tuple[str, ...], source: str) -> None:
    unknown = [lang for lang in languages if lang not in known]
    if unknown:
        raise problem(f"not in {source}: {', '.join(unknown)}", "languages")


@register_source
class WikiCapsSource(SourceDataset):
    """Profile entry ``kind: wikicaps``: a parallel-caption TSV; text only unless ``images`` names a folder."""

    kind: Literal["wikicaps"]
    file: Text
    images: Text | None = None
    languages: non_empty(Lang) = ("en", "fr", "de", "ru")

    @property
    def has_images(self) -> bool:
        return self.images is not None

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        return read_wikicaps_tsv(self.name, self.at(raw_dir, self.file), self.at(raw_dir, self.images), languages,
                                 self.seed, self.n)


@register_source
class Xm3600Source(SourceDataset):
    """Profile entry ``kind: xm3600``: Crossmodal-3600 captions and images."""

    kind: Literal["xm3600"]
    captions: Text = "captions.jsonl"
    images: Text = "images"
    languages: non_empty(Lang) = XM3600_LANGUAGES
    first_caption: Flag = True

    @model_validator(mode="after")
    def _known_languages(self) -> Xm3600Source:
        _known(self.languages, XM3600_LANGUAGES, "Crossmodal-3600")
        return self

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        return read_xm3600(self.name, self.at(raw_dir, self.captions), self.at(raw_dir, self.images), languages,
                           self.first_caption, self.seed, self.n)


@register_source
class Multi30kSource(SourceDataset):
    """Profile entry ``kind: multi30k``: the ``data/task1`` folder and the Flickr30k images."""

    kind: Literal["multi30k"]
    root: Text = "data/task1"
    images: Text = "flickr30k-images"
    splits: non_empty(Text) = ("train", "val", "test_2016_flickr")
    languages: non_empty(Lang) = MULTI30K_LANGUAGES

    @model_validator(mode="after")
    def _known_languages(self) -> Multi30kSource:
        _known(self.languages, MULTI30K_LANGUAGES, "Multi30k")
        return self

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        return read_multi30k(self.name, self.at(raw_dir, self.root), self.at(raw_dir, self.images), self.splits,
                             languages, self.n)
