"""Layer-wise geometry of the text tower and semantic similarity.

- Self-similarity of a layer (Wolfe & Caliskan 2022, "Contrastive Visual Semantic Pretraining
  Magnifies the Semantics of Natural Language Representations", section 4.1; after Ethayarajh 2019):
  the mean cosine similarity between the pooled states of different texts at that layer.
- STS Spearman (Wolfe & Caliskan, section 4.3; Chou & Alam 2024): Spearman's rank correlation
  between the cosine similarity of each sentence pair's embeddings and its human similarity score.
- Word-similarity Spearman (Wolfe & Caliskan, section 4.2, RG65, WordSim-353, SimLex-999, SimVerb-3500):
  the same correlation over word pairs, each word embedded alone.
- ValNorm (Toney-Wails & Caliskan 2021, "ValNorm Quantifies Semantics to Reveal Consistent Valence
  Biases Across Languages and Over Centuries"; Wolfe & Caliskan, section 4.2): for each lexicon word w the
  single-category WEAT effect size against the pleasant words A and the unpleasant words B,
  s(w) = (mean_{a in A} cos(w, a) - mean_{b in B} cos(w, b)) / std_{x in A u B} cos(w, x), then Pearson's
  r of s(w) against the human pleasantness of w (Bellezza et al. 1986).

Both Spearman correlations are ``conescope.metrics.bootstrap.correlation_ci`` (the value and its BCa
interval over pairs) of ``pair_cosines`` against the scores, in ``conescope.families.pair_similarity_rows``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr

from conescope.metrics.isotropy import l2_normalize, mean_cosine


def layer_self_similarity(states: list[np.ndarray]) -> list[float]:
    """Mean pairwise cosine (i != j) of the rows of each layer's pooled states, layer by layer."""
    return [mean_cosine(layer) for layer in states]


def pair_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_i, b_i) for every row i, in float64."""
    if a.shape != b.shape:
        raise ValueError(f"pairs misaligned: {a.shape} first rows, {b.shape} second")
    return np.sum(l2_normalize(np.asarray(a, dtype=np.float64)) * l2_normalize(np.asarray(b, dtype=np.float64)),
                  axis=1)


def sc_weat(words: np.ndarray, pleasant: np.ndarray, unpleasant: np.ndarray, ddof: int = 0) -> np.ndarray:
    """The single-category WEAT effect size of each row of ``words`` against the attribute rows:
    (mean cos(w, A) - mean cos(w, B)) / std of cos(w, x) over x in A u B. ``ddof=0`` as Wolfe & Caliskan's
    ``valnorms.py`` (``numpy.std``); Caliskan et al. 2017 divide by n - 1. The two differ by the constant
    factor sqrt((|A| + |B| - 1) / (|A| + |B|)) for every word, so ValNorm's Pearson r is the same."""
    w = l2_normalize(np.asarray(words, dtype=np.float64))
    cos_a = w @ l2_normalize(np.asarray(pleasant, dtype=np.float64)).T
    cos_b = w @ l2_normalize(np.asarray(unpleasant, dtype=np.float64)).T
    both = np.concatenate([cos_a, cos_b], axis=1)
    return (cos_a.mean(axis=1) - cos_b.mean(axis=1)) / both.std(axis=1, ddof=ddof)


def valnorm(words: np.ndarray, pleasant: np.ndarray, unpleasant: np.ndarray, valence: np.ndarray) -> float:
    """Pearson's r between the SC-WEAT effect size of each lexicon word and its human valence."""
    if len(words) != len(valence):
        raise ValueError(f"lexicon misaligned: {len(words)} words, {len(valence)} valence scores")
    return float(pearsonr(sc_weat(words, pleasant, unpleasant), np.asarray(valence, dtype=np.float64)).statistic)
