"""The isotropy-against-clusters experiments as rows of the warehouse (``docs/storage.md``, "Experiments"):
which stored sets they read and what each row holds. The formulas are in
``conescope.metrics.isotropy_clusters``.

- :func:`trajectory_rows` (asset ``experiments/cluster_training``, per model): for every dataset of the
  profile's ``cluster_training`` section and every language it has, the text embeddings of the model
  with the label of each text (its sample's, from the manifest, as ``metrics/clusters`` reads them for a
  text-only model; unlabelled texts left out) are trained under a linear head once per seed: one
  ``step`` row per record, and the correlation of IsoScore with silhouette per seed and over all seeds.
- :func:`transform_rows` (asset ``experiments/transform_clusters``, after every model): for every fitted
  transform, model, language, dataset and modality with both an IsoScore row (``metrics.isotropy``) and
  a silhouette row (``metrics.clusters``) on the same in-domain eval set, the pair, and the change each
  transform makes from the ``identity`` transform of its group; and the correlation of the changes over
  every group, per modality and over both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict

import numpy as np

from conescope.metrics.isotropy_clusters import (
    STATISTICS,
    Correlation,
    Record,
    correlation,
    grouped_correlation,
    train_trajectory,
)
from conescope.profile import ClusterTrainingSpec, MetricSettings, Profile
from conescope.sets import EmbeddingSource, text_labels

IDENTITY = "identity"  # the transform whose rows are the raw eval rows: the baseline of the changes
EVERY_MODALITY = "all"  # the summary row over both modalities


class UnlabelledDataset(ValueError):
    """A dataset of ``cluster_training.datasets`` has fewer than two labelled classes in a partition."""


def _params(**kw) -> str:
    return json.dumps(kw, sort_keys=True, default=str)


def labelled_texts(source: EmbeddingSource, dataset: str, lang: str) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, labels) of the labelled texts of ``dataset`` in ``lang``; :class:`UnlabelledDataset`
    when fewer than two classes are labelled (the experiment has nothing to train)."""
    text = source.text_set(dataset, lang)
    labels = text_labels(text, source.sample_labels(dataset))
    keep = labels >= 0
    if len(np.unique(labels[keep])) < 2 or keep.sum() <= len(np.unique(labels[keep])):
        raise UnlabelledDataset(f"cluster_training: dataset {dataset!r} ({lang}) has {len(np.unique(labels[keep]))} "
                                f"labelled class(es) among {len(labels)} texts; the experiment needs at least 2 "
                                f"(remove it from cluster_training.datasets)")
    return text.emb[keep], labels[keep]


def _summary(dataset: str, lang: str, seed: int | None, records: list[Record], settings: MetricSettings) -> list[dict]:
    iso = [r.isoscore for r in records]
    sil = [r.silhouette for r in records]
    rows = []
    for statistic in STATISTICS:
        c = correlation(iso, sil, statistic, seed=settings.seed, n_boot=settings.bootstrap)
        rows.append({"dataset": dataset, "lang": lang, "seed": seed, "statistic": statistic, "value": c.value,
                     "ci_low": c.ci_low, "ci_high": c.ci_high, "n": c.n,
                     "params": _params(x="isoscore", y="silhouette", ci=c.method,
                                       over="every seed" if seed is None else "one run")})
    return rows


def trajectory_rows(profile: Profile, model: str, source: EmbeddingSource,
                    log=None) -> tuple[list[dict], list[dict]]:
    """(step rows, summary rows) of ``model`` for every dataset and language of the experiment
    (:class:`UnlabelledDataset` for a dataset without two labelled classes)."""
    spec: ClusterTrainingSpec = profile.cluster_training
    settings = profile.metrics
    steps, summary = [], []
    for dataset in spec.datasets:
        for lang in profile.dataset_languages(dataset):
            x, labels = labelled_texts(source, dataset, lang)
            params = _params(updates=spec.updates, lr=spec.lr, optimizer="adam (torch defaults)", batch="full",
                             head="torch.nn.Linear", silhouette="cosine", isoscore="rows L2-normalized",
                             classes=len(np.unique(labels)))
            pooled: list[Record] = []
            for seed in spec.seeds:
                records = train_trajectory(x, labels, seed, spec.updates, spec.record_every, lr=spec.lr,
                                           silhouette_seed=settings.seed, exact_max=settings.silhouette_exact_max)
                if log is not None:
                    first, last = records[0], records[-1]
                    log(f"cluster_training {dataset}/{lang} seed {seed}: IsoScore {first.isoscore:.4f} -> "
                        f"{last.isoscore:.4f}, silhouette {first.silhouette:.4f} -> {last.silhouette:.4f}, "
                        f"accuracy {last.train_accuracy:.3f}")
                steps += [{"dataset": dataset, "lang": lang, **asdict(r), "n": len(x), "params": params}
                          for r in records]
                summary += _summary(dataset, lang, seed, records, settings)
                pooled += records
            summary += _summary(dataset, lang, None, pooled, settings)
    return steps, summary


def _groups(rows: Iterable[dict]) -> dict[tuple, dict]:
    return {(r["model"], r["lang"], r["dataset"], r["modality"], r["transform"], r["fit_set"], r["eval_set"]): r
            for r in rows}


def transform_rows(isoscore_rows: list[dict], silhouette_rows: list[dict],
                   settings: MetricSettings) -> tuple[list[dict], list[dict]]:
    """(point rows, summary rows) of the cross-transform view from the stored ``isoscore`` rows of
    metrics.isotropy and ``silhouette`` rows of metrics.clusters with ``transform <> 'none'`` (the
    columns model, lang, dataset, modality, transform, fit_set, eval_set, value). A point's group is
    its model, lang, dataset, modality and eval set; its changes are from that group's identity
    transform (a group without one has points and no changes). The summary correlates the changes,
    per modality and over both, resampling groups."""
    iso, sil = _groups(isoscore_rows), _groups(silhouette_rows)
    points = []
    for key in sorted(set(iso) & set(sil), key=lambda k: tuple(str(v) for v in k)):
        model, lang, dataset, modality, transform, fit_set, eval_set = key
        points.append({"model": model, "lang": lang, "dataset": dataset, "modality": modality,
                       "transform": transform, "fit_set": fit_set, "eval_set": eval_set,
                       "isoscore": float(iso[key]["value"]), "silhouette": float(sil[key]["value"])})
    base = {(p["model"], p["lang"], p["dataset"], p["modality"], p["eval_set"]): p for p in points
            if p["transform"] == IDENTITY}
    for p in points:
        b = base.get((p["model"], p["lang"], p["dataset"], p["modality"], p["eval_set"]))
        p["d_isoscore"] = None if b is None else p["isoscore"] - b["isoscore"]
        p["d_silhouette"] = None if b is None else p["silhouette"] - b["silhouette"]
    summary = []
    modalities = sorted({p["modality"] for p in points})
    for modality in [*modalities, *([EVERY_MODALITY] if len(modalities) > 1 else [])]:
        grouped: dict[tuple, tuple[list, list]] = {}
        for p in points:
            if p["d_isoscore"] is None or p["transform"] == IDENTITY or modality not in (p["modality"], EVERY_MODALITY):
                continue
            a, b = grouped.setdefault((p["model"], p["lang"], p["dataset"], p["modality"], p["eval_set"]), ([], []))
            a.append(p["d_isoscore"])
            b.append(p["d_silhouette"])
        if sum(len(a) for a, _ in grouped.values()) < 3:
            continue
        for statistic in STATISTICS:
            c: Correlation = grouped_correlation(list(grouped.values()), statistic, seed=settings.seed,
                                                 n_boot=settings.bootstrap)
            summary.append({"modality": modality, "statistic": statistic, "value": c.value, "ci_low": c.ci_low,
                            "ci_high": c.ci_high, "n": c.n, "groups": len(grouped),
                            "params": _params(x="isoscore change from identity",
                                              y="silhouette change from identity", ci=c.method)})
    return points, summary
