"""The modality gap (Liang et al. 2022, "Mind the Gap", section 4.1): the difference of the modality
centroids of L2-normalized embeddings; the linear separability of the two modalities (Liang et al.
2022; Amumo); positive vs random pair cosines and their difference, the "similarity gap"."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from joblib import parallel_backend
from sklearn.base import ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from conescope.metrics.isotropy import l2_normalize, unit_row_mean

SEPARABILITY_METHODS = ("logreg", "svm")
_PAIR_BLOCK = 4096  # pairs gathered at a time: 8 MB of float32 rows per side at d = 512


def gap_vector(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Delta = mean_i u(image_i) - mean_j u(text_j), u the L2 normalization."""
    return unit_row_mean(image) - unit_row_mean(text)


def gap_norm(image: np.ndarray, text: np.ndarray) -> float:
    """||Delta||: 0 when the centroids coincide, at most 2."""
    return float(np.linalg.norm(gap_vector(image, text)))


def separability_classifier(method: str, seed: int) -> ClassifierMixin:
    """The linear classifier of a separability probe, scikit-learn defaults (C = 1): L-BFGS logistic
    regression (multinomial over more than two classes) or a linear SVM (``LinearSVC``)."""
    if method == "logreg":
        return LogisticRegression(max_iter=1000)
    if method == "svm":
        return LinearSVC(random_state=seed)
    raise ValueError(f"unknown separability method {method!r}: expected one of {SEPARABILITY_METHODS}")


def _subsample(x: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or len(x) <= limit:
        return np.asarray(x)
    return np.asarray(x)[np.sort(rng.choice(len(x), size=limit, replace=False))]


def linear_separability(groups: Sequence[np.ndarray], method: str = "logreg", folds: int = 5, seed: int = 0,
                        max_per_group: int | None = None) -> float:
    """Mean accuracy over stratified, seeded-shuffled K folds of a linear classifier predicting the group
    of each L2-normalized row: 1 for linearly separable groups, about the majority share (1/G for
    balanced groups) when they are indistinguishable.

    Each group is first subsampled without replacement to ``max_per_group`` rows with the seed (to
    bound the cost). ``folds`` is lowered to the size of the smallest group when that is smaller,
    so that tiny sets still get a stratified split; a group of fewer than two rows is an error.
    """
    if len(groups) < 2:
        raise ValueError(f"separability needs at least two groups, got {len(groups)}")
    classifier = separability_classifier(method, seed)
    rng = np.random.default_rng(seed)
    parts = [_subsample(g, max_per_group, rng) for g in groups]
    smallest = min(len(p) for p in parts)
    if smallest < 2:
        raise ValueError(f"separability needs at least two rows per group, the smallest has {smallest}")
    x = np.vstack([l2_normalize(p) for p in parts])
    y = np.concatenate([np.full(len(p), label) for label, p in enumerate(parts)])
    cv = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    # The solvers make thousands of small BLAS calls (n x d times d x G); with a multi-threaded BLAS on
    # a busy machine each call waits on a descheduled sibling thread (measured 0.75 s vs 71 s for
    # 3 x 3000 rows), and one thread loses nothing at these shapes.
    # The folds run in threads instead: liblinear and the L-BFGS BLAS calls release the GIL, so on
    # 2 cores the five fits take 0.6 of the time of a sequential loop, with no process start-up.
    workers = min(cv.get_n_splits(), os.cpu_count() or 1)
    with threadpool_limits(limits=1, user_api="blas"), parallel_backend("threading", n_jobs=workers):
        return float(cross_val_score(classifier, x, y, cv=cv, n_jobs=workers).mean())


def modality_separability(image: np.ndarray, text: np.ndarray, method: str = "logreg", folds: int = 5,
                          seed: int = 0, max_per_modality: int | None = 5000) -> float:
    """Cross-validated accuracy of a linear classifier telling image from text embeddings (Liang et al.
    2022; Amumo): ~1.0 when the modalities occupy separable regions (the gap), ~0.5 for a
    shared distribution with balanced modalities. ``method``: 'logreg' or 'svm'; see
    ``linear_separability`` for the protocol."""
    return linear_separability([image, text], method=method, folds=folds, seed=seed, max_per_group=max_per_modality)


def _row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # einsum casts element by element into a float64 accumulator: no float64 copies of float32 rows
    return np.einsum("ij,ij->i", a, b, dtype=np.float64, casting="safe")


def _paired_cosines(image_rows: np.ndarray, text_rows: np.ndarray) -> np.ndarray:
    """<a_i, b_i> / (||a_i|| ||b_i||) row by row, in float64."""
    norms = np.sqrt(_row_dots(image_rows, image_rows) * _row_dots(text_rows, text_rows))
    if np.any(norms == 0):
        raise ValueError(f"{int(np.sum(norms == 0))} pair(s) with a zero row have no cosine")
    return _row_dots(image_rows, text_rows) / norms


def _check_index(image_index: np.ndarray, n_image: int, n_text: int) -> np.ndarray:
    index = np.asarray(image_index)
    if index.shape != (n_text,) or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"image_index must hold one integer per text row ({n_text}), got {index.dtype} {index.shape}")
    if index.size and index.max() >= n_image:
        raise ValueError(f"image_index refers to image row {int(index.max())} of {n_image}")
    return index


def pair_cosines(image: np.ndarray, text: np.ndarray, image_index: np.ndarray) -> np.ndarray:
    """cos(image[image_index[j]], text[j]) for every text row j (the positive pairs whose cosines Liang
    et al. 2022 compare with random pairs). Only the paired rows are normalized: O(n d)."""
    index = _check_index(image_index, len(image), len(text))
    if index.size and index.min() < 0:
        raise ValueError("image_index has negative entries: every text row needs its image here")
    return indexed_pair_cosines(image, text, index, np.arange(len(text)))


def indexed_pair_cosines(image: np.ndarray, text: np.ndarray, image_rows: np.ndarray,
                         text_rows: np.ndarray) -> np.ndarray:
    """cos(image[image_rows[k]], text[text_rows[k]]) for every k, in float64. The rows are gathered
    ``_PAIR_BLOCK`` pairs at a time: no copy of every paired row is made (at 40,000 x 512 the two
    copies' page faults took longer than the dot products), and each row's cosine is the same."""
    image, text = np.asarray(image), np.asarray(text)
    image_rows, text_rows = np.asarray(image_rows), np.asarray(text_rows)
    if image_rows.shape != text_rows.shape or image_rows.ndim != 1:
        raise ValueError(f"image_rows {image_rows.shape} and text_rows {text_rows.shape} must be paired 1-D indices")
    out = np.empty(len(image_rows))
    for start in range(0, len(image_rows), _PAIR_BLOCK):
        stop = start + _PAIR_BLOCK
        out[start:stop] = _paired_cosines(image[image_rows[start:stop]], text[text_rows[start:stop]])
    return out


def random_pair_cosines(image: np.ndarray, text: np.ndarray, n: int, seed: int,
                        image_index: np.ndarray | None = None) -> np.ndarray:
    """Cosines of ``n`` (image, text) pairs drawn uniformly with replacement. With ``image_index``
    (image_index[j] = the image that text j describes, negative for none) true pairs are rejected and
    redrawn, so the pairs are uniform over the non-matching ones."""
    n_image, n_text = len(image), len(text)
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, n_image, size=n), rng.integers(0, n_text, size=n)
    if image_index is not None:
        index = _check_index(image_index, n_image, n_text)
        if np.sum(index >= 0) >= n_image * n_text:
            raise ValueError("every (image, text) pair is a true pair: no random pair to draw")
        bad = index[cols] == rows
        while bad.any():
            rows[bad], cols[bad] = rng.integers(0, n_image, size=bad.sum()), rng.integers(0, n_text, size=bad.sum())
            bad = index[cols] == rows
    return _paired_cosines(np.asarray(image)[rows], np.asarray(text)[cols])


def similarity_gap(pos: np.ndarray, rand: np.ndarray) -> float:
    """mean(pos) - mean(rand): how much closer true pairs are than random ones (cosine units)."""
    pos, rand = np.asarray(pos, dtype=np.float64), np.asarray(rand, dtype=np.float64)
    if pos.size == 0 or rand.size == 0:
        raise ValueError(f"similarity gap needs positive and random cosines, got {pos.size} and {rand.size}")
    return float(pos.mean() - rand.mean())
