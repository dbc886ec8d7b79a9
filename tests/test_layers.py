"""Text-tower layer states and the layer metrics."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from conescope.embedding import embed_texts, text_layer_states
from conescope.metrics.isotropy import mean_cosine
from conescope.metrics.layers import layer_self_similarity, sts_spearman
from conescope.model_kinds.open_clip import load_model

TEXTS = ["a red circle", "a blue square in the centre", "ein grüner Stern", "une étoile", "digit seven", "x"]


@pytest.fixture(scope="module")
def tiny():
    return load_model("conescope-tiny", None, seed=0, zero_bias=False, device="cpu")


def test_layer_states_shape_and_final_layer_reproduces_the_embedding(tiny):
    states = text_layer_states(tiny, TEXTS, batch_size=4)
    assert len(states) == 3  # input + 2 blocks of the tiny config
    assert all(s.shape == (len(TEXTS), 64) for s in states)
    # The tower's own embedding is ln_final + projection of the last pooled state.
    import torch

    model = tiny.model
    with torch.no_grad():
        last = model.ln_final(torch.from_numpy(states[-1])) @ model.text_projection
    embedded = np.vstack([e for _, e in embed_texts(tiny, TEXTS, batch_size=4)])
    np.testing.assert_allclose(last.numpy(), embedded, rtol=1e-4, atol=1e-5)


def test_layer_states_do_not_depend_on_batching(tiny):
    a = text_layer_states(tiny, TEXTS, batch_size=6)
    b = text_layer_states(tiny, TEXTS, batch_size=2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_self_similarity_is_mean_cosine_per_layer():
    rng = np.random.default_rng(0)
    states = [rng.normal(size=(10, 4)), rng.normal(size=(10, 4)) + 3]
    assert layer_self_similarity(states) == [mean_cosine(states[0]), mean_cosine(states[1])]


def test_sts_spearman_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    scores = rng.uniform(0, 5, size=30)
    cos = np.array([x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b, strict=True)])
    assert sts_spearman(a, b, scores) == pytest.approx(spearmanr(cos, scores).statistic)
    assert sts_spearman(a, b, 3 * cos + 1) == pytest.approx(1.0)  # any increasing function of cos ranks alike


def test_sts_pairs_must_align():
    with pytest.raises(ValueError, match="misaligned"):
        sts_spearman(np.ones((3, 2)), np.ones((2, 2)), np.ones(3))
