"""Cross-modal retrieval recall@k in both directions, the standard image-text retrieval benchmark of
CLIP (Radford et al. 2021, section 3.1.7, table 13; Karpathy & Fei-Fei 2015 protocol on COCO/Flickr).

text_image[j] is the image caption j describes; an image may have several captions.
- image -> text (i2t): an image is a hit at k when ANY of its captions ranks among the k best texts;
  images without a caption have no i2t query and are left out of the i2t mean (they still compete as
  distractors for t2i).
- text -> image (t2i): a caption is a hit at k when its image ranks among the k best images.

Ranks are counted, not sorted: the rank of the true item is the number of competing items scoring at
least as high (for i2t the competitors are the other images' captions, compared with the best true
caption), so one pass over a row block gives every k at once, ties count against the model, and no
n_query x n_candidate index matrix is formed. Queries are processed in row blocks of ``block`` rows,
so memory is O(block x n_candidate) whatever n. Cosine similarities are float32 products of rows
normalized in float64 (as CLIP's own evaluation): half the memory and time of float64; pairs whose
cosines differ by less than about 1e-7 may be ordered either way. The unnormalized geometries (dot,
negative squared distance) stay in float64, since a cone's common offset would cancel digits in float32.
"""

from __future__ import annotations

import numpy as np

from conescope.metrics.logits import prepare, similarity_prepared


def _check(image: np.ndarray, text: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    if image.ndim != 2 or text.ndim != 2 or image.shape[1] != text.shape[1]:
        raise ValueError(f"image {image.shape} and text {text.shape} must be (n, d) arrays of one dimension")
    owners = np.asarray(text_image)
    if owners.shape != (text.shape[0],) or not np.issubdtype(owners.dtype, np.integer):
        raise ValueError(f"text_image must hold one integer image index per caption, got {owners.shape}")
    if owners.size == 0:
        raise ValueError("retrieval needs at least one caption")
    if (owners.min() < 0 or owners.max() >= image.shape[0]):
        raise ValueError(f"text_image indices must lie in [0, {image.shape[0]})")
    return owners.astype(np.int64)


def _t2i_ranks(img: np.ndarray, txt: np.ndarray, owners: np.ndarray, geometry: str, block: int) -> np.ndarray:
    """rank_j = #{i != owners[j] : s(text_j, image_i) >= s(text_j, image_{owners[j]})}."""
    ranks = np.empty(txt.shape[0], dtype=np.int64)
    for start in range(0, txt.shape[0], block):
        scores = similarity_prepared(txt[start:start + block], img, geometry)
        true = scores[np.arange(scores.shape[0]), owners[start:start + block]]
        # the true image is compared with itself (the very same entry), hence the -1
        ranks[start:start + block] = np.count_nonzero(scores >= true[:, None], axis=1) - 1
    return ranks


def _i2t_ranks(img: np.ndarray, txt: np.ndarray, owners: np.ndarray, geometry: str, block: int) -> np.ndarray:
    """rank_i = #{captions of other images scoring >= the best caption of image i}; n_text for an image
    without captions (never a hit; the caller leaves those out)."""
    ranks = np.empty(img.shape[0], dtype=np.int64)
    for start in range(0, img.shape[0], block):
        scores = similarity_prepared(img[start:start + block], txt, geometry)
        cols = np.flatnonzero((owners >= start) & (owners < start + block))
        rows = owners[cols] - start
        true = scores[rows, cols]
        best = np.full(scores.shape[0], -np.inf, dtype=scores.dtype)
        np.maximum.at(best, rows, true)
        at_least_best = np.count_nonzero(scores >= best[:, None], axis=1)
        # captions of image i itself that reach its best score are not competitors
        own = np.bincount(rows[true >= best[rows]], minlength=scores.shape[0])
        ranks[start:start + block] = at_least_best - own
    return ranks


def retrieval_ranks(image: np.ndarray, text: np.ndarray, text_image: np.ndarray, block: int = 4096,
                    geometry: str = "cosine") -> dict[str, np.ndarray]:
    """0-based ranks of the true item per query: "i2t" (one per image that has a caption, in image
    order) and "t2i" (one per caption). Recall@k is mean(rank < k)."""
    image, text = np.asarray(image), np.asarray(text)
    owners = _check(image, text, text_image)
    if block < 1:
        raise ValueError(f"block must be a positive number of rows, got {block}")
    dtype = np.float32 if geometry == "cosine" else np.float64
    img, txt = prepare(image, geometry, dtype), prepare(text, geometry, dtype)
    captioned = np.bincount(owners, minlength=image.shape[0]) > 0
    return {"i2t": _i2t_ranks(img, txt, owners, geometry, block)[captioned],
            "t2i": _t2i_ranks(img, txt, owners, geometry, block)}


def retrieval_hits(image: np.ndarray, text: np.ndarray, text_image: np.ndarray, ks: tuple[int, ...] = (1, 5, 10),
                   block: int = 4096, geometry: str = "cosine") -> dict[str, np.ndarray]:
    """Per-query boolean hits for bootstrap CIs, keys ``i2t_r{k}`` (one per captioned image) and
    ``t2i_r{k}`` (one per caption)."""
    ranks = retrieval_ranks(image, text, text_image, block, geometry)
    return {f"{direction}_r{k}": ranks[direction] < k for direction in ("i2t", "t2i") for k in ks}


def retrieval_recall(image: np.ndarray, text: np.ndarray, text_image: np.ndarray, ks: tuple[int, ...] = (1, 5, 10),
                     block: int = 4096, geometry: str = "cosine") -> dict[str, float]:
    """Recall@k = mean over queries of [rank < k], keys i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10
    (one per k in ``ks``). Cosine similarity by default; ``geometry`` takes the other logit geometries
    of :mod:`conescope.metrics.logits`."""
    hits = retrieval_hits(image, text, text_image, ks, block, geometry)
    return {key: float(value.mean()) for key, value in hits.items()}
