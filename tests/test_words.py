"""Wolfe & Caliskan's word-level benchmarks: the bundled files and their readers, the word vector of each
model kind, the correlations' BCa interval, and a replay of their scoring (``word_evaluations.py``,
``valnorms.py``) transcribed in plain numpy/scipy against ``word_spearman`` and ``valnorm``."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist

from conescope import families
from conescope.ingest.common import IngestError
from conescope.ingest.sts import read_sts_tsv
from conescope.ingest.words import PLEASANT, UNPLEASANT, read_valence_lexicon, read_word_pairs
from conescope.metrics import bootstrap, layers
from conescope.profile import MetricSettings, ProfileError, parse_profile
from tests.conftest import TINY_PROFILE

BUNDLED = Path(__file__).resolve().parent.parent / "conescope" / "bundled" / "wolfe-caliskan"
WORD_FILES = {"rg65.csv": ("semicolon", 65, 48), "wordsim353.csv": ("semicolon", 353, 437),
              "simlex999.csv": ("semicolon", 999, 1028), "SimVerb-3500.txt": ("simverb", 3500, 827)}
SETTINGS = MetricSettings(bootstrap=200)


# --- the bundled files --------------------------------------------------------------------------------

def test_bundled_files_are_the_ones_their_provenance_names():
    text = (BUNDLED / "PROVENANCE.md").read_text()
    pinned = dict(re.findall(r"^\| (\S+) \| ([0-9a-f]{64}) \|$", text, flags=re.M))
    assert set(pinned) == {p.name for p in BUNDLED.iterdir() if p.name != "PROVENANCE.md"}
    for name, digest in pinned.items():
        assert hashlib.sha256((BUNDLED / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("name", list(WORD_FILES))
def test_word_pair_files_read_whole(name):
    fmt, n_pairs, n_words = WORD_FILES[name]
    r = read_word_pairs("wp", BUNDLED / name, fmt)
    pairs = r.tables["word_pairs"].to_pydict()
    texts = r.manifest.texts.to_pydict()
    assert (len(pairs["pair_id"]), len(texts["text_id"]), r.rejects) == (n_pairs, n_words, [])
    assert len(set(texts["text"])) == n_words and not r.has_images  # one text per distinct word
    word = dict(zip(texts["text_id"], texts["text"], strict=True))
    first = [line for line in (BUNDLED / name).read_text().splitlines() if line.strip()][0]
    fields = first.split(";" if fmt == "semicolon" else "\t")
    score_at = 2 if fmt == "semicolon" else 3
    assert (word[pairs["text_id_a"][0]], word[pairs["text_id_b"][0]], pairs["score"][0]) == (
        fields[0], fields[1], float(fields[score_at]))


def test_lexicon_reads_every_word_and_the_attribute_words():
    r = read_valence_lexicon("bz", BUNDLED / "Bellezza_Lexicon.csv")
    table = r.tables["lexicon"].to_pydict()
    roles = table["role"]
    assert (roles.count("lexicon"), roles.count("pleasant"), roles.count("unpleasant")) == (399, 25, 25)
    assert r.manifest.texts.num_rows == 401 and r.rejects == []  # 48 attribute words are lexicon words too
    word = dict(zip(r.manifest.texts.column("text_id").to_pylist(), r.manifest.texts.column("text").to_pylist(),
                    strict=True))
    first = next((word[t], s) for t, ro, s in zip(table["text_id"], roles, table["score"], strict=True)
                 if ro == "lexicon")
    assert first == ("abuse", 1.53)  # combined_pleasantness of the file's first row
    assert {word[t] for t, ro in zip(table["text_id"], roles, strict=True) if ro == "pleasant"} == set(PLEASANT)
    assert all(s is None for s, ro in zip(table["score"], roles, strict=True) if ro != "lexicon")


def test_headerless_sts_test_file_reads_every_pair():
    r = read_sts_tsv("stsb", BUNDLED / "sts-test.csv", fmt="headerless")
    pairs = r.tables["pairs"].to_pydict()
    assert (len(pairs["pair_id"]), r.rejects, set(pairs["split"])) == (1379, [], {"test"})
    texts = dict(zip(r.manifest.texts.column("text_id").to_pylist(), r.manifest.texts.column("text").to_pylist(),
                     strict=True))
    assert (texts[pairs["text_id_a"][0]], texts[pairs["text_id_b"][0]], pairs["score"][0]) == (
        "A girl is styling her hair.", "A girl is brushing her hair.", 2.5)
    assert r.info["format"] == "sts-tsv-headerless"


def test_the_documented_download_entries_pin_the_bundled_files():
    """docs/datasets-and-models.md's example entries parse as a profile and fetch exactly the bundled
    copies (same file name and sha256)."""
    import yaml

    page = (BUNDLED.parents[2] / "docs" / "datasets-and-models.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", page, flags=re.S) if "kind: word_pairs" in b]
    raw = copy.deepcopy(TINY_PROFILE)
    raw["datasets"].update(yaml.safe_load(block)["datasets"])
    profile = parse_profile(raw, "doc.yaml")
    pinned = dict(re.findall(r"^\| (\S+) \| ([0-9a-f]{64}) \|$", (BUNDLED / "PROVENANCE.md").read_text(), flags=re.M))
    sources = [s for spec in profile.datasets.values() if spec.is_source for s in spec.download]
    assert len(sources) == 4
    for source in sources:
        assert source.url.endswith("/data/" + source.filename) and source.sha256 == pinned[source.filename]


# --- readers: rejects, errors, profile keys -------------------------------------------------------------

def test_word_pair_rejects_and_errors(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("cat;dog;7.5\ncat;car;x\n;tree;1\n\ncar;dog;2\n")
    r = read_word_pairs("w", path)
    assert r.tables["word_pairs"].num_rows == 2 and r.seen == 4
    assert [(x.sample_id, x.reason) for x in r.rejects] == [("w-2", "line 2: score 'x' is not a number"),
                                                            ("w-3", "line 3: empty word")]
    assert r.manifest.texts.column("text").to_pylist() == ["cat", "dog", "car"]
    path.write_text("cat;dog;7.5\ncat;dog\n")
    with pytest.raises(IngestError, match=r"w.csv: line 2: 2 fields, a semicolon row has 3"):
        read_word_pairs("w", path)
    tsv = tmp_path / "sv.txt"
    tsv.write_text("take\tremove\tV\t6.81\tSYNONYMS\nwalk\ttrail\tV\n")
    with pytest.raises(IngestError, match=r"sv.txt: line 2: 3 fields, a simverb row has 4"):
        read_word_pairs("sv", tsv, "simverb")


def test_lexicon_rejects_and_errors(tmp_path):
    path = tmp_path / "lex.csv"
    path.write_text("word,valence\nsun,4.5\nrain,?\n,3\nmud,1.5\n")
    r = read_valence_lexicon("lx", path, score_column="valence", pleasant=("sun", "joy"), unpleasant=("mud", "pain"))
    table = r.tables["lexicon"].to_pydict()
    assert list(zip(table["role"], table["score"], strict=True)) == [
        ("lexicon", 4.5), ("lexicon", 1.5), ("pleasant", None), ("pleasant", None), ("unpleasant", None),
        ("unpleasant", None)]
    assert r.manifest.texts.column("text").to_pylist() == ["sun", "mud", "joy", "pain"]
    assert [x.reason for x in r.rejects] == ["line 3: valence '?' is not a number", "line 4: empty word"]
    with pytest.raises(IngestError, match=r"lex.csv: line 1: header lacks combined_pleasantness"):
        read_valence_lexicon("lx", path)


def test_headerless_sts_needs_seven_fields(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text("g\tf\t2012\t1\t4.0\tA man.\tA person.\tsrc\tsrc\ng\tf\t2012\t2\tbad\tx\ty\n"
                    "g\tf\t2012\t3\t1.0\tA cat.\n")
    with pytest.raises(IngestError, match=r"sts.csv: line 3: 6 fields, a row has at least 7"):
        read_sts_tsv("s", path, fmt="headerless")
    path.write_text("g\tf\t2012\t1\t4.0\tA man.\tA person.\tsrc\tsrc\ng\tf\t2012\t2\tbad\tx\ty\n")
    r = read_sts_tsv("s", path, fmt="headerless")
    assert r.tables["pairs"].column("score").to_pylist() == [4.0] and len(r.rejects) == 1


@pytest.mark.parametrize("entry, key, problem", [
    ({"kind": "word_pairs"}, "datasets.real.file", "missing"),
    ({"kind": "word_pairs", "file": "x", "format": "tsv"}, "datasets.real.format", "not one of"),
    ({"kind": "valence_lexicon", "pleasant": ["joy"]}, "datasets.real.pleasant", "two distinct"),
    ({"kind": "sts", "format": "csv"}, "datasets.real.format", "not one of"),
])
def test_bad_keys_are_named(entry, key, problem):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["datasets"]["real"] = entry
    with pytest.raises(ProfileError) as info:
        parse_profile(raw, "p.yaml")
    assert f"p.yaml: {key}:" in str(info.value) and problem in str(info.value)


def test_word_vector_is_a_model_key_with_each_kind_s_default():
    raw = copy.deepcopy(TINY_PROFILE)
    raw["models"]["st"] = {"kind": "sentence_transformers", "model": "some/model"}
    raw["models"]["st-last"] = {"kind": "sentence_transformers", "model": "some/model", "word_vector": "last_subword"}
    raw["models"]["clip-pooled"] = {**raw["models"]["tiny.random"], "word_vector": "pooled"}
    p = parse_profile(raw, "p.yaml")
    assert {name: spec.words_as() for name, spec in p.models.items()} == {
        "tiny.random": "last_subword", "tiny.random-nobias": "last_subword", "st": "pooled",
        "st-last": "last_subword", "clip-pooled": "pooled"}
    raw["models"]["st"]["word_vector"] = "cls"
    with pytest.raises(ProfileError, match=r"models.st.word_vector"):
        parse_profile(raw, "p.yaml")


# --- the word vector of each model kind -------------------------------------------------------------------

def _layers(loaded, texts, words):
    from conescope import engine

    out = [(rows, emb, lay) for rows, emb, lay in engine.embed_texts(loaded, texts, engine.EngineSettings(batch_size=3),
                                                                    with_layers=True, words=words)]
    return np.concatenate([e for _, e, _ in out]), np.concatenate([lay for _, _, lay in out])


WORDS = ["cat", "tiger", "unhappiness", "run", "photosynthesis"]


def test_open_clip_word_vector_is_the_state_before_the_end_token():
    """With last_subword each layer state is the one at the position before the end token of the word
    fed alone (HF's hidden_states[l][0, -2] on the unpadded input, as Wolfe & Caliskan read it); the
    output embedding is the tower's own whatever the word vector."""
    import torch

    from conescope.model_kinds.open_clip import capture_text_layers, load_model

    tiny = load_model("conescope-tiny", None, seed=0, zero_bias=False, device="cpu")
    emb_last, last = _layers(tiny, WORDS, "last_subword")
    emb_pooled, pooled = _layers(tiny, WORDS, "pooled")
    emb_sentence, sentence = _layers(tiny, WORDS, None)
    np.testing.assert_allclose(pooled, sentence, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(emb_last, emb_sentence, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb_pooled, emb_sentence, rtol=1e-5, atol=1e-6)
    for k, word in enumerate(WORDS):
        tokens = tiny.tokenizer([word])
        end = int(tokens[0].argmax())  # the end token (the highest id); padding follows it
        # open_clip needs the full context: the positions after the end token get other tokens, which a
        # causal tower's states up to the end cannot see (their code feeds the word unpadded)
        tokens[0, end + 1:] = torch.randint(1, 49000, (tokens.shape[1] - end - 1,),
                                            generator=torch.Generator().manual_seed(k))
        with torch.inference_mode(), capture_text_layers(tiny.model) as captured:
            tiny.model.encode_text(tokens)
            states = [s[0].float().numpy() for s in captured]
        for layer, state in enumerate(states):
            np.testing.assert_allclose(last[k, layer], state[end - 1], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(pooled[k, layer], state[end], rtol=1e-4, atol=1e-5)
    assert not np.allclose(last, pooled)


def test_sentence_transformers_word_vector_pooled_or_last_subword(tmp_path):
    """pooled: the mean over the word's tokens as the model pools (the last layer's is then the output
    embedding); last_subword: the state before [SEP], each computed here on the word fed alone."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from conescope.model_kinds.sentence_transformers import load_text_model
    from tests.test_real_sources import tiny_sentence_model

    folder = tiny_sentence_model(tmp_path)
    loaded = load_text_model(str(folder), None, "cpu")
    emb, pooled = _layers(loaded, WORDS, "pooled")
    emb_last, last = _layers(loaded, WORDS, "last_subword")
    np.testing.assert_allclose(emb_last, emb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[:, -1], emb, rtol=1e-4, atol=1e-5)
    bert_dir = tmp_path / "bert"
    tokenizer, bert = AutoTokenizer.from_pretrained(bert_dir), AutoModel.from_pretrained(bert_dir).eval()
    for k, word in enumerate(WORDS):
        with torch.inference_mode():
            hidden = bert(**tokenizer([word], return_tensors="pt"), output_hidden_states=True).hidden_states
        for layer, state in enumerate(hidden):
            np.testing.assert_allclose(last[k, layer], state[0, -2].numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(pooled[k, layer], state[0].mean(0).numpy(), rtol=1e-4, atol=1e-5)


# --- the correlations' interval ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["spearman", "pearson"])
def test_correlation_interval_is_scipy_s_bca(kind):
    """The same interval as scipy.stats.bootstrap(method="BCa") with the same draws: its jackknife by
    brute force, ours in closed form (ties included: scores on a coarse grid)."""
    rng = np.random.default_rng(4)
    x = np.round(rng.normal(size=80), 1)
    y = np.round(0.5 * x + rng.normal(size=80), 0)
    ours = bootstrap.correlation_ci(x, y, kind, seed=7, n_boot=500)
    statistic = bootstrap._spearman if kind == "spearman" else bootstrap._correlation
    ref = stats.bootstrap((x, y), lambda a, b, axis=-1: statistic(a, b, axis), paired=True, vectorized=True,
                          n_resamples=500, method="BCa", rng=np.random.default_rng(7))
    expected = (stats.spearmanr(x, y) if kind == "spearman" else stats.pearsonr(x, y)).statistic
    assert ours.value == pytest.approx(expected, abs=1e-12) and ours.method == "bca"
    assert (ours.low, ours.high) == pytest.approx(tuple(ref.confidence_interval), abs=1e-12)


@pytest.mark.parametrize("kind", ["spearman", "pearson"])
def test_leave_one_out_correlations_in_closed_form(kind):
    rng = np.random.default_rng(5)
    x, y = np.round(rng.normal(size=40), 1), np.round(rng.normal(size=40), 1)
    fast = (bootstrap._loo_spearman if kind == "spearman" else bootstrap._loo_pearson)(x, y)
    corr = stats.spearmanr if kind == "spearman" else stats.pearsonr
    slow = [corr(np.delete(x, i), np.delete(y, i)).statistic for i in range(len(x))]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_correlation_interval_edges():
    assert bootstrap.correlation_ci(np.arange(3.0), np.arange(3.0), "spearman", 0)[1:] == (None, None)
    assert bootstrap.correlation_ci(np.ones(10), np.arange(10.0), "pearson", 0)[1:] == (None, None)
    with pytest.raises(ValueError, match="kind"):
        bootstrap.correlation_ci(np.arange(5.0), np.arange(5.0), "kendall", 0)


# --- replay of Wolfe & Caliskan's scoring ------------------------------------------------------------------

def _their_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.sqrt(np.dot(a, a)) * np.sqrt(np.dot(b, b))))


def _their_word_scores(left: list[list[np.ndarray]], right: list[list[np.ndarray]], relatedness: list[float],
                       n_layers: int) -> list[float]:
    """word_evaluations.py: per layer, the cosine of each pair's vectors, then Spearman against the scores."""
    return [stats.spearmanr([_their_cosine(left[i][layer], right[i][layer]) for i in range(len(left))],
                            relatedness)[0] for layer in range(n_layers)]


def _their_valnorms(lexicon: list[list[np.ndarray]], pleasant: list[list[np.ndarray]],
                    unpleasant: list[list[np.ndarray]], valence: list[float], n_layers: int) -> list[float]:
    """valnorms.py: per layer, cosines of each lexicon word with the attribute words (1 - cdist cosine),
    the mean difference over numpy's std of both rows, then Pearson against the norms."""
    out = []
    for layer in range(n_layers):
        lex = [w[layer] for w in lexicon]
        pl = 1 - cdist(lex, [w[layer] for w in pleasant], metric="cosine")
        un = 1 - cdist(lex, [w[layer] for w in unpleasant], metric="cosine")
        effect = (pl.mean(axis=1) - un.mean(axis=1)) / np.std(np.concatenate((pl, un), axis=1), axis=1)
        out.append(stats.pearsonr(effect, valence)[0])
    return out


def _word_states(words: list[str], n_layers: int, width: int = 16) -> dict[str, list[np.ndarray]]:
    """One vector per word and layer, sharing a per-layer direction (a cone) so cosines are not all ~0."""
    rng = np.random.default_rng(11)
    common = rng.normal(size=(n_layers, width))
    return {w: [common[layer] * 0.8 + rng.normal(size=width) for layer in range(n_layers)] for w in words}


def _as_stored(texts: dict[str, list], vectors: dict[str, list[np.ndarray]], n_layers: int):
    """(text ids, output rows, per-layer states) as the embedding step stores them, the output being the
    last layer's state (what matters is that every row is the word's own vector)."""
    ids = np.asarray(texts["text_id"], dtype=object)
    states = [np.stack([vectors[w][layer] for w in texts["text"]]).astype(np.float32) for layer in range(n_layers)]
    return ids, states[-1], states


def test_word_spearman_replays_their_word_evaluations():
    r = read_word_pairs("rg65", BUNDLED / "rg65.csv")
    texts, pairs = r.manifest.texts.to_pydict(), r.tables["word_pairs"].to_pydict()
    n_layers = 4
    vectors = _word_states(texts["text"], n_layers)
    word = dict(zip(texts["text_id"], texts["text"], strict=True))
    ids, emb, states = _as_stored(texts, vectors, n_layers)
    rows = families.pair_similarity_rows("word_spearman", "rg65", ids, emb, states, pairs, SETTINGS)
    # their code reads the file itself and feeds each word of each pair alone (float32 states)
    lines = [line.split(";") for line in (BUNDLED / "rg65.csv").read_text().splitlines() if line.strip()]
    left = [[v.astype(np.float32) for v in vectors[w1]] for w1, _, _ in lines]
    right = [[v.astype(np.float32) for v in vectors[w2]] for _, w2, _ in lines]
    expected = _their_word_scores(left, right, [float(s) for _, _, s in lines], n_layers)
    assert [r_["layer"] for r_ in rows] == [None, *range(n_layers)]
    assert [r_["value"] for r_ in rows[1:]] == pytest.approx(expected, abs=1e-6)
    assert rows[0]["value"] == pytest.approx(expected[-1], abs=1e-6)
    assert all(r_["n"] == 65 and r_["ci_low"] < r_["value"] < r_["ci_high"] for r_ in rows)
    assert {word[t] for t in pairs["text_id_a"]} == {w1 for w1, _, _ in lines}


def test_valnorm_replays_their_valnorms():
    r = read_valence_lexicon("bz", BUNDLED / "Bellezza_Lexicon.csv")
    texts, lexicon = r.manifest.texts.to_pydict(), r.tables["lexicon"].to_pydict()
    n_layers = 3
    vectors = _word_states(texts["text"], n_layers)
    # a valence direction per layer, so that ValNorm is far from 0 and a wrong sign or scale would show
    rng = np.random.default_rng(12)
    norms = {w: s for w, s in zip([texts["text"][texts["text_id"].index(t)] for t in lexicon["text_id"]],
                                  lexicon["score"], strict=True) if s is not None}
    direction = rng.normal(size=(n_layers, 16))
    good = {w: (3.0 if w in PLEASANT else -3.0 if w in UNPLEASANT else norms[w] - 3.0) for w in texts["text"]}
    vectors = {w: [v + 0.4 * good[w] * direction[layer] for layer, v in enumerate(vs)] for w, vs in vectors.items()}
    ids, emb, states = _as_stored(texts, vectors, n_layers)
    rows = families.valnorm_rows("bz", ids, emb, states, lexicon, SETTINGS)
    csv_rows = [line.split(",") for line in (BUNDLED / "Bellezza_Lexicon.csv").read_text().splitlines()[1:]]
    as32 = {w: [v.astype(np.float32) for v in vs] for w, vs in vectors.items()}
    expected = _their_valnorms([as32[row[0]] for row in csv_rows], [as32[w] for w in sorted(set(PLEASANT))],
                               [as32[w] for w in sorted(set(UNPLEASANT))], [float(row[3]) for row in csv_rows],
                               n_layers)
    assert [r_["layer"] for r_ in rows] == [None, *range(n_layers)]
    assert [r_["value"] for r_ in rows[1:]] == pytest.approx(expected, abs=1e-6)
    assert min(expected) > 0.5
    assert all(r_["n"] == 399 and r_["ci_low"] < r_["value"] < r_["ci_high"] for r_ in rows)
    params = json.loads(rows[0]["params"])
    assert (params["pleasant"], params["unpleasant"], params["ci"]) == (25, 25, "bca")


def test_sc_weat_deviation_changes_no_valnorm():
    """numpy.std (ddof 0, their code) or n - 1 (Caliskan et al. 2017): every effect size scales alike."""
    rng = np.random.default_rng(3)
    w, a, b = rng.normal(size=(30, 8)), rng.normal(size=(6, 8)), rng.normal(size=(5, 8))
    s0, s1 = layers.sc_weat(w, a, b), layers.sc_weat(w, a, b, ddof=1)
    np.testing.assert_allclose(s1 / s0, np.sqrt(10 / 11))
    valence = rng.normal(size=30)
    assert stats.pearsonr(s1, valence)[0] == pytest.approx(layers.valnorm(w, a, b, valence))
