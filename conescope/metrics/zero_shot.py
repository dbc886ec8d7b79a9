"""Zero-shot classification: each image is assigned the class whose text embedding scores highest
(Radford et al. 2021, section 3.1.2), scored as top-k accuracy and mean per-class recall; Tyshchuk
et al. 2023 (section 4.3) report CIFAR-100 top-1 after each transform.

A sample's rank is the number of *other* classes scoring at least as high as its true class, so ties
count against the model (a collapsed embedding that scores every class equally gets top-1 = 0, not 1);
it is a hit at k when that rank is below k. On scores without ties this is exactly scikit-learn's
``top_k_accuracy_score``.
"""

from __future__ import annotations

import numpy as np

from conescope.metrics.isotropy import l2_normalize
from conescope.metrics.logits import prepare, similarity_prepared

_BLOCK_ROWS = 8192  # images scored at once


def class_embeddings(class_text: np.ndarray) -> np.ndarray:
    """One row per class. A 2-D (n_classes, d) array is returned as is (in float64).

    A 3-D (n_classes, n_templates, d) array holds one embedding per prompt template ("a photo of a
    {c}", ...): CLIP's prompt ensembling (Radford et al. 2021, section 3.1.4) averages the
    L2-normalized template embeddings of each class and renormalizes the mean, so the result has unit
    rows whatever the geometry used afterwards.
    """
    class_text = np.asarray(class_text, dtype=np.float64)
    if class_text.ndim == 2:
        return class_text
    if class_text.ndim != 3:
        raise ValueError(f"class_text must be (n_classes, d) or (n_classes, n_templates, d), got {class_text.shape}")
    n_classes, n_templates, d = class_text.shape
    unit = l2_normalize(class_text.reshape(-1, d)).reshape(n_classes, n_templates, d)
    return l2_normalize(unit.mean(axis=1))


def label_columns(labels: np.ndarray, class_ids: np.ndarray | None, n_classes: int) -> np.ndarray:
    """Column of each sample's true class in the score matrix; a label outside ``class_ids`` is an error
    (such a sample could never be a hit, which would silently lower every accuracy)."""
    labels = np.asarray(labels)
    ids = np.arange(n_classes) if class_ids is None else np.asarray(class_ids)
    if ids.shape != (n_classes,):
        raise ValueError(f"class_ids must hold one id per class ({n_classes}), got shape {ids.shape}")
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    if np.any(sorted_ids[1:] == sorted_ids[:-1]):
        raise ValueError("class_ids must be distinct")
    pos = np.clip(np.searchsorted(sorted_ids, labels), 0, n_classes - 1)
    unknown = sorted_ids[pos] != labels
    if np.any(unknown):
        raise ValueError(f"{int(unknown.sum())} label(s) not among class_ids, e.g. {labels[unknown][0]!r}")
    return order[pos]


def true_class_ranks(image: np.ndarray, labels: np.ndarray, class_text: np.ndarray,
                     class_ids: np.ndarray | None = None, geometry: str = "cosine") -> np.ndarray:
    """rank_i = #{c != y_i : s(image_i, class_c) >= s(image_i, class_{y_i})}, 0 for a correct top-1.

    Scores use :func:`conescope.metrics.logits.logits` geometry (scale and bias do not change ranks).
    """
    image = np.asarray(image)
    classes = prepare(class_embeddings(class_text), geometry)
    if image.ndim != 2 or image.shape[1] != classes.shape[1]:
        raise ValueError(f"image {image.shape} and class_text {np.shape(class_text)} must share the dimension")
    columns = label_columns(labels, class_ids, classes.shape[0])
    if columns.shape != (image.shape[0],):
        raise ValueError(f"need one label per image: {columns.shape[0]} labels for {image.shape[0]} images")
    ranks = np.empty(image.shape[0], dtype=np.int64)
    for start in range(0, image.shape[0], _BLOCK_ROWS):
        stop = start + _BLOCK_ROWS
        scores = similarity_prepared(prepare(image[start:stop], geometry), classes, geometry)
        true = scores[np.arange(scores.shape[0]), columns[start:stop]]
        # the true class always counts itself once (same matrix entry), hence the -1
        ranks[start:stop] = np.count_nonzero(scores >= true[:, None], axis=1) - 1
    return ranks


def zero_shot_hits(image: np.ndarray, labels: np.ndarray, class_text: np.ndarray, k: int,
                   class_ids: np.ndarray | None = None, geometry: str = "cosine") -> np.ndarray:
    """Per-sample top-k hits (rank < k), a boolean array for bootstrap CIs.

    k must lie in 1..n_classes (a ValueError names both otherwise): a top-k beyond the number of
    classes would be 1 by construction and say nothing about the model.
    """
    n_classes = np.shape(class_text)[0]
    if not 1 <= k <= n_classes:
        raise ValueError(f"k={k} must lie between 1 and the number of classes ({n_classes})")
    return true_class_ranks(image, labels, class_text, class_ids, geometry) < k


def zero_shot(image: np.ndarray, labels: np.ndarray, class_text: np.ndarray, class_ids: np.ndarray | None = None,
              ks: tuple[int, ...] = (1, 5), geometry: str = "cosine") -> dict[str, float]:
    """Top-k accuracy for each k (key ``top{k}``) = mean_i [rank_i < k], and mean per-class recall =
    mean over the classes present in ``labels`` of the per-class top-1 hit rate (scikit-learn's
    ``balanced_accuracy_score``).

    Row c of ``class_text`` embeds class ``class_ids[c]`` (default c); several templates per class may
    be given as a 3-D array and are ensembled (:func:`class_embeddings`). A k larger than the number of
    classes is skipped (its key is absent): such a top-k is 1 by construction, so reporting it would
    only mislead (top5 on a 3-class set, say).
    """
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be at least 1, got {ks}")
    ranks = true_class_ranks(image, labels, class_text, class_ids, geometry)
    return zero_shot_from_ranks(ranks, labels, np.shape(class_text)[0], ks)


def zero_shot_from_ranks(ranks: np.ndarray, labels: np.ndarray, n_classes: int,
                         ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """:func:`zero_shot` from the ranks of :func:`true_class_ranks`, so that a caller that also wants the
    per-sample hits scores the images once."""
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be at least 1, got {ks}")
    out = {f"top{k}": float(np.mean(ranks < k)) for k in ks if k <= n_classes}
    _, class_of_sample = np.unique(np.asarray(labels), return_inverse=True)
    per_class = np.bincount(class_of_sample, weights=ranks == 0) / np.bincount(class_of_sample)
    out["mean_per_class_recall"] = float(per_class.mean())
    return out
