"""Embedding sets joined with their manifest: what the metric assets read."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from conescope.sets import ImageSet, TextSet
from storage.parquet_store import read_embeddings, read_manifest_table
from storage.paths import DataRoot


def load_image_set(root: DataRoot, dataset: str, model: str) -> ImageSet:
    keys, emb = read_embeddings(root.image_embeddings(dataset, model))
    samples = read_manifest_table(root.dataset_dir(dataset), "samples", ["sample_id", "label", "split"])
    ids = keys.column("sample_id")
    # Embedding rows may be fewer than samples (rejected images): align the manifest to them.
    idx = pc.index_in(ids, value_set=samples.column("sample_id")).to_numpy(zero_copy_only=False)
    labels = samples.column("label").fill_null(-1).to_numpy(zero_copy_only=False)[idx]
    splits = np.asarray(samples.column("split").to_pylist(), dtype=object)[idx]
    return ImageSet(dataset, np.asarray(ids.to_pylist(), dtype=object), labels.astype(np.int64), splits, emb)


def load_text_set(root: DataRoot, dataset: str, model: str, lang: str) -> TextSet:
    keys, emb = read_embeddings(root.text_embeddings(dataset, model, lang))
    return TextSet(dataset, lang, np.asarray(keys.column("text_id").to_pylist(), dtype=object),
                   np.asarray(keys.column("sample_id").to_pylist(), dtype=object),
                   keys.column("label").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64),
                   keys.column("text").to_pylist(), emb)


def manifest_text_labels(root: DataRoot, text: TextSet) -> np.ndarray:
    """The label of each text from the manifest alone: its sample's label for captions, its class for
    prompts (for text-only models, which have no image set to join)."""
    samples = read_manifest_table(root.dataset_dir(text.dataset), "samples", ["sample_id", "label"])
    label_of = dict(zip(samples.column("sample_id").to_pylist(),
                        samples.column("label").fill_null(-1).to_pylist(), strict=True))
    labels = text.labels.copy()
    for i, sid in enumerate(text.sample_ids):
        if sid is not None:
            labels[i] = label_of.get(sid, -1)
    return labels


def manifest_pairs(root: DataRoot, dataset: str) -> dict[str, list] | None:
    """The scored sentence pairs of an STS-style dataset (manifest table ``pairs``), or None."""
    path = root.dataset_dir(dataset) / "pairs.parquet"
    if not path.is_file():
        return None
    return read_manifest_table(root.dataset_dir(dataset), "pairs").to_pydict()


def load_text_layers(root: DataRoot, dataset: str, model: str, lang: str,
                     text_ids: np.ndarray) -> list[np.ndarray] | None:
    """The stored pooled states of every text layer (profile key ``embedding.text_layers``), one
    (n, width) array per layer with rows in the order of ``text_ids``; None when none are stored or
    they do not cover exactly those texts (then the caller recomputes them)."""
    directory = root.text_layers(dataset, model, lang)
    if not any(directory.glob("part-*.parquet")):
        return None
    keys, states = read_embeddings(directory, columns=["text_id", "layer"], vector="state")
    layer = keys.column("layer").to_numpy()
    n_layers = int(layer.max()) + 1
    if len(layer) != n_layers * len(text_ids):
        return None
    stored_ids = np.asarray(keys.column("text_id").to_pylist(), dtype=object).reshape(-1, n_layers)
    if not (np.array_equal(stored_ids[:, 0], text_ids) and (layer.reshape(-1, n_layers) == np.arange(n_layers)).all()):
        return None
    stack = states.reshape(len(text_ids), n_layers, -1)
    return [np.ascontiguousarray(stack[:, i]) for i in range(n_layers)]
