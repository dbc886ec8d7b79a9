"""Which metric rows each metric asset computes for one partition, and from which embedding sets.

One :class:`MetricFamily` per ``metrics/<name>`` asset: its declaration (``conescope.metric_families``:
warehouse table, partitioning, the rows it owns, the contract's metric names) and the function of this
module named like the asset, which decides which datasets, modalities and rows it measures. The
formulas are in ``conescope.metrics`` and the records in ``conescope.families``; the assets load
nothing themselves but hand over an :class:`EmbeddingSource` (the stored embeddings of one model,
``storage.embedding_sets.StoredEmbeddings``) and write what comes back.

Scopes: ``model`` (image embeddings only, ``lang`` null; partitioned by the image models only),
``model_lang`` (text and joint rows of one language; a text-only model gets only its text rows, and a
dataset without texts in the language none), ``paired`` (image-caption pairs of one language: the image
models only; a dataset without texts in the language has none), ``summary`` (per model, after every language: the
multilingual rows, ``lang`` holding the compared language).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from conescope import families, metric_families
from conescope.profile import Profile
from conescope.sets import EmbeddingSource, ImageSet, TextSet, text_labels


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


# --- [image model x lang] -------------------------------------------------------------------------------

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


# --- [model x lang], text rows --------------------------------------------------------------------------

def clusters(profile: Profile, model: str, source: EmbeddingSource, lang: str) -> list[dict]:
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
    """Self-similarity of every stored text layer and, of the output embedding and of every layer, the
    Spearman correlation on STS datasets and on word-similarity datasets and ValNorm on valence
    lexicons. Layer rows need the states the text embedding step stores with ``embedding.text_layers:
    true``; without them only the output's rows are written."""
    rows = []
    for text in _texts(profile, source, lang):
        if len(text.texts) < 2:
            continue
        states = source.text_layers(text.dataset, lang, text.text_ids)
        if states is not None:
            rows += families.layer_rows(text.dataset, states, profile.metrics)
        pairs = source.sts_pairs(text.dataset)
        if pairs is not None:
            rows += families.pair_similarity_rows("sts_spearman", text.dataset, text.text_ids, text.emb, states,
                                                  pairs, profile.metrics)
        word_pairs = source.word_pairs(text.dataset)
        if word_pairs is not None:
            rows += families.pair_similarity_rows("word_spearman", text.dataset, text.text_ids, text.emb, states,
                                                  word_pairs, profile.metrics)
        lexicon = source.valence_lexicon(text.dataset)
        if lexicon is not None:
            rows += families.valnorm_rows(text.dataset, text.text_ids, text.emb, states, lexicon, profile.metrics)
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
    """One ``metrics/<name>`` asset as its declaration (``conescope.metric_families``) gives it, with the
    function of this module that computes its rows (named like the asset)."""

    family: metric_families.Family
    asset: metric_families.MetricAsset
    rows: Rows

    @property
    def name(self) -> str:  # the asset is metrics/<name>
        return self.asset.name

    @property
    def table(self) -> str:  # the warehouse table it writes (metrics.<table>)
        return self.family.table

    @property
    def scope(self) -> str:  # MODEL, MODEL_LANG, PAIRED or SUMMARY
        return self.asset.scope

    @property
    def description(self) -> str:
        return self.asset.description

    @property
    def modules(self) -> tuple[str, ...]:
        """The metric modules whose formulas the rows use: with the shared row code they are the roots of
        the asset's code version (conescope/code_versions.py), so editing one formula restales its
        families only."""
        return self.family.modules


FAMILIES = tuple(MetricFamily(family, asset, globals()[asset.name]) for family, asset in metric_families.assets())
