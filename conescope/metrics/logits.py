"""Logit geometries: how a pair of embeddings becomes a score.

CLIP scores a pair by the cosine of its two embeddings times a learned scale (Radford et al. 2021,
section 2.3). Chou & Alam 2024 ("Embedding Geometries of CLIP", section 3) also train and evaluate
with the raw dot product and with the negative squared Euclidean distance of unnormalized rows; the
quality metrics take any of the three through ``geometry``.

The raw-row dot and distance are conescope's own option after Chou & Alam, not a reproduction of
Tyshchuk et al.: their code L2-normalized every embedding when loading it, so its ``dot`` and ``dist``
(1 - ||a - b||^2 / 2) scored unit rows, where both equal the cosine (docs/fidelity.md); its one
non-cosine score, the dot product of PCA projections, is the ``pca_<k>_tsvd`` variant's own scoring.
"""

from __future__ import annotations

import numpy as np

from conescope.metrics.isotropy import l2_normalize

GEOMETRIES = ("cosine", "dot", "neg_sq_euclidean")


def check_geometry(geometry: str) -> None:
    """Raise ValueError naming an unknown geometry and the known ones."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown logit geometry {geometry!r}; expected one of {GEOMETRIES}")


def prepare(x: np.ndarray, geometry: str, dtype: type = np.float64) -> np.ndarray:
    """Rows as the geometry uses them: L2-normalized for cosine, raw otherwise, in ``dtype``.

    Normalizing once per set (and not per pair) is what lets the block-wise metrics share one matrix
    product between cosine and dot.
    """
    check_geometry(geometry)
    if geometry == "cosine":
        return l2_normalize(x).astype(dtype, copy=False)
    return np.asarray(x, dtype=dtype)


def similarity_prepared(a, b, geometry: str):
    """s(a_i, b_j) for rows already passed through :func:`prepare` (no further normalization).

    Written with operations that numpy arrays and torch tensors share, so the torch-based metrics
    use the same code; leading batch dimensions broadcast like ``matmul`` ((g, m, d) x (g, k, d) ->
    (g, m, k)).
    """
    dots = a @ b.swapaxes(-1, -2)
    if geometry != "neg_sq_euclidean":
        return dots
    # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 <a, b>; the expansion can dip below 0 by rounding when
    # a_i ~ b_j, so it is clipped at 0 as sklearn's euclidean_distances does.
    sq = (a * a).sum(-1)[..., :, None] + (b * b).sum(-1)[..., None, :] - 2.0 * dots
    return -sq.clip(min=0.0)


def logits(a: np.ndarray, b: np.ndarray, geometry: str = "cosine", scale: float = 1.0,
           bias: float = 0.0) -> np.ndarray:
    """logits[i, j] = scale * s(a_i, b_j) + bias, an (n_a, n_b) float64 matrix.

    s is one of (Chou & Alam 2024, section 3):
    - ``cosine``: <a_i, b_j> / (||a_i|| ||b_j||) (CLIP, Radford et al. 2021);
    - ``dot``: <a_i, b_j> on the raw rows;
    - ``neg_sq_euclidean``: -||a_i - b_j||^2 on the raw rows (for unit rows this is 2 cos - 2, so it
      ranks like cosine and only the effective scale and offset differ).

    ``scale`` is the multiplier itself (CLIP's exp(logit_scale), e.g. 100), not its logarithm.
    The full matrix is materialized: callers with large sets pass row blocks of ``a``.
    """
    s = similarity_prepared(prepare(a, geometry), prepare(b, geometry), geometry)
    return scale * s + bias
