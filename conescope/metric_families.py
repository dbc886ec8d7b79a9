"""The metric families of the storage contract, declared once: one warehouse table ``metrics.<table>``
each, with its metric names per modality, the assets that write it and the rows each owns.

Everything else is derived from :data:`FAMILIES`: the warehouse's tables and the ``metrics.all`` view
(``storage.warehouse``), the ``metrics/<name>`` assets (``assets.metrics``, with the rows function
``conescope.partition_metrics.<name>``), the rows each asset replaces and its checks read
(:meth:`MetricAsset.owned_rows`, turned into SQL by ``storage.metric_rows``), the checks' contract
(``conescope.checks.expected_metrics``), the tables measured after the fitted transforms
(``conescope.protocol_eval``) and the tests' expected metrics. The formulas are in
``conescope.metrics``, the records of each family in ``conescope.families``.

Plain data, no import beyond the standard library: the storage layer and the checks read it without
loading any metric code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Partitionings of the metric assets: ``model`` (image rows, ``lang`` null; the image models only),
# ``model_lang`` (text and joint rows of one language), ``paired`` (the rows of image-caption pairs in
# one language: the image models only), ``summary`` (per model after every language: rows of every
# compared language, and ``lang`` null over all of them).
MODEL, MODEL_LANG, PAIRED, SUMMARY = "model", "model_lang", "paired", "summary"
# When a family is measured again after the fitted transforms (metrics/transforms writes those rows):
EVERY_TRANSFORM = "every"  # after every transform of every protocol (``conescope.protocol_eval.tables_for``)
NAMED_TRANSFORMS = "transforms.linear_probe"  # after the transforms this profile key names only


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


@dataclass(frozen=True)
class Metrics:
    """The metric names of one group of rows (a modality of a family table). Every group of rows of a
    partition holds every ``required`` metric (and on raw rows, ``transform = 'none'``, every
    ``raw_only`` one: measured on the raw embeddings only), may hold the ``optional`` ones, and
    nothing else. ``written_with``: optional metric -> what writes it, a profile switch
    (``metrics.amumo_loss``) or a dataset kind (``kind: sts``); an optional metric not named there is
    written by every current materialization but absent from older warehouses. ``paired``: metrics
    whose ``n`` counts scored pairs of the stored texts (sentence or word pairs) or the lexicon words
    scored, not the stored rows, so it is bounded by them instead of equal to them."""

    required: frozenset[str]
    optional: frozenset[str] = frozenset()
    raw_only: frozenset[str] = frozenset()
    written_with: Mapping[str, str] = field(default_factory=dict)
    paired: frozenset[str] = frozenset()

    def required_of(self, raw: bool) -> frozenset[str]:
        return self.required | self.raw_only if raw else self.required

    @property
    def allowed(self) -> frozenset[str]:
        return self.required | self.optional | self.raw_only


def metrics(required: str, optional: str = "", raw_only: str = "", paired: str = "", **written_with: str) -> Metrics:
    """:class:`Metrics` from space-separated names; keywords: ``metric="switch"`` for ``written_with``."""
    unknown = set(written_with) - _names(optional)
    if unknown:
        raise ValueError(f"written_with names metrics that are not optional: {sorted(unknown)}")
    allowed = _names(required) | _names(optional) | _names(raw_only)
    if not _names(paired) <= allowed:
        raise ValueError(f"paired names unknown metrics: {sorted(_names(paired) - allowed)}")
    return Metrics(_names(required), _names(optional), _names(raw_only), MappingProxyType(dict(written_with)),
                   _names(paired))


@dataclass(frozen=True)
class RowFilter:
    """Rows of a family table: every column of ``equal`` holds its value, every column of ``null`` is
    null, every column of ``not_equal`` differs from its value."""

    equal: Mapping[str, str]
    null: tuple[str, ...] = ()
    not_equal: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricAsset:
    """One ``metrics/<name>`` asset: its partitioning (``scope``) and the rows of its table it owns."""

    name: str
    scope: str
    description: str
    # Columns beyond model and lang that delimit its rows: two assets share metrics.isotropy and
    # metrics.clusters, the image rows [model] and the text rows [model x lang].
    owns: Mapping[str, str] = field(default_factory=dict)

    def owned_rows(self, model: str, lang: str | None) -> RowFilter:
        """The raw rows this asset replaces in one partition (and its checks read): its model's; of
        its language ([model x lang]), of no language ([model], image rows), or of every language
        ([model], after every language); restricted by ``owns``."""
        equal = {"model": model, **({"lang": lang} if self.scope in (MODEL_LANG, PAIRED) else {}), **self.owns,
                 "transform": "none"}
        return RowFilter(equal, ("lang",) if self.scope == MODEL else ())


@dataclass(frozen=True)
class Family:
    """A warehouse table ``metrics.<table>``: its metrics per modality, the metric modules whose
    formulas give its rows (the roots of its assets' code versions, ``conescope/code_versions.py``),
    the assets that write its raw rows, and whether metrics/transforms measures it after the fitted
    transforms (``after_transforms``)."""

    table: str
    metrics: Mapping[str, Metrics]
    modules: tuple[str, ...]
    assets: tuple[MetricAsset, ...]
    after_transforms: str | None = None
    # Metrics of the rows over every language (``lang`` null) of a family that compares languages.
    over_languages: Metrics | None = None
    # Measured on the rows that qualify (the silhouette: labelled rows, or a sample of them), so ``n``
    # is bounded by the stored rows instead of equal to them.
    partial: bool = False
    # Measured on every stored embedding set of its partition: each dataset with embeddings has rows.
    every_set: bool = False

    def metrics_of(self, modality: str, lang: str | None) -> Metrics | None:
        if self.over_languages is not None and lang is None:
            return self.over_languages
        return self.metrics.get(modality)

    def all_metrics(self) -> frozenset[str]:
        groups = [*self.metrics.values(), *([self.over_languages] if self.over_languages else [])]
        return frozenset().union(*(g.allowed for g in groups))


ISOTROPY = metrics("i1 i2 isoscore isoscore_null mean_cosine mean_vector_norm effective_rank",
                   optional="i1_compat i2_compat")

# In the order of the README's table (the order of the ``metrics.all`` view).
FAMILIES: tuple[Family, ...] = (
    Family("isotropy", dict.fromkeys(("image", "text", "joint"), ISOTROPY), ("conescope.metrics.isotropy",), (
        MetricAsset("image_isotropy", MODEL, "Isotropy of image embeddings (metrics.isotropy)", {"modality": "image"}),
        MetricAsset("isotropy", MODEL_LANG, "Isotropy of text and joint embeddings")),
        after_transforms=EVERY_TRANSFORM, every_set=True),
    Family("modality_gap", {"joint": metrics("gap_norm", raw_only="separability_logreg separability_svm"),
                            "pair": metrics("pos_cosine_mean rand_cosine_mean similarity_gap")},
           ("conescope.metrics.gap",),
           (MetricAsset("modality_gap", PAIRED, "Gap norm, modality separability, positive vs random pair "
                                                    "cosines"),),
           after_transforms=EVERY_TRANSFORM),
    Family("clip_loss", {"pair": metrics("loss loss_i2t loss_t2i", optional="loss_i2t_amumo",
                                         loss_i2t_amumo="metrics.amumo_loss")},
           ("conescope.metrics.clip_loss",),
           (MetricAsset("clip_loss", PAIRED, "Symmetric CLIP loss of image-caption pairs"),),
           after_transforms=EVERY_TRANSFORM),
    Family("zero_shot", {"pair": metrics("top1 top5 mean_per_class_recall")}, ("conescope.metrics.zero_shot",),
           (MetricAsset("zero_shot", PAIRED, "Zero-shot classification with class prompts"),),
           after_transforms=EVERY_TRANSFORM),
    Family("linear_probe", {"image": metrics("accuracy")}, ("conescope.metrics.linear_probe",),
           (MetricAsset("linear_probe", MODEL, "Linear-probe accuracy on image embeddings (train -> test split)"),),
           after_transforms=NAMED_TRANSFORMS),
    Family("retrieval", {"pair": metrics("i2t_r1 i2t_r5 i2t_r10 t2i_r1 t2i_r5 t2i_r10")},
           ("conescope.metrics.retrieval",),
           (MetricAsset("retrieval", PAIRED, "Image-text retrieval recall@k"),),
           after_transforms=EVERY_TRANSFORM),
    Family("clusters", dict.fromkeys(("image", "text"), metrics("silhouette")), ("conescope.metrics.clusters",), (
        MetricAsset("image_clusters", MODEL, "Silhouette of image embeddings against labels", {"modality": "image"}),
        MetricAsset("clusters", MODEL_LANG, "Silhouette of text embeddings against labels")),
        after_transforms=EVERY_TRANSFORM, partial=True),
    Family("multilingual", {"text": metrics("distance_ratio_sq distance_ratio distance_ratio_cos xling_r1 xling_r5",
                                            optional="distance_ratio_sq_raw",
                                            distance_ratio_sq_raw="metrics.distance_ratio_raw")},
           ("conescope.metrics.multilingual",),
           (MetricAsset("multilingual", SUMMARY, "Distance ratios, cross-lingual recall and language separability "
                                                 "(reads every language)"),),
           over_languages=metrics("lang_separability")),
    # Per-layer rows need the stored layer states; without them only the output's rows are written.
    Family("layers", {"text": metrics("", optional="self_similarity sts_spearman word_spearman valnorm",
                                      self_similarity="embedding.text_layers", sts_spearman="kind: sts",
                                      word_spearman="kind: word_pairs", valnorm="kind: valence_lexicon",
                                      paired="sts_spearman word_spearman valnorm")},
           ("conescope.metrics.layers",),
           (MetricAsset("layers", MODEL_LANG, "Self-similarity of every hidden layer of the text tower"),)),
)


@dataclass(frozen=True)
class Experiment:
    """An ``experiments/<name>`` asset: an experiment over stored embeddings or metric rows whose results
    are not metric rows of a family (a trajectory per training step, correlations), written to its own
    tables ``experiments.<table>`` (columns in ``storage.warehouse.EXPERIMENT_COLUMNS``). ``scope``:
    ``summary`` (per model, after every language: it replaces its model's rows) or ``all`` (once, after
    every model: it replaces every row). ``modules``: the roots of its code version. Which profiles build
    it is decided in ``assets/experiments.py`` (``experiment_assets``)."""

    name: str
    scope: str
    description: str
    tables: tuple[str, ...]
    modules: tuple[str, ...]


EVERY_MODEL = "all"  # an experiment over every model's rows, unpartitioned
EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("cluster_training", SUMMARY, "Mickus et al.'s isotropy against clusters: the stored text embeddings "
                                            "trained under a linear head, IsoScore and silhouette along the way",
               ("cluster_training", "cluster_training_summary"),
               ("conescope.cluster_training", "conescope.metrics.isotropy_clusters")),
    Experiment("transform_clusters", EVERY_MODEL, "IsoScore against silhouette across the fitted transforms "
                                                  "(metrics.isotropy and metrics.clusters after each transform)",
               ("transform_clusters", "transform_clusters_summary"),
               ("conescope.cluster_training", "conescope.metrics.isotropy_clusters")),
)
EXPERIMENT_TABLES = tuple(t for e in EXPERIMENTS for t in e.tables)


def experiment(name: str) -> Experiment:
    for e in EXPERIMENTS:
        if e.name == name:
            return e
    raise KeyError(f"no experiment {name!r} (experiments: {', '.join(e.name for e in EXPERIMENTS)})")


def family(table: str) -> Family:
    for f in FAMILIES:
        if f.table == table:
            return f
    raise KeyError(f"no metric family {table!r} (families: {', '.join(METRIC_TABLES)})")


def assets() -> Iterator[tuple[Family, MetricAsset]]:
    """Every metrics/<name> asset with its family, layer by layer: [model], [model x lang], [image model x
    lang], summary."""
    layers = (MODEL, MODEL_LANG, PAIRED, SUMMARY)
    yield from sorted(((f, a) for f in FAMILIES for a in f.assets), key=lambda fa: layers.index(fa[1].scope))


def transform_rows(model: str, lang: str) -> RowFilter:
    """The rows metrics/transforms owns in each table it writes: those of fitted transforms, per model x lang."""
    return RowFilter({"model": model, "lang": lang}, not_equal={"transform": "none"})


# Every family table, in the order of FAMILIES.
METRIC_TABLES = tuple(f.table for f in FAMILIES)
# The families measured again after each fitted transform; the others describe the raw embeddings only.
TRANSFORM_TABLES = tuple(f.table for f in FAMILIES if f.after_transforms == EVERY_TRANSFORM)
# The families whose ``transform <> 'none'`` rows metrics/transforms writes: the above, and those measured
# after the transforms the profile names (the linear probe: Tyshchuk et al. Table 3).
TRANSFORM_WRITTEN_TABLES = (*TRANSFORM_TABLES, *(f.table for f in FAMILIES if f.after_transforms == NAMED_TRANSFORMS))
# The families whose rows span a model's languages (the multilingual rows: ``lang`` is the compared one).
SUMMARY_TABLES = tuple(f.table for f, a in assets() if a.scope == SUMMARY)
