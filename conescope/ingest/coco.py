"""COCO captions: the official annotation JSON (``captions_val2014.json``) with its image folder, or the
Karpathy split JSON (``dataset_coco.json``).

Tyshchuk et al. embed the *first* caption of every val2014 image (``first_caption: true``): the first
annotation of that image in file order. ``first_caption: false`` keeps all (about five per image).
The official files carry no train/test split, so a seeded 80/20 split is drawn (the paper's protocol,
seed 0); the Karpathy JSON brings its own (``train`` and ``restval`` -> train, ``val`` -> val,
``test`` -> test). Images are ingested by reference (``image_path``), so the manifest stays small.
Sample ids are ``<dataset>-<cocoid>``.

Row order: the annotation file's image order (``image_order: file``, the default), or sorted image id
(``image_order: id``): the order of torchvision's ``CocoDetection`` (``sorted(coco.imgs)``), through which
Tyshchuk et al. embedded COCO, so that their ``torch.randperm`` split (``conescope.splits``) and their
consecutive batches pick the same images here (docs/fidelity.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

from conescope.dataset_specs import SourceDataset, register_source
from conescope.ingest.common import (
    IngestError,
    IngestResult,
    ManifestBuilder,
    need_dir,
    need_file,
    open_utf8,
    seeded_splits,
)
from conescope.profile_schema import Flag, Text, non_empty

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def _load_json(path: Path) -> dict:
    try:
        with open_utf8(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}") from exc


def _field(path: Path, where: str, record: dict, key: str, types: type | tuple):
    if not isinstance(record, dict) or key not in record or not isinstance(record[key], types):
        raise IngestError(f"{path}: {where}: missing or malformed field {key!r}")
    return record[key]


def read_coco(name: str, annotations: Path, image_dir: Path, first_caption: bool = True, seed: int = 0,
              limit: int | None = None, validate_images: bool = True, image_order: str = "file") -> IngestResult:
    """Official COCO caption annotations: ``images`` (id, file_name) and ``annotations`` (image_id,
    id, caption). ``image_order``: ``file`` (as listed) or ``id`` (sorted by image id, torchvision's
    ``CocoDetection`` order). ``limit`` keeps the first ``limit`` images in that order (a quick look at a
    subset)."""
    need_file(annotations, name, "COCO caption annotations (e.g. captions_val2014.json)")
    need_dir(image_dir, name, "COCO image folder (e.g. val2014/)")
    doc = _load_json(annotations)
    images = _field(annotations, "top level", doc, "images", list)
    anns = _field(annotations, "top level", doc, "annotations", list)
    if image_order == "id":
        ids = [_field(annotations, f"images[{i}]", img, "id", int) for i, img in enumerate(images)]
        images = [images[i] for i in sorted(range(len(images)), key=ids.__getitem__)]
    elif image_order != "file":
        raise ValueError(f"image_order must be file or id, got {image_order!r}")
    if limit is not None:
        images = images[:limit]
    captions: dict[int, list[tuple[int, str]]] = {}
    for i, ann in enumerate(anns):
        where = f"annotations[{i}]"
        image_id = _field(annotations, where, ann, "image_id", int)
        ann_id = _field(annotations, where, ann, "id", int)
        caption = ann.get("caption") if isinstance(ann, dict) else None
        if caption is not None and not isinstance(caption, str):
            raise IngestError(f"{annotations}: {where}: caption is not a string")
        captions.setdefault(image_id, []).append((ann_id, caption))
    splits = seeded_splits(len(images), seed)
    b = ManifestBuilder(name, validate_images)
    for i, img in enumerate(images):
        where = f"images[{i}]"
        cocoid = _field(annotations, where, img, "id", int)
        file_name = _field(annotations, where, img, "file_name", str)
        _add_image(b, name, cocoid, splits[i], image_dir / file_name, captions.get(cocoid, []), first_caption,
                   f"{annotations.name} {where}")
    info = {"format": "coco", "first_caption": first_caption, "split": f"seeded 80/20, seed {seed}"}
    return b.result(info if image_order == "file" else {**info, "image_order": image_order})


def read_karpathy(name: str, split_json: Path, image_root: Path, first_caption: bool = True,
                  splits: tuple[str, ...] | None = None, limit: int | None = None,
                  validate_images: bool = True) -> IngestResult:
    """Karpathy's ``dataset_coco.json``: ``images`` with ``filepath`` (val2014 | train2014), ``filename``,
    ``cocoid``, ``split`` and ``sentences`` (``raw``). ``image_root`` holds the filepath folders;
    ``splits`` restricts to some Karpathy splits (e.g. ``[test]`` for the 5k test set)."""
    need_file(split_json, name, "Karpathy split JSON (dataset_coco.json)")
    need_dir(image_root, name, "COCO image root (holding train2014/ and val2014/)")
    doc = _load_json(split_json)
    images = _field(split_json, "top level", doc, "images", list)
    b = ManifestBuilder(name, validate_images)
    kept = 0
    for i, img in enumerate(images):
        where = f"images[{i}]"
        raw_split = _field(split_json, where, img, "split", str)
        if raw_split not in KARPATHY_SPLITS:
            raise IngestError(f"{split_json}: {where}: unknown split {raw_split!r} "
                              f"(expected one of {', '.join(KARPATHY_SPLITS)})")
        if splits is not None and raw_split not in splits:
            continue
        if limit is not None and kept >= limit:
            break
        kept += 1
        cocoid = _field(split_json, where, img, "cocoid", int)
        path = image_root / img.get("filepath", "") / _field(split_json, where, img, "filename", str)
        sentences = _field(split_json, where, img, "sentences", list)
        caps = [(s.get("sentid", j), s.get("raw")) for j, s in enumerate(sentences) if isinstance(s, dict)]
        _add_image(b, name, cocoid, KARPATHY_SPLITS[raw_split], path, caps, first_caption, f"{split_json.name} {where}")
    return b.result({"format": "karpathy", "first_caption": first_caption,
                     "karpathy_splits": list(splits) if splits else "all"})


def _add_image(b: ManifestBuilder, name: str, cocoid: int, split: str, path: Path,
               caps: list[tuple[int, str | None]], first_caption: bool, where: str) -> None:
    sample_id = f"{name}-{cocoid}"
    usable = [(cid, c) for cid, c in caps if c is not None and c.strip()]
    if not usable:
        b.seen += 1
        b.reject(sample_id, "no non-empty caption")
        return
    if not b.add_sample(sample_id, split, path, where=where):
        return
    for cid, caption in usable[:1] if first_caption else usable:
        b.add_text(f"{sample_id}-{cid}-en", sample_id, None, "en", caption)


@register_source
class CocoSource(SourceDataset):
    """Profile entry ``kind: coco``: the official annotation JSON and its image folder."""

    kind: Literal["coco"]
    annotations: Text = "annotations/captions_val2014.json"
    images: Text = "val2014"
    first_caption: Flag = True
    image_order: Literal["file", "id"] = "file"  # id: torchvision CocoDetection's order (docs/fidelity.md)
    languages: ClassVar[tuple[str, ...]] = ("en",)

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        return read_coco(self.name, self.at(raw_dir, self.annotations), self.at(raw_dir, self.images),
                         self.first_caption, self.seed, self.n, image_order=self.image_order)


@register_source
class KarpathySource(SourceDataset):
    """Profile entry ``kind: coco_karpathy``: Karpathy's split JSON; ``splits`` keeps some of its splits."""

    kind: Literal["coco_karpathy"]
    split_json: Text = "dataset_coco.json"
    images: Text = "."
    first_caption: Flag = True
    splits: non_empty(Text) | None = None
    languages: ClassVar[tuple[str, ...]] = ("en",)

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        return read_karpathy(self.name, self.at(raw_dir, self.split_json), self.at(raw_dir, self.images),
                             self.first_caption, self.splits, self.n)
