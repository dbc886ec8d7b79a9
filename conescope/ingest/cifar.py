"""CIFAR-100: the official python archive (``cifar-100-python.tar.gz``, Krizhevsky 2009) or Parquet with
image bytes as published on the Hugging Face hub (``uoft-cs/cifar100``: ``img`` {bytes, path},
``fine_label``, ``coarse_label``).

Images are stored as PNG bytes (32x32, lossless). Labels are the 100 fine classes (``label: fine``,
default) or the 20 superclasses (``label: coarse``). Texts are class prompts (``conescope.ingest.prompts``).
The official archive keeps its train/test split; Parquet files are given per split.
"""

from __future__ import annotations

import json
import pickle
import tarfile
from dataclasses import field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq
from pydantic import model_validator

from conescope.dataset_specs import SourceDataset, register_source
from conescope.ingest.common import IngestError, IngestResult, ManifestBuilder, need_file, png_bytes
from conescope.ingest.prompts import (
    CLASS_NAME_STYLES,
    PAPER_TEMPLATE,
    add_class_prompts,
    load_translated_names,
    styled_names,
)
from conescope.profile_schema import Lang, Text, non_empty, problem

# The fine label names of the official archive's meta file, in label order (alphabetical).
CIFAR100_FINE = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)
CIFAR100_COARSE = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)
LABEL_KINDS = ("fine", "coarse")


def _unpickle(tar: tarfile.TarFile, member: str, archive: Path) -> dict:
    try:
        fh = tar.extractfile(member)
    except KeyError as exc:
        raise IngestError(f"{archive}: no member {member!r} (is this cifar-100-python.tar.gz?)") from exc
    try:
        return pickle.load(fh, encoding="bytes")
    except Exception as exc:  # pickle raises many types on damaged data
        raise IngestError(f"{archive}: {member}: not a readable CIFAR pickle: {exc}") from exc


def _prompts(b: ManifestBuilder, name: str, names: list[str], class_names: str, templates: dict[str, str] | None,
             translations: Path | None) -> dict:
    templates = templates or {"en": PAPER_TEMPLATE}
    by_lang = {"en": styled_names(names, class_names)} if "en" in templates else {}
    if translations is not None:
        by_lang.update(load_translated_names(translations, len(names)))
    add_class_prompts(b, name, by_lang, templates)
    return {"class_names": class_names, "templates": templates}


def read_cifar_archive(name: str, archive: Path, splits: tuple[str, ...] = ("train", "test"), label: str = "fine",
                       class_names: str = "clean", templates: dict[str, str] | None = None,
                       translations: Path | None = None, limit: int | None = None) -> IngestResult:
    """The official ``cifar-100-python.tar.gz``: pickles ``train``, ``test`` (``data`` N x 3072 uint8,
    channel planes of 32x32; ``fine_labels``, ``coarse_labels``, ``filenames``) and ``meta``.
    ``limit`` keeps the first ``limit`` images of each split."""
    need_file(archive, name, "CIFAR-100 python archive (cifar-100-python.tar.gz)")
    if label not in LABEL_KINDS:
        raise ValueError(f"dataset {name!r}: label {label!r} is not one of {', '.join(LABEL_KINDS)}")
    b = ManifestBuilder(name, validate_images=False)  # encoded here from raw pixels: always decodable
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed by the with block below)
    except tarfile.TarError as exc:
        raise IngestError(f"{archive}: not a readable tar archive: {exc}") from exc
    with tar:
        meta = _unpickle(tar, "cifar-100-python/meta", archive)
        names = [n.decode() for n in meta.get(f"{label}_label_names".encode(), [])]
        if not names:
            raise IngestError(f"{archive}: cifar-100-python/meta: no {label}_label_names")
        for split in splits:
            batch = _unpickle(tar, f"cifar-100-python/{split}", archive)
            data = np.asarray(batch.get(b"data"))
            labels = batch.get(f"{label}_labels".encode())
            if data.ndim != 2 or data.shape[1] != 3072 or labels is None or len(labels) != len(data):
                raise IngestError(f"{archive}: cifar-100-python/{split}: expected data (N, 3072) and "
                                  f"{label}_labels of length N")
            pixels = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for i in range(len(data) if limit is None else min(limit, len(data))):
                y = int(labels[i])
                sid = f"{name}-{split}-{i:05d}"
                if not 0 <= y < len(names):
                    b.seen += 1
                    b.reject(sid, f"unknown label {y} (row {i} of {split}; {len(names)} classes)")
                    continue
                b.add_sample(sid, split, png_bytes(np.ascontiguousarray(pixels[i])), y, names[y])
    info = {"format": "cifar-python", "label": label, "splits": list(splits)}
    info.update(_prompts(b, name, names, class_names, templates, translations))
    return b.result(info)


def _hf_names(path: Path, column: str) -> list[str] | None:
    """ClassLabel names from the ``huggingface`` schema metadata that hub Parquet exports carry."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"huggingface")
    if not raw:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][column]
    except (KeyError, TypeError, json.JSONDecodeError):
        return None
    return feature.get("names") if isinstance(feature, dict) else None


def read_cifar_parquet(name: str, files: dict[str, list[Path]], label: str = "fine", class_names: str = "clean",
                       templates: dict[str, str] | None = None, translations: Path | None = None,
                       limit: int | None = None) -> IngestResult:
    """Parquet files per split (``{"train": [...], "test": [...]}``) with ``img`` ({bytes, path}),
    ``fine_label`` and ``coarse_label``. Class names come from the files' ``huggingface`` metadata when
    present, else the official CIFAR-100 names (the hub dataset keeps the official label order)."""
    if label not in LABEL_KINDS:
        raise ValueError(f"dataset {name!r}: label {label!r} is not one of {', '.join(LABEL_KINDS)}")
    column = f"{label}_label"
    b = ManifestBuilder(name)
    names: list[str] | None = None
    for split, paths in files.items():
        kept = 0
        for path in paths:
            need_file(path, name, f"CIFAR-100 Parquet file of split {split!r}")
            try:
                pf = pq.ParquetFile(path)
            except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on non-Parquet input
                raise IngestError(f"{path}: not a readable Parquet file: {exc}") from exc
            missing = {"img", column} - set(pf.schema_arrow.names)
            if missing:
                raise IngestError(f"{path}: missing column(s) {', '.join(sorted(missing))} "
                                  f"(columns: {', '.join(pf.schema_arrow.names)})")
            names = names or _hf_names(path, column) or list(CIFAR100_FINE if label == "fine" else CIFAR100_COARSE)
            row = 0
            for batch in pf.iter_batches(columns=["img", column], batch_size=1024):
                for img, y in zip(batch.column("img").to_pylist(), batch.column(column).to_pylist(), strict=True):
                    if limit is not None and kept >= limit:
                        break
                    sid = f"{name}-{split}-{kept:05d}"
                    kept += 1
                    data = img.get("bytes") if isinstance(img, dict) else img
                    if not data:
                        b.seen += 1
                        b.reject(sid, f"{path.name} row {row}: no image bytes")
                    elif y is None or not 0 <= int(y) < len(names):
                        b.seen += 1
                        b.reject(sid, f"{path.name} row {row}: unknown label {y!r}")
                    else:
                        b.add_sample(sid, split, bytes(data), int(y), names[int(y)])
                    row += 1
    if names is None:
        raise ValueError(f"dataset {name!r}: no Parquet files given")
    info = {"format": "cifar-parquet", "label": label, "splits": list(files)}
    info.update(_prompts(b, name, names, class_names, templates, translations))
    return b.result(info)


@register_source
class CifarSource(SourceDataset):
    """Profile entry ``kind: cifar100``: the python archive (``format: python``) or Parquet files per split
    (``format: parquet``, ``files: {split: [paths]}``); ``templates`` per language (other languages need
    ``translations``, a JSON file of class names)."""

    kind: Literal["cifar100"]
    format: Literal["python", "parquet"] = "python"
    archive: Text = "cifar-100-python.tar.gz"
    files: dict[str, non_empty(Text)] | None = field(default=None, hash=False)  # a mapping: not hashable
    splits: non_empty(Text) = ("train", "test")
    label: Literal[LABEL_KINDS] = "fine"
    class_names: Literal[CLASS_NAME_STYLES] = "clean"
    templates: dict[Lang, Text] | None = field(default=None, hash=False)  # a mapping: not hashable
    translations: Text | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CifarSource:
        if self.format == "parquet" and not self.files:
            raise problem("format parquet needs files: {split: [paths]}", "files")
        for lang, template in (self.templates or {}).items():
            if template.count("{}") != 1:
                raise problem(f"template {template!r} must contain exactly one '{{}}'", "templates", lang)
        others = sorted(set(self.templates or {}) - {"en"})
        if others and self.translations is None:
            raise problem(f"templates for {', '.join(others)} need translated class names (key translations)",
                          "templates")
        return self

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.templates or {"en": None})

    def read(self, raw_dir: Path, languages: tuple[str, ...]) -> IngestResult:
        templates = {k: v for k, v in (self.templates or {"en": PAPER_TEMPLATE}).items() if k in languages}
        common = {"label": self.label, "class_names": self.class_names, "templates": templates,
                  "translations": self.at(raw_dir, self.translations), "limit": self.n}
        if self.format == "python":
            return read_cifar_archive(self.name, self.at(raw_dir, self.archive), self.splits, **common)
        files = {split: [self.at(raw_dir, f) for f in paths] for split, paths in self.files.items()
                 if split in self.splits}
        return read_cifar_parquet(self.name, files, **common)
