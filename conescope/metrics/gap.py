"""The modality gap (Liang et al. 2022, section 4.1): the difference of the modality centroids of
L2-normalized embeddings."""

from __future__ import annotations

import numpy as np

from conescope.metrics.isotropy import l2_normalize


def gap_vector(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Delta = mean_i u(image_i) - mean_j u(text_j), u the L2 normalization."""
    return l2_normalize(image).mean(axis=0) - l2_normalize(text).mean(axis=0)


def gap_norm(image: np.ndarray, text: np.ndarray) -> float:
    """||Delta||: 0 when the centroids coincide, at most 2."""
    return float(np.linalg.norm(gap_vector(image, text)))
