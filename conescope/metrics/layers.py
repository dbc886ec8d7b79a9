"""Layer-wise geometry of the text tower and semantic similarity.

- Self-similarity of a layer (Wolfe & Caliskan 2022, "Contrastive Visual Semantic Pretraining
  Magnifies the Semantics of Natural Language Representations", section 4.1; after Ethayarajh 2019):
  the mean cosine similarity between the pooled states of different texts at that layer.
- STS Spearman (Wolfe & Caliskan, section 4.3; Chou & Alam 2024): Spearman's rank correlation
  between the cosine similarity of each sentence pair's embeddings and its human similarity score.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from conescope.metrics.isotropy import l2_normalize, mean_cosine


def layer_self_similarity(states: list[np.ndarray]) -> list[float]:
    """Mean pairwise cosine (i != j) of the rows of each layer's pooled states, layer by layer."""
    return [mean_cosine(layer) for layer in states]


def sts_spearman(a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> float:
    """rho_Spearman(cos(a_i, b_i), score_i) over sentence pairs i."""
    if not (len(a) == len(b) == len(scores)):
        raise ValueError(f"STS pairs misaligned: {len(a)} first sentences, {len(b)} second, {len(scores)} scores")
    cos = np.sum(l2_normalize(a) * l2_normalize(b), axis=1)
    return float(spearmanr(cos, scores).statistic)
