"""Isotropy against cluster structure (Mickus, Grönroos & Attieh 2024, "Isotropy, Clusters, and
Classifiers", ACL 2024 short papers, section 4): optimising embeddings for a linear classifier makes them
more clustered and less isotropic.

The experiment (their setup, :func:`train_trajectory`): the embedding matrix E (n x d) of a labelled set
is made a trainable parameter, initialised from the stored embeddings, under a linear head W, b
(``torch.nn.Linear``'s default initialisation, seeded); both are trained with Adam (PyTorch's defaults:
lr 1e-3, betas (0.9, 0.999), eps 1e-8) on the full-batch cross-entropy of the labels for a fixed number
of updates. Every ``record_every`` updates (step 0 included, and the last), the trajectory records
IsoScore of E (``conescope.metrics.isotropy.isoscore``, the function of ``metrics.isotropy``: rows
L2-normalized), the silhouette of E against the labels (``conescope.metrics.clusters.silhouette``, the
function of ``metrics.clusters``: cosine distance, exact up to ``exact_max`` rows, else the mean over
seeded subsamples), the training accuracy of the head and the loss. Mickus et al. report that silhouette
rises while IsoScore falls, with a strongly negative correlation between the two over training.

:func:`correlation` gives Pearson's and Spearman's r between two series with a BCa bootstrap interval
(``scipy.stats.bootstrap``, paired resampling). Over a trajectory the resampled unit is the recorded
point: successive records are not independent draws, so the interval says how much r rests on a few
records, not how it would vary over independent training runs (the per-seed r values say that).
:func:`grouped_correlation` is the cross-transform view: the change of IsoScore against the change of
silhouette that each fitted transform makes from the identity in its group (model x lang x dataset), with
the bootstrap resampling whole groups.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from conescope.metrics.clusters import silhouette
from conescope.metrics.isotropy import isoscore

STATISTICS = ("pearson", "spearman")


@dataclass(frozen=True)
class Record:
    """The state of one training run after ``step`` updates."""

    seed: int
    step: int
    isoscore: float
    silhouette: float
    silhouette_ci_low: float | None
    silhouette_ci_high: float | None
    train_accuracy: float
    loss: float


def recorded_steps(updates: int, record_every: int) -> list[int]:
    """0, record_every, 2 record_every, ... and ``updates`` itself."""
    if updates < 1 or record_every < 1:
        raise ValueError(f"updates and record_every must be >= 1, got {updates} and {record_every}")
    return sorted(set(range(0, updates + 1, record_every)) | {updates})


def train_trajectory(x: np.ndarray, labels: np.ndarray, seed: int, updates: int, record_every: int,
                     lr: float = 1e-3, silhouette_seed: int = 0, exact_max: int = 5000,
                     on_record: Callable[[Record], None] | None = None) -> list[Record]:
    """The records of one run (Mickus et al.'s setup, module docstring): E initialised from ``x``, a
    linear head seeded by ``seed``, ``updates`` full-batch Adam steps on the cross-entropy of
    ``labels`` (any integers; at least two classes). The head is initialised under a private torch
    generator state (``torch.random.fork_rng``), so the run depends on ``seed`` only."""
    import torch

    x = np.asarray(x, dtype=np.float32)
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {len(classes)}")
    if len(x) != len(y):
        raise ValueError(f"one label per row: {len(x)} rows, {len(y)} labels")
    steps = set(recorded_steps(updates, record_every))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(x.shape[1], len(classes))
    emb = torch.nn.Parameter(torch.from_numpy(x.copy()))
    target = torch.from_numpy(y.astype(np.int64))
    optimizer = torch.optim.Adam([emb, *head.parameters()], lr=lr)
    records: list[Record] = []
    for step in range(updates + 1):
        logits = head(emb)
        loss = torch.nn.functional.cross_entropy(logits, target)
        if step in steps:  # the state before this step's update: step 0 is the stored embeddings
            e = emb.detach().numpy()
            sil, lo, hi = silhouette(e, y, seed=silhouette_seed, exact_max=exact_max)
            rec = Record(seed, step, isoscore(e), sil, lo, hi,
                         float((logits.argmax(dim=1) == target).float().mean()), float(loss.detach()))
            records.append(rec)
            if on_record is not None:
                on_record(rec)
        if step == updates:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return records


@dataclass(frozen=True)
class Correlation:
    statistic: str  # pearson | spearman
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int  # points correlated
    method: str  # how the interval was drawn


def _r(statistic: str, a: np.ndarray, b: np.ndarray) -> float:
    if statistic == "pearson":
        return float(stats.pearsonr(a, b).statistic)
    return float(stats.spearmanr(a, b).statistic)


def _constant(v: np.ndarray) -> bool:
    return bool(np.all(v == v[0]))


def correlation(a: Sequence[float], b: Sequence[float], statistic: str, seed: int = 0, n_boot: int = 1000,
                alpha: float = 0.05) -> Correlation:
    """Pearson's or Spearman's r of the paired series ``a``, ``b`` with a (1 - alpha) BCa bootstrap
    interval over the pairs (None when fewer than 4 pairs, or when a resample leaves r undefined: a
    constant series). NaN r (a constant series) has no interval."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic {statistic!r}: expected one of {', '.join(STATISTICS)}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"a correlation needs at least 3 pairs of equal length, got {len(a)} and {len(b)}")
    if _constant(a) or _constant(b):
        return Correlation(statistic, float("nan"), None, None, len(a), "none: a constant series")
    value = _r(statistic, a, b)
    if len(a) < 4:
        return Correlation(statistic, value, None, None, len(a), "none: fewer than 4 pairs")
    # a resample of a short trajectory can repeat one pair only (r undefined, the interval then degenerate):
    # that case is returned without an interval below instead of warned about
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((a, b), lambda u, v: _r(statistic, u, v), paired=True, vectorized=False,
                              n_resamples=n_boot, confidence_level=1 - alpha, method="BCa",
                              rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)) or not lo <= value <= hi:
        return Correlation(statistic, value, None, None, len(a), "none: degenerate resamples")
    return Correlation(statistic, value, lo, hi, len(a), "bca-bootstrap over pairs")


def grouped_correlation(groups: Sequence[tuple[np.ndarray, np.ndarray]], statistic: str, seed: int = 0,
                        n_boot: int = 1000, alpha: float = 0.05) -> Correlation:
    """r over the pooled pairs of every group, with a percentile bootstrap interval that resamples whole
    groups with replacement (points of one group share their model and data, so they are not independent);
    with a single group, :func:`correlation`'s interval over pairs."""
    groups = [(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)) for a, b in groups if len(a)]
    if not groups:
        raise ValueError("no group with points to correlate")
    if len(groups) == 1:
        return correlation(*groups[0], statistic, seed=seed, n_boot=n_boot, alpha=alpha)
    a, b = np.concatenate([g[0] for g in groups]), np.concatenate([g[1] for g in groups])
    if len(a) < 3:
        raise ValueError(f"a correlation needs at least 3 pairs, got {len(a)}")
    if _constant(a) or _constant(b):
        return Correlation(statistic, float("nan"), None, None, len(a), "none: a constant series")
    value = _r(statistic, a, b)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(groups), len(groups))
        ra, rb = np.concatenate([groups[i][0] for i in pick]), np.concatenate([groups[i][1] for i in pick])
        if len(ra) >= 3 and not _constant(ra) and not _constant(rb):
            draws.append(_r(statistic, ra, rb))
    if len(draws) < n_boot // 2:
        return Correlation(statistic, value, None, None, len(a), "none: degenerate resamples")
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return Correlation(statistic, value, float(lo), float(hi), len(a),
                       f"percentile bootstrap over {len(groups)} groups")
