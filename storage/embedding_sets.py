"""Embedding sets joined with their manifest: what the metric assets read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from conescope.sets import ImageSet, TextSet
from storage.integrity import part_of_rows
from storage.parquet_store import read_embeddings, read_manifest_table, read_provenance
from storage.paths import DataRoot


def _finite(root: DataRoot, directory, ids, emb: np.ndarray, what: str) -> None:
    """Refuse rows with NaN or inf, naming the partition and the part files: a metric would fail on
    them with a message naming neither (scikit-learn's "Input X contains NaN"), or silently give NaN."""
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if len(bad):
        files = sorted(set(part_of_rows(directory, [int(i) for i in bad])))
        where = ", ".join(str((directory / name).relative_to(root.root)) for name in files)
        raise ValueError(f"{what}: {len(bad)} of {len(emb)} rows hold NaN or inf (first: {ids[int(bad[0])]}) in "
                         f"{where}; see the embeddings' finite_values check; conescope materialize embeds a "
                         f"part again whose values were overwritten after it was written")


def load_image_set(root: DataRoot, dataset: str, model: str) -> ImageSet:
    keys, emb = read_embeddings(root.image_embeddings(dataset, model))
    _finite(root, root.image_embeddings(dataset, model), keys.column("sample_id"), emb,
            f"the {dataset} image embeddings of {model}")
    samples = read_manifest_table(root.dataset_dir(dataset), "samples", ["sample_id", "label", "split"])
    ids = keys.column("sample_id")
    # Embedding rows may be fewer than samples (rejected images): align the manifest to them.
    idx = pc.index_in(ids, value_set=samples.column("sample_id")).to_numpy(zero_copy_only=False)
    labels = samples.column("label").fill_null(-1).to_numpy(zero_copy_only=False)[idx]
    splits = np.asarray(samples.column("split").to_pylist(), dtype=object)[idx]
    return ImageSet(dataset, np.asarray(ids.to_pylist(), dtype=object), labels.astype(np.int64), splits, emb)


def load_text_set(root: DataRoot, dataset: str, model: str, lang: str) -> TextSet:
    keys, emb = read_embeddings(root.text_embeddings(dataset, model, lang))
    _finite(root, root.text_embeddings(dataset, model, lang), keys.column("text_id"), emb,
            f"the {dataset} text embeddings ({lang}) of {model}")
    return TextSet(dataset, lang, np.asarray(keys.column("text_id").to_pylist(), dtype=object),
                   np.asarray(keys.column("sample_id").to_pylist(), dtype=object),
                   keys.column("label").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64),
                   keys.column("text").to_pylist(), emb)


def sample_labels(root: DataRoot, dataset: str) -> dict[str, int]:
    """sample id -> label (-1 when unlabelled) from the manifest."""
    samples = read_manifest_table(root.dataset_dir(dataset), "samples", ["sample_id", "label"])
    return dict(zip(samples.column("sample_id").to_pylist(), samples.column("label").fill_null(-1).to_pylist(),
                    strict=True))


def logit_scale(root: DataRoot, dataset: str, model: str) -> tuple[float, float | None]:
    """(logit scale, logit bias or None) of a model, as its image embedding step recorded them."""
    prov = read_provenance(next(root.image_embeddings(dataset, model).glob("*.parquet")))
    return float(prov["logit_scale"]), prov.get("logit_bias")


def manifest_pairs(root: DataRoot, dataset: str, table: str = "pairs") -> dict[str, list] | None:
    """An extra manifest table of a text-only dataset as columns, or None when the dataset has none: the
    scored sentence pairs of an STS-style dataset (``pairs``), the scored word pairs of a word-similarity
    dataset (``word_pairs``), the words of a valence lexicon (``lexicon``)."""
    path = root.dataset_dir(dataset) / f"{table}.parquet"
    if not path.is_file():
        return None
    return read_manifest_table(root.dataset_dir(dataset), table).to_pydict()


def load_text_layers(root: DataRoot, dataset: str, model: str, lang: str,
                     text_ids: np.ndarray) -> list[np.ndarray] | None:
    """The stored pooled states of every text layer (profile key ``embedding.text_layers``), one
    (n, width) array per layer with rows in the order of ``text_ids``; None when none are stored. States
    that do not cover exactly those texts (written by another run than the embeddings) are an error."""
    directory = root.text_layers(dataset, model, lang)
    if not any(directory.glob("part-*.parquet")):
        return None
    keys, states = read_embeddings(directory, columns=["text_id", "layer"], vector="state")
    layer = keys.column("layer").to_numpy()
    n_layers = int(layer.max()) + 1
    stored_ids = np.asarray(keys.column("text_id").to_pylist(), dtype=object)
    if len(layer) != n_layers * len(text_ids) or not (
            np.array_equal(stored_ids.reshape(-1, n_layers)[:, 0], text_ids)
            and (layer.reshape(-1, n_layers) == np.arange(n_layers)).all()):
        raise ValueError(f"{directory}: the stored text layer states do not match the text embeddings "
                         f"({len(layer)} rows for {len(text_ids)} texts); rematerialize the text embeddings "
                         f"of {dataset} for this partition")
    stack = states.reshape(len(text_ids), n_layers, -1)
    return [np.ascontiguousarray(stack[:, i]) for i in range(n_layers)]


@dataclass(frozen=True)
class StoredEmbeddings:
    """The stored embeddings of one model under a data root: the ``EmbeddingSource`` that
    ``conescope.partition_metrics`` reads (it imports no storage code)."""

    root: DataRoot
    model: str

    def image_set(self, dataset: str) -> ImageSet:
        return load_image_set(self.root, dataset, self.model)

    def text_set(self, dataset: str, lang: str) -> TextSet:
        return load_text_set(self.root, dataset, self.model, lang)

    def logit_scale(self, dataset: str) -> tuple[float, float | None]:
        return logit_scale(self.root, dataset, self.model)

    def text_layers(self, dataset: str, lang: str, text_ids: np.ndarray) -> list[np.ndarray] | None:
        return load_text_layers(self.root, dataset, self.model, lang, text_ids)

    def sts_pairs(self, dataset: str) -> dict[str, list] | None:
        return manifest_pairs(self.root, dataset)

    def word_pairs(self, dataset: str) -> dict[str, list] | None:
        return manifest_pairs(self.root, dataset, "word_pairs")

    def valence_lexicon(self, dataset: str) -> dict[str, list] | None:
        return manifest_pairs(self.root, dataset, "lexicon")

    def sample_labels(self, dataset: str) -> dict[str, int]:
        return sample_labels(self.root, dataset)
