"""Text-tower layer states and the layer metrics."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from conescope.embedding import embed_texts, text_layer_states
from conescope.families import pair_similarity_rows
from conescope.metrics.isotropy import mean_cosine
from conescope.metrics.layers import layer_self_similarity, pair_cosines
from conescope.model_kinds.open_clip import load_model
from conescope.profile import MetricSettings

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


def test_sts_spearman_matches_scipy_with_its_interval():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    scores = rng.uniform(0, 5, size=30)
    cos = np.array([x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b, strict=True)])
    ids = np.asarray([f"t{i}" for i in range(60)], dtype=object)
    pairs = {"text_id_a": list(ids[:30]), "text_id_b": list(ids[30:]), "score": list(scores)}
    states = [np.vstack([a, b]), np.vstack([a, b]) * 2.0]
    rows = pair_similarity_rows("sts_spearman", "stsb", ids, np.vstack([a, b]), states, pairs,
                                MetricSettings(bootstrap=200))
    assert [r["layer"] for r in rows] == [None, 0, 1]
    expected = spearmanr(cos, scores).statistic
    assert all(r["metric"] == "sts_spearman" and r["n"] == 30 for r in rows)
    assert [r["value"] for r in rows] == pytest.approx([expected] * 3)  # scaling a state changes no cosine
    assert all(r["ci_low"] < r["value"] < r["ci_high"] for r in rows)
    # any increasing function of the cosine ranks alike
    pairs["score"] = list(3 * cos + 1)
    assert pair_similarity_rows("sts_spearman", "stsb", ids, np.vstack([a, b]), None, pairs,
                                MetricSettings(bootstrap=200))[0]["value"] == pytest.approx(1.0)


def test_sts_pairs_must_align():
    with pytest.raises(ValueError, match="misaligned"):
        pair_cosines(np.ones((3, 2)), np.ones((2, 2)))
