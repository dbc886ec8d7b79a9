"""What every report takes and returns: one dataset's embedding sets with their manifest view and
warehouse rows (:class:`DatasetData`) and the rendered page; and the pairing and
hover items that the partition and comparison reports share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from conescope.reports.page import Items
from conescope.sets import ImageSet, TextSet, first_caption_pairs, positive_pairs


@dataclass
class DatasetData:
    """What the report needs of one dataset: the embedding sets, the manifest's label names and
    thumbnails (key ``<dataset>/<sample_id>``), and the warehouse rows of the partition. ``image`` is
    None for a text-only model or a dataset without images: the section then shows the text figures."""

    image: ImageSet | None
    text: TextSet
    label_names: dict[str, str] = field(default_factory=dict)  # sample_id -> label name
    thumbs: dict[str, str] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.text.dataset

    def thumb_key(self, sample_id: str | None) -> str | None:
        key = f"{self.name}/{sample_id}"
        return key if key in self.thumbs else None


@dataclass
class RenderedReport:
    html: str
    preview_png: str | None  # data URI of the Dagster UI preview figure
    headline: dict[str, float]


# --- pairs and hover items -------------------------------------------------------------------------

def pairs(data: DatasetData) -> tuple[np.ndarray, np.ndarray, str]:
    """(image rows, text rows, kind): one caption per image for captioned data (its first, as Tyshchuk
    et al.), else each image with the first prompt of its class."""
    img_rows, txt_rows = first_caption_pairs(data.image, data.text)
    if len(img_rows):
        return img_rows, txt_rows, "caption"
    return positive_pairs(data.image, data.text)


def image_items(data: DatasetData, items: Items, rows: np.ndarray) -> list[int]:
    first_caption = {}
    img_rows, txt_rows = first_caption_pairs(data.image, data.text)
    for i, t in zip(img_rows, txt_rows, strict=True):
        first_caption[int(i)] = data.text.texts[t]
    out = []
    for i in rows:
        sid = str(data.image.sample_ids[i])
        desc = first_caption.get(int(i)) or data.label_names.get(sid, "")
        out.append(items.add(f"image {sid}: {desc}", data.thumb_key(sid)))
    return out


def text_items(data: DatasetData, items: Items, rows: np.ndarray) -> list[int]:
    out = []
    for j in rows:
        sid = data.text.sample_ids[j]
        kind = "caption" if sid is not None else "prompt"
        out.append(items.add(f"{kind} ({data.text.lang}): {data.text.texts[j]}",
                             data.thumb_key(sid) if sid is not None else None))
    return out
