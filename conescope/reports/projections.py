"""2-D maps of embeddings and the ordering of the similarity heatmap.

- SVD projection (Tyshchuk et al. 2023, Figures 2-4): rows on the top two right singular vectors of
  the stacked image and text rows; uncentered, so a cone shows as a cloud away from the origin.
- t-SNE maps (openTSNE, Poličar et al. 2019): joint (image and text rows fitted together: the gap
  shows as two separate clouds), and out-of-sample (fitted on the image rows only; text rows moved
  by the whole gap vector, then placed into that map by ``TSNEEmbedding.transform``, which positions
  each new point among its nearest fitted neighbours: each caption lands next to the images it
  resembles and the gap closes visually, the Amumo article's "fit on one modality, transform the
  other" view). t-SNE rather than UMAP:
  umap-learn compiles its numba kernels in every fresh process (about 13 s warm, 50 s cold on this
  2-core machine), beyond the 30 s budget of a report; openTSNE needs no compilation (about 2 s for
  240 points) and also maps new points into a fitted map.
- Heatmap ordering (Amumo, Humer et al.): average-linkage hierarchical clustering (scipy) of the
  sampled pairs, cosine distance on the concatenated normalized image and caption rows, leaves in
  dendrogram order; clusters labelled by their most distinctive caption words (class-based TF-IDF).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from conescope.metrics.isotropy import l2_normalize
from conescope.reports.cache import ArrayCache, data_key
from conescope.transforms import GapShift

TSNE_VERSION = "opentsne-3"  # part of the cache key: bump when the settings below change


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` rows, drawn without replacement with ``seed``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def svd_projection(image: np.ndarray, text: np.ndarray, normalize: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image_2d, text_2d, share of the squared singular values in each of the two components) of the
    rows projected on the top two right singular vectors of their union (no centering).

    Computed from the eigendecomposition of the smaller Gram matrix (X X^T when rows are fewer than
    columns, else X^T X), in float64: the projection X V_2 equals U_2 S_2, and only two components
    are needed, so this is several times faster than a full SVD at report sizes."""
    joint = np.vstack([image, text]).astype(np.float64)
    if normalize:
        joint = l2_normalize(joint)
    n, d = joint.shape
    if n <= d:
        vals, vecs = np.linalg.eigh(joint @ joint.T)
        vals, vecs = vals[::-1], vecs[:, ::-1]
        coords = vecs[:, :2] * np.sqrt(np.maximum(vals[:2], 0.0))
    else:
        vals, vecs = np.linalg.eigh(joint.T @ joint)
        vals, vecs = vals[::-1], vecs[:, ::-1]
        coords = joint @ vecs[:, :2]
    vals = np.maximum(vals, 0.0)
    # Singular vectors are defined up to sign: make the mean projection non-negative so that the same
    # data always gives the same picture.
    coords = coords * np.where(coords.mean(axis=0) < 0, -1.0, 1.0)
    return coords[: len(image)], coords[len(image):], vals[:2] / np.sum(vals)


def _perplexity(n: int) -> float:
    return float(max(2.0, min(30.0, (n - 1) / 3.0)))


def _tsne(x: np.ndarray, seed: int):
    import openTSNE

    n = len(x)
    return openTSNE.TSNE(n_components=2, perplexity=_perplexity(n), metric="cosine", random_state=seed, n_jobs=1,
                         neighbors="exact" if n <= 2000 else "auto", negative_gradient_method="auto",
                         verbose=False).fit(x)


def _place(image: np.ndarray, image_map: np.ndarray, text: np.ndarray, seed: int) -> np.ndarray:
    """Text rows placed into the (fixed) t-SNE map of the image rows: the map is rebuilt from its
    coordinates and the image rows' affinities, so a cached image map serves every language."""
    import openTSNE

    affinities = openTSNE.affinity.PerplexityBasedNN(image, perplexity=_perplexity(len(image)), metric="cosine",
                                                     method="exact" if len(image) <= 2000 else "auto",
                                                     random_state=seed, n_jobs=1)
    fitted = openTSNE.TSNEEmbedding(image_map, affinities, random_state=seed, n_jobs=1)
    return np.asarray(fitted.transform(text, perplexity=min(5.0, _perplexity(len(image)))))


def tsne_maps(image: np.ndarray, text: np.ndarray, seed: int, cache: ArrayCache) -> dict[str, np.ndarray]:
    """``joint_image``, ``joint_text`` (one t-SNE of both modalities) and ``oos_image``, ``oos_text``
    (fitted on the image rows, text rows placed into it), from ``cache`` when unchanged; the image
    map is cached on its own, so the languages of a model share it."""
    if len(image) < 4 or len(text) < 1:
        raise ValueError(f"t-SNE needs at least 4 image rows and 1 text row, got {len(image)} and {len(text)}")
    image = l2_normalize(np.asarray(image, dtype=np.float32)).astype(np.float32)
    text = l2_normalize(np.asarray(text, dtype=np.float32)).astype(np.float32)
    image_map = cache.get_or_compute("tsne-image", data_key(image, seed=seed, version=TSNE_VERSION),
                                     lambda: {"xy": np.asarray(_tsne(image, seed))})["xy"]

    def compute() -> dict[str, np.ndarray]:
        joint = np.asarray(_tsne(np.vstack([image, text]), seed))
        # Raw captions all sit on the text side of the gap, so their nearest images would be the same
        # few: move them by the whole gap vector first (GapShift with lambda 2 on the text side: the
        # text mean lands on the image mean), then place them.
        shifted = GapShift(2.0, renormalize=True).fit(image, text).transform(text, "text")
        return {"joint_image": joint[: len(image)], "joint_text": joint[len(image):],
                "oos_text": _place(image, image_map, shifted.astype(np.float32), seed)}

    out = cache.get_or_compute("tsne", data_key(image, text, seed=seed, version=TSNE_VERSION), compute)
    return {**out, "oos_image": image_map}


_WORD = re.compile(r"\w+", re.UNICODE)


def cluster_labels(captions: list[str], clusters: np.ndarray, top: int = 3) -> dict[int, str]:
    """The ``top`` most distinctive words of each cluster's captions, by class-based TF-IDF: count in
    the cluster times log(clusters / clusters using the word), ties by word. A word found in every
    cluster scores 0 and is left out (unless the cluster has no other word), so no stop-word list is
    needed in any language."""
    counts: dict[int, Counter] = {}
    for caption, c in zip(captions, clusters, strict=True):
        counts.setdefault(int(c), Counter()).update(w.lower() for w in _WORD.findall(caption))
    df = Counter(w for cnt in counts.values() for w in cnt)
    k = len(counts)
    labels = {}
    for c, cnt in counts.items():
        score = {w: cnt[w] * np.log(k / df[w]) for w in cnt}
        ranked = sorted(cnt, key=lambda w: (-score[w], -cnt[w], w))
        distinctive = [w for w in ranked if score[w] > 0]
        labels[c] = " ".join((distinctive or ranked)[:top])
    return labels


def cluster_order(image: np.ndarray, text: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, cluster id per pair in that order) of paired rows ``image[i]``/``text[i]``: average
    linkage on cosine distances of the concatenated normalized rows; clusters are subtrees, so each is
    contiguous in the dendrogram's leaf order."""
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage

    feats = np.hstack([l2_normalize(image), l2_normalize(text)]).astype(np.float64)
    if len(feats) < 3:
        return np.arange(len(feats)), np.ones(len(feats), dtype=np.int64)
    tree = linkage(feats, method="average", metric="cosine")
    order = leaves_list(tree)
    ids = fcluster(tree, t=max(1, n_clusters), criterion="maxclust")[order]
    return order, ids.astype(np.int64)


def contiguous_groups(ids: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, id) of each run of equal ids."""
    groups, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[start]:
            groups.append((start, i, int(ids[start])))
            start = i
    return groups


def similarity_blocks(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """The Amumo similarity matrix of n pairs: [[I I^T, I T^T], [T I^T, T T^T]] of normalized rows."""
    joint = l2_normalize(np.vstack([image, text]).astype(np.float64))
    return joint @ joint.T
