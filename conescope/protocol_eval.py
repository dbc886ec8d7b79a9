"""Fitting and measuring the transforms of a protocol plan (``conescope.protocols``): every variant
fitted on the fit sets it is evaluated from, and the metric rows of every stored transform on its
eval sets, computed by ``conescope.families`` exactly as for raw embeddings.

In-domain, a transform gets rows in every family of ``TRANSFORM_TABLES`` plus the cross-validated
modality separability (Tyshchuk et al. 2023 measure geometry there); the all-rows protocol every
family of ``TRANSFORM_TABLES`` without the probes; the other protocols get the quality metrics and the
gap, not the geometry (``GEOMETRY_TABLES``: isotropy and the silhouette); the gap shift, swept
in-domain, gets Liang et al.'s loss, accuracy and gap along the shift (a transductive shift,
``gap_of: eval_set``, is refitted on each eval set's own rows). The transforms named in
``transforms.linear_probe`` also get the linear probe (trained on the eval dataset's transformed train
rows, scored on its test rows).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
from threadpoolctl import threadpool_limits

from conescope import families
from conescope.metric_families import TRANSFORM_TABLES
from conescope.metrics.isotropy import l2_normalize
from conescope.profile import MetricSettings, TransformSettings
from conescope.protocols import (
    ALL_ROWS,
    CLASS_DISJOINT,
    IN_DOMAIN,
    EvalSet,
    Plan,
    evals_for,
    fit_arrays,
    fit_sets_for,
    variants,
)
from conescope.provenance import array_digest
from conescope.sets import ImageSet, TextSet, text_labels
from conescope.transforms import Transform, data_sha256

SWEEP_TABLES = ("modality_gap", "clip_loss", "zero_shot")  # Liang et al.'s loss and accuracy along the gap
# The geometry of the eval rows, measured where Tyshchuk et al. measure it (in-domain, all rows): isotropy,
# and the silhouette that the cross-transform view of Mickus et al. sets against it.
GEOMETRY_TABLES = ("isotropy", "clusters")


def transformed_sets(t: Transform, image: ImageSet, text: TextSet, image_rows: np.ndarray,
                     text_rows: np.ndarray) -> tuple[ImageSet, TextSet]:
    """The eval rows, L2-normalized and transformed, as the sets the metric families take."""
    img = ImageSet(image.dataset, image.sample_ids[image_rows], image.labels[image_rows], image.splits[image_rows],
                   t.transform(l2_normalize(image.emb[image_rows]).astype(np.float32), "image"))
    txt = TextSet(text.dataset, text.lang, text.text_ids[text_rows], text.sample_ids[text_rows],
                  text.labels[text_rows], [text.texts[r] for r in text_rows],
                  t.transform(l2_normalize(text.emb[text_rows]).astype(np.float32), "text"))
    return img, txt


def _isotropy_rows(dataset: str, modality: str, x: np.ndarray, settings: MetricSettings,
                   cache: dict | None) -> list[dict]:
    """``families.isotropy_rows``, memoized on the array's content: Procrustes, LSTSQ and identity
    leave the image rows as they are, so their image isotropy is computed once per eval set."""
    if cache is None:
        return families.isotropy_rows(dataset, modality, x, settings)
    key = (dataset, modality, array_digest(x).hexdigest())
    if key not in cache:
        cache[key] = families.isotropy_rows(dataset, modality, x, settings)
    return [dict(row) for row in cache[key]]


def evaluate(t: Transform, ev: EvalSet, sets: dict[str, tuple[ImageSet, TextSet]], settings: MetricSettings,
             logit_scale: float, logit_bias: float | None, tables: tuple[str, ...] = TRANSFORM_TABLES,
             separability: bool = True, cache: dict | None = None) -> dict[str, list[dict]]:
    """Metric records of the transformed eval set, per warehouse table (``metrics.<family>`` for each
    family of ``tables``), with ``transform``, ``fit_set`` and ``eval_set`` filled in and the protocol
    and transform settings added to ``params``; ``separability`` adds the cross-validated probes to
    modality_gap."""
    if t.transductive:  # refitted on the evaluated rows themselves; the rows say so in fit_set and params
        all_image, all_text = sets[ev.dataset]
        t = t.for_eval(l2_normalize(all_image.emb[ev.image_rows]), l2_normalize(all_text.emb[ev.text_rows]))
    image, text = transformed_sets(t, *sets[ev.dataset], ev.image_rows, ev.text_rows)
    # Every eval row is already the eval split: the families must not filter it again. A variant with its
    # own scoring (the paper's PCA-k by dot product) overrides the profile's geometry.
    settings = replace(settings, retrieval_eval_set="all", geometry=t.scoring or settings.geometry)
    out: dict[str, list[dict]] = {}
    if "isotropy" in tables:
        out["isotropy"] = (_isotropy_rows(ev.dataset, "image", image.emb, settings, cache)
                           + _isotropy_rows(ev.dataset, "text", text.emb, settings, cache)
                           + _isotropy_rows(ev.dataset, "joint", np.vstack([image.emb, text.emb]), settings, cache))
    if "modality_gap" in tables:
        out["modality_gap"] = families.gap_rows(image, text, settings, separability=separability)
    if "clip_loss" in tables:
        out["clip_loss"] = families.clip_loss_rows(image, text, logit_scale, logit_bias, settings)
    if "zero_shot" in tables:
        out["zero_shot"] = families.zero_shot_rows(image, text, settings)
    if "retrieval" in tables:
        out["retrieval"] = families.retrieval_rows(image, text, settings)
    if "clusters" in tables:  # a caption takes its image's label, a class prompt its class (as metrics/clusters)
        out["clusters"] = (families.silhouette_rows(ev.dataset, "image", image.emb, image.labels, settings)
                           + families.silhouette_rows(ev.dataset, "text", text.emb,
                                                      text_labels(text, dict(zip(image.sample_ids, image.labels,
                                                                                 strict=True))), settings))
    if "linear_probe" in tables:  # trained on the eval dataset's transformed train rows, scored on test
        all_image, all_text = sets[ev.dataset]
        probe_image, _ = transformed_sets(t, all_image, all_text, np.arange(len(all_image.emb)), ev.text_rows[:0])
        out["linear_probe"] = families.linear_probe_rows(probe_image, settings)
    extra = {"protocol": ev.protocol, "transform": {"kind": t.kind, **t.params()},
             "fit_sha256": t.provenance.get("data_sha256"), **ev.params}
    for rows in out.values():
        for row in rows:
            row.update(transform=t.name, fit_set=ev.name if t.transductive else ev.fit_set, eval_set=ev.name,
                       params=json.dumps({**json.loads(row.get("params") or "{}"), **extra}, sort_keys=True,
                                         default=str))
    return out


def tables_for(kind: str, protocol: str) -> tuple[tuple[str, ...], bool]:
    """(tables, separability) of a transform kind under a protocol: the gap-shift sweep measures loss,
    accuracy, gap norm and pair cosines (Liang et al.); isotropy, the silhouette and the (cross-validated,
    costly) modality separability are measured in-domain, where Tyshchuk et al. measure geometry; the all-rows
    protocol (their Table 5) gets isotropy and the silhouette too, without the separability probes; every
    protocol gets the quality metrics and the gap norm."""
    if kind == "gap_shift":
        return SWEEP_TABLES, False
    if protocol == IN_DOMAIN:
        return TRANSFORM_TABLES, True
    if protocol == ALL_ROWS:
        return TRANSFORM_TABLES, False
    return tuple(t for t in TRANSFORM_TABLES if t not in GEOMETRY_TABLES), False


# Below this many rows per dataset the d x d decompositions dominate and a second BLAS thread only
# adds synchronisation: on a shared 2-core machine it cost ten times the CPU time (demo sets).
SMALL_ROWS = 5000


def _blas_threads(sets: dict[str, tuple[ImageSet, TextSet]]):
    small = max((len(img.emb) + len(txt.emb) for img, txt in sets.values()), default=0) < SMALL_ROWS
    return threadpool_limits(limits=1, user_api="blas") if small else nullcontext()


def fit_all(settings: TransformSettings, kind: str, planned: Plan,
            sets: dict[str, tuple[ImageSet, TextSet]]) -> tuple[list[Transform], list[str]]:
    """Every variant of ``kind`` fitted on every fit set it is evaluated from; variants that cannot
    be fitted on a set (whitening-k with k above the set's rank) are returned as reasons instead."""
    fitted, skipped = [], []
    with _blas_threads(sets):
        for fit in fit_sets_for(kind, planned):
            arrays: dict[bool, tuple[np.ndarray, np.ndarray]] = {}
            for t in variants(settings, kind):
                if t.distinct_texts not in arrays:
                    arrays[t.distinct_texts] = fit_arrays(fit, sets, t.distinct_texts)
                try:
                    fitted.append(t.fit(*arrays[t.distinct_texts], fit_set=fit.name))
                except ValueError as exc:
                    skipped.append(f"{fit.name}: {exc}")
    return fitted, skipped


def evaluate_all(stored: list[Transform], planned: Plan, sets: dict[str, tuple[ImageSet, TextSet]],
                 settings: MetricSettings, scales: dict[str, tuple[float, float | None]]) -> dict[str, list[dict]]:
    """Metric records of every stored transform on every eval set of its fit set, per table.
    ``scales`` maps a dataset to the model's (logit scale, logit bias). A stored transform whose fit
    data no longer hashes to its provenance (embeddings recomputed since) is an error."""
    out: dict[str, list[dict]] = {}
    hashes: dict[tuple[str, bool], str] = {}
    cache: dict = {}
    with _blas_threads(sets):
        for t in stored:
            fit_set = t.provenance.get("fit_set")
            if fit_set not in planned.fit_sets:
                raise ValueError(f"{t.name}: fitted on {fit_set!r}, which no protocol of the profile uses; "
                                 f"rematerialize the transforms")
            key = (fit_set, t.distinct_texts)
            if key not in hashes:
                hashes[key] = data_sha256(*fit_arrays(planned.fit_sets[fit_set], sets, t.distinct_texts))
            if t.provenance.get("data_sha256") != hashes[key]:
                raise ValueError(f"{t.name} fitted on {fit_set}: its fit rows changed since it was fitted "
                                 f"(data hash differs); rematerialize transforms/{t.kind}")
            for ev in evals_for(t.kind, fit_set, planned):
                tables, separability = tables_for(t.kind, ev.protocol)
                if t.name in planned.probe_transforms and ev.protocol != CLASS_DISJOINT:
                    tables = (*tables, "linear_probe")
                rows = evaluate(t, ev, sets, settings, *scales[ev.dataset], tables=tables,
                                separability=separability, cache=cache)
                for table, recs in rows.items():
                    out.setdefault(table, []).extend(recs)
    return out
