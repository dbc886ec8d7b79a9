"""Embedding sets as the metric code sees them: one dataset, one model (and one language for text), and
the :class:`EmbeddingSource` that hands them over (here rather than in ``conescope.partition_metrics`` so
that code reading sets does not depend on which rows the metric assets compute: code versions follow
imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ImageSet:
    dataset: str
    sample_ids: np.ndarray
    labels: np.ndarray  # -1 where unlabelled
    splits: np.ndarray  # "train" | "test"
    emb: np.ndarray


@dataclass(frozen=True)
class TextSet:
    dataset: str
    lang: str
    text_ids: np.ndarray
    sample_ids: np.ndarray  # the image a caption describes; None for class prompts
    labels: np.ndarray  # the class a prompt names; -1 for captions
    texts: list[str]
    emb: np.ndarray

    @property
    def caption_rows(self) -> np.ndarray:
        return np.flatnonzero([s is not None for s in self.sample_ids])

    @property
    def prompt_rows(self) -> np.ndarray:
        return np.flatnonzero([s is None and lab >= 0 for s, lab in zip(self.sample_ids, self.labels, strict=True)])


def caption_pairs(image: ImageSet, text: TextSet) -> tuple[np.ndarray, np.ndarray]:
    """(text rows, image row of each) for the captions whose image has an embedding."""
    position = {sid: i for i, sid in enumerate(image.sample_ids)}
    rows = [j for j in text.caption_rows if text.sample_ids[j] in position]
    return np.asarray(rows, dtype=np.int64), np.asarray([position[text.sample_ids[j]] for j in rows], dtype=np.int64)


def first_caption_pairs(image: ImageSet, text: TextSet) -> tuple[np.ndarray, np.ndarray]:
    """One (image row, text row) pair per image: its first caption (Tyshchuk et al. use the first
    COCO caption), so that the pairs form a one-to-one batch for the CLIP loss."""
    text_rows, image_rows = caption_pairs(image, text)
    _, first = np.unique(image_rows, return_index=True)
    return image_rows[first], text_rows[first]


def class_prompts(text: TextSet, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, prompt embedding per class) from the class prompts of a text set; several prompts
    of one class are averaged after normalization (prompt ensembling, Radford et al. 2021).
    ``normalize=False`` keeps the raw rows (averaged as they are), for the dot and negative squared
    Euclidean geometries, which score unnormalized embeddings (Chou & Alam 2024)."""
    rows = text.prompt_rows
    if len(rows) == 0:
        return np.empty(0, dtype=np.int64), np.empty((0, text.emb.shape[1]))
    labels = text.labels[rows]
    emb = text.emb[rows].astype(np.float64)
    if normalize:
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    classes = np.unique(labels)
    means = np.vstack([emb[labels == c].mean(axis=0) for c in classes])
    return classes, means


def first_prompt_rows(text: TextSet) -> dict[int, int]:
    """The row of the first prompt of each class that has one (class id -> text row)."""
    return {int(text.labels[r]): int(r) for r in text.prompt_rows[::-1]}


def prompt_pairs(image: ImageSet, text: TextSet, image_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image rows, text rows): each of ``image_rows`` whose class has a prompt, with the first prompt
    of its class (the fit pairs of a classification set, Tyshchuk et al. 2023, Section 5)."""
    first = first_prompt_rows(text)
    rows = np.asarray([i for i in image_rows if int(image.labels[i]) in first], dtype=np.int64)
    return rows, np.asarray([first[int(image.labels[i])] for i in rows], dtype=np.int64)


def positive_pairs(image: ImageSet, text: TextSet) -> tuple[np.ndarray, np.ndarray, str]:
    """(image rows, text rows, kind): every caption with its image, else every image with the first
    prompt of its class."""
    text_rows, image_rows = caption_pairs(image, text)
    if len(text_rows):
        return image_rows, text_rows, "caption"
    return *prompt_pairs(image, text, np.arange(len(image.labels))), "class prompt"


def text_labels(text: TextSet, sample_labels: dict) -> np.ndarray:
    """The label of each text: the label of the sample a caption describes (``sample_labels``: sample
    id -> label, -1 or absent when unknown), the class a prompt names."""
    labels = text.labels.copy()
    for i, sid in enumerate(text.sample_ids):
        if sid is not None:
            labels[i] = sample_labels.get(sid, -1)
    return labels


class EmbeddingSource(Protocol):
    """The stored embeddings of one model and what the manifest says about them."""

    def image_set(self, dataset: str) -> ImageSet: ...

    def text_set(self, dataset: str, lang: str) -> TextSet: ...

    def logit_scale(self, dataset: str) -> tuple[float, float | None]:
        """(logit scale, logit bias or None) of the model, from the image embeddings' provenance."""

    def text_layers(self, dataset: str, lang: str, text_ids: np.ndarray) -> list[np.ndarray] | None:
        """The pooled state of every text layer, rows in the order of ``text_ids``; None when the
        embedding step stored none (``embedding.text_layers: false``)."""

    def sts_pairs(self, dataset: str) -> dict[str, list] | None:
        """The scored sentence pairs of an STS dataset, None for other datasets."""

    def word_pairs(self, dataset: str) -> dict[str, list] | None:
        """The scored word pairs of a word-similarity dataset (``kind: word_pairs``), None for others."""

    def valence_lexicon(self, dataset: str) -> dict[str, list] | None:
        """The lexicon and attribute words of a valence lexicon (``kind: valence_lexicon``: ``text_id``,
        ``role``, ``score``), None for other datasets."""

    def sample_labels(self, dataset: str) -> dict[str, int]:
        """sample id -> label (-1 when unlabelled) from the manifest."""
