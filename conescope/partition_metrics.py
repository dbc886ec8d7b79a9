"""Which metric rows each metric asset computes for one partition, and from which embedding sets.

One :class:`MetricFamily` per ``metrics/<name>`` asset: its warehouse table, its partitioning
(``scope``) and the function that decides which datasets, modalities and rows it measures. The
formulas are in ``conescope.metrics`` and the records in ``conescope.families``; the assets load
nothing themselves but hand over an :class:`EmbeddingSource` (the stored embeddings of one model,
``storage.embedding_sets.StoredEmbeddings``) and write what comes back.

Scopes: ``model`` (image embeddings only, ``lang`` null; partitioned by the image models only),
``model_lang`` (text and joint rows of one language; a text-only model gets only its text rows, and a
dataset without texts in the language none), ``summary`` (per model, after every language: the
multilingual rows, ``lang`` holding the compared language).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from conescope import families
from conescope.profile import Profile
from conescope.sets import ImageSet, TextSet, text_labels

MODEL, MODEL_LANG, SUMMARY = "model", "model_lang", "summary"


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

    def sample_labels(self, dataset: str) -> dict[str, int]:
        """sample id -> label (-1 when unlabelled) from the manifest."""


def image_datasets(profile: Profile) -> list[str]:
    """Datasets whose image embeddings exist (some model of the profile has an image tower)."""
    return [ds for ds in profile.image_datasets() if profile.image_models]


def text_datasets(profile: Profile) -> list[str]:
    """Datasets with texts in at least one language of the profile."""
    return [ds for ds in profile.datasets if profile.dataset_languages(ds)]


def _pairs(profile: Profile, model: str, source: EmbeddingSource, lang: str) -> Iterator[tuple[ImageSet, TextSet]]:
    """(image set, text set) of every dataset with images and texts in ``lang``; none for a text-only
    model (the families that need images are skipped for it)."""
    if not profile.models[model].has_image_tower:
        return
    for ds in image_datasets(profile):
        if lang in profile.dataset_languages(ds):
            yield source.image_set(ds), source.text_set(ds, lang)


def _texts(profile: Profile, source: EmbeddingSource, lang: str) -> Iterator[TextSet]:
    for ds in text_datasets(profile):
        if lang in profile.dataset_languages(ds):
            yield source.text_set(ds, lang)


# --- [model]: image rows -----------------------------------------------------------------------------

def image_isotropy(profile: Profile, model: str, source: EmbeddingSource, lang: None) -> list[dict]:
    return [row for ds in image_datasets(profile)
            for row in families.isotropy_rows(ds, "image", source.image_set(ds).emb, profile.metrics)]


def image_clusters(profile: Profile, model: str, source: EmbeddingSource, lang: None) -> list[dict]:
    rows = []
    for ds in image_datasets(profile):
        image = source.image_set(ds)
        rows += families.silhouette_rows(ds, "image", image.emb, image.labels, profile.metrics)
    return rows


def linear_probe(profile: Profile, model: str, source: EmbeddingSource, lang: None) -> list[dict]:
    return [row for ds in image_datasets(profile)
            for row in families.linear_probe_rows(source.image_set(ds), profile.metrics)]


# --- [model x lang] ------------------------------------------------------------------------------------

def isotropy(profile: Profile, model: str, source: EmbeddingSource, lang: str) -> list[dict]:
    rows = []
    for text in _texts(profile, source, lang):
        rows += families.isotropy_rows(text.dataset, "text", text.emb, profile.metrics)
    for image, text in _pairs(profile, model, source, lang):
        rows += families.isotropy_rows(image.dataset, "joint", np.vstack([image.emb, text.emb]), profile.metrics)
    return rows


def modality_gap(profile: Profile, model: str, source: EmbeddingSource, lang: str) -> list[dict]:
    return [row for image, text in _pairs(profile, model, source, lang)
            for row in families.gap_rows(image, text, profile.metrics)]


def clip_loss(profile: Profile, model: str, source: EmbeddingSource, lang: str) -> list[dict]:
    return [row for image, text in _pairs(profile, model, source, lang)
            for row in families.clip_loss_rows(image, text, *source.logit_scale(image.dataset), profile.metrics)]


def zero_shot(profile: Profile, model: str, source: EmbeddingSource, lang: str) -> list[dict]:
    return [row for image, text in _pairs(profile, model, source, lang)
            for row in families.zero_shot_rows(image, text, profile.metrics)]


def retrieval(profile: Profile, model: str, source: EmbeddingSource, lang: str) -> list[dict]:
    return [row for image, text in _pairs(profile, model, source, lang)
            for row in families.retrieval_rows(image, text, profile.metrics)]


def text_clusters(profile: Profile, model: str, source: EmbeddingSource, lang: str) -> list[dict]:
    """Silhouette of the texts against the label of each (its image's, or its class's): for an image
    model over the images that have an embedding, for a text-only model from the manifest."""
    if not profile.models[model].has_image_tower:
        labelled = [(text, source.sample_labels(text.dataset)) for text in _texts(profile, source, lang)]
    else:
        labelled = [(text, dict(zip(image.sample_ids, image.labels, strict=True)))
                    for image, text in _pairs(profile, model, source, lang)]
    return [row for text, labels in labelled
            for row in families.silhouette_rows(text.dataset, "text", text.emb, text_labels(text, labels),
                                                profile.metrics)]


def layers(profile: Profile, model: str, source: EmbeddingSource, lang: str) -> list[dict]:
    """Self-similarity of every stored text layer and, on STS datasets, the Spearman correlation of
    the output embedding and of every layer. Layer rows need the states the text embedding step
    stores with ``embedding.text_layers: true``; without them only the output's STS row is written."""
    rows = []
    for text in _texts(profile, source, lang):
        if len(text.texts) < 2:
            continue
        states = source.text_layers(text.dataset, lang, text.text_ids)
        if states is not None:
            rows += families.layer_rows(text.dataset, states, profile.metrics)
        pairs = source.sts_pairs(text.dataset)
        if pairs is not None:
            rows += families.sts_rows(text.dataset, text.text_ids, text.emb, states, pairs)
    return rows


# --- [model], after every language -------------------------------------------------------------------

def multilingual(profile: Profile, model: str, source: EmbeddingSource, lang: None) -> list[dict]:
    rows = []
    for ds in text_datasets(profile):
        langs = profile.dataset_languages(ds)
        if profile.reference_lang not in langs or len(langs) < 2:
            continue  # nothing to compare in this dataset
        texts = {lang: source.text_set(ds, lang) for lang in langs}
        rows += families.multilingual_rows(texts, profile.reference_lang, profile.metrics)
    return rows


Rows = Callable[[Profile, str, EmbeddingSource, str | None], list[dict]]


@dataclass(frozen=True)
class MetricFamily:
    name: str  # the asset is metrics/<name>
    table: str  # the warehouse table it writes (metrics.<family>)
    scope: str  # MODEL, MODEL_LANG or SUMMARY
    description: str
    rows: Rows
    # Columns beyond model (and lang) that delimit the rows this asset owns in its table: two assets
    # share metrics.isotropy and metrics.clusters, image rows [model] and text rows [model x lang].
    owns: dict[str, str] = field(default_factory=dict)
    # The metric modules whose formulas the rows use: with the shared row code they are the roots of the
    # asset's code version (conescope/code_versions.py), so editing one formula restales its families only.
    modules: tuple[str, ...] = ()


FAMILIES = (
    MetricFamily("image_isotropy", "isotropy", MODEL, "Isotropy of image embeddings (metrics.isotropy)",
                 image_isotropy, {"modality": "image"}, modules=("conescope.metrics.isotropy",)),
    MetricFamily("image_clusters", "clusters", MODEL, "Silhouette of image embeddings against labels",
                 image_clusters, {"modality": "image"},
                 modules=("conescope.metrics.clusters",)),
    MetricFamily("linear_probe", "linear_probe", MODEL,
                 "Linear-probe accuracy on image embeddings (train -> test split)", linear_probe,
                 modules=("conescope.metrics.linear_probe",)),
    MetricFamily("isotropy", "isotropy", MODEL_LANG, "Isotropy of text and joint embeddings", isotropy,
                 modules=("conescope.metrics.isotropy",)),
    MetricFamily("modality_gap", "modality_gap", MODEL_LANG,
                 "Gap norm, modality separability, positive vs random pair cosines", modality_gap,
                 modules=("conescope.metrics.gap",)),
    MetricFamily("clip_loss", "clip_loss", MODEL_LANG, "Symmetric CLIP loss of image-caption pairs", clip_loss,
                 modules=("conescope.metrics.clip_loss",)),
    MetricFamily("zero_shot", "zero_shot", MODEL_LANG, "Zero-shot classification with class prompts", zero_shot,
                 modules=("conescope.metrics.zero_shot",)),
    MetricFamily("retrieval", "retrieval", MODEL_LANG, "Image-text retrieval recall@k", retrieval,
                 modules=("conescope.metrics.retrieval",)),
    MetricFamily("clusters", "clusters", MODEL_LANG, "Silhouette of text embeddings against labels",
                 text_clusters, modules=("conescope.metrics.clusters",)),
    MetricFamily("layers", "layers", MODEL_LANG, "Self-similarity of every hidden layer of the text tower",
                 layers, modules=("conescope.metrics.layers",)),
    MetricFamily("multilingual", "multilingual", SUMMARY,
                 "Distance ratios, cross-lingual recall and language separability (reads every language)",
                 multilingual, modules=("conescope.metrics.multilingual",)),
)
