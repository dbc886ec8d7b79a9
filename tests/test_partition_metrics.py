"""The seams of the thin assets: which rows each metric family computes from an embedding source
(conescope.partition_metrics), the pairing rules in conescope.sets, partition key strings, the file
lock, the reject writes, and the warehouse comparison script."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml

from conescope import checks
from conescope import partition_metrics as pm
from conescope.file_lock import try_lock
from conescope.metric_families import METRIC_TABLES, MODEL_LANG, PAIRED, TRANSFORM_TABLES
from conescope.metrics.layers import layer_self_similarity
from conescope.profile import load_profile
from conescope.protocols import protocol_datasets
from conescope.sets import ImageSet, TextSet, positive_pairs, prompt_pairs, text_labels
from pipelines.partitions import model_and_lang, model_lang_key
from tests.conftest import TINY_PROFILE

D = 8


def _image(ds: str, n: int, rng) -> ImageSet:
    return ImageSet(ds, np.asarray([f"{ds}{i}" for i in range(n)], dtype=object), np.arange(n) % 3,
                    np.asarray(["train", "test"] * (n // 2), dtype=object), rng.normal(size=(n, D)).astype(np.float32))


def _captions(ds: str, lang: str, n: int, rng) -> TextSet:
    ids = [f"{ds}{i}" for i in range(n)]
    return TextSet(ds, lang, np.asarray([f"t{i}" for i in range(n)], dtype=object), np.asarray(ids, dtype=object),
                   np.full(n, -1), [f"caption {i}" for i in range(n)], rng.normal(size=(n, D)).astype(np.float32))


def _prompts(ds: str, lang: str, rng) -> TextSet:
    # two prompts of class 0, one of 1 and 2: the first of each class is the row the pairing uses
    labels = np.asarray([0, 1, 0, 2])
    return TextSet(ds, lang, np.asarray(["p0", "p1", "p2", "p3"], dtype=object), np.asarray([None] * 4, dtype=object),
                   labels, ["a 0", "a 1", "another 0", "a 2"], rng.normal(size=(4, D)).astype(np.float32))


class FakeSource:
    """An in-memory EmbeddingSource that records what is read."""

    def __init__(self, layers: bool = True):
        rng = np.random.default_rng(0)
        self.images = {"shapes": _image("shapes", 12, rng), "digits": _image("digits", 12, rng)}
        self.texts = {(ds, lang): (_captions(ds, lang, 12, rng) if ds == "shapes" else _prompts(ds, lang, rng))
                      for ds in ("shapes", "digits") for lang in ("en", "fr")}
        self.states = {key: [rng.normal(size=(len(t.texts), 5)) for _ in range(3)] for key, t in self.texts.items()}
        self.layers, self.read = layers, []
        self.word_tables: dict[tuple[str, str], dict[str, list]] = {}  # (dataset, manifest table) -> columns

    def image_set(self, dataset):
        self.read.append(("image", dataset))
        return self.images[dataset]

    def text_set(self, dataset, lang):
        self.read.append(("text", dataset, lang))
        return self.texts[(dataset, lang)]

    def logit_scale(self, dataset):
        return 12.5, None

    def text_layers(self, dataset, lang, text_ids):
        return self.states[(dataset, lang)] if self.layers else None

    def sts_pairs(self, dataset):
        return None

    def word_pairs(self, dataset):
        return self.word_tables.get((dataset, "word_pairs"))

    def valence_lexicon(self, dataset):
        return self.word_tables.get((dataset, "lexicon"))

    def sample_labels(self, dataset):
        return {sid: int(lab) for sid, lab in zip(self.images[dataset].sample_ids, self.images[dataset].labels,
                                                   strict=True)}


@pytest.fixture
def profile(tmp_path):
    raw = copy.deepcopy(TINY_PROFILE)
    raw["models"]["words"] = {"kind": "sentence_transformers", "model": "some/model"}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_profile(str(path))


def _by(family: str):
    return next(f for f in pm.FAMILIES if f.name == family)


def test_every_declared_asset_computes_rows_its_declaration_allows(profile):
    """The rows function of each declared asset gives, on an image model, the rows it owns (its
    declaration's filter) holding exactly the metrics the contract allows, every required one included."""
    assert len({f.name for f in pm.FAMILIES}) == len(pm.FAMILIES)
    assert set(TRANSFORM_TABLES) < set(METRIC_TABLES)
    source = FakeSource()
    rng = np.random.default_rng(3)
    for lang in ("en", "fr"):  # a prompt per class for five classes: top5 is measured
        source.texts[("digits", lang)] = TextSet(
            "digits", lang, np.asarray([f"p{c}" for c in range(5)], dtype=object), np.asarray([None] * 5, dtype=object),
            np.arange(5), [f"a {c}" for c in range(5)], rng.normal(size=(5, D)).astype(np.float32))
    source.images["digits"].labels[:] = np.arange(12) % 5
    for f in pm.FAMILIES:
        lang = "en" if f.scope in (MODEL_LANG, PAIRED) else None
        rows = f.rows(profile, "tiny.random", source, lang)
        assert rows, f.name
        owned = f.asset.owned_rows("tiny.random", lang)
        full = [{"fit_set": None, "lang": lang, **r, "model": "tiny.random", "transform": "none"} for r in rows]
        assert all(r[k] == v for r in full for k, v in owned.equal.items()), f.name
        assert all(r[k] is None for r in full for k in owned.null), f.name
        finding = checks.expected_metrics(f.table, full)
        assert finding.passed, (f.name, finding.description)


def test_a_text_only_model_gets_text_rows_only(profile):
    source = FakeSource()
    for family in ("modality_gap", "clip_loss", "zero_shot", "retrieval"):
        assert _by(family).rows(profile, "words", source, "en") == []
    rows = _by("isotropy").rows(profile, "words", source, "en")
    assert {(r["dataset"], r["modality"]) for r in rows} == {("shapes", "text"), ("digits", "text")}
    assert not any(read[0] == "image" for read in source.read)
    # its text labels come from the manifest: every caption gets its sample's label, prompts their class
    clusters = _by("clusters").rows(profile, "words", source, "en")
    assert {r["dataset"]: r["n"] for r in clusters} == {"shapes": 12, "digits": 4}


def test_an_image_model_gets_joint_and_pair_rows(profile):
    source = FakeSource()
    rows = _by("isotropy").rows(profile, "tiny.random", source, "fr")
    assert {(r["dataset"], r["modality"]) for r in rows} == {(ds, m) for ds in ("shapes", "digits")
                                                             for m in ("text", "joint")}
    loss = _by("clip_loss").rows(profile, "tiny.random", source, "en")
    assert {r["dataset"] for r in loss} == {"shapes"}  # the captioned dataset only
    assert all(json.loads(r["params"])["logit_scale"] == 12.5 for r in loss)  # the source's, not a default
    assert {r["metric"] for r in _by("zero_shot").rows(profile, "tiny.random", source, "en")} >= {"top1"}


def test_layer_rows_come_from_the_stored_states_only(profile):
    source = FakeSource()
    rows = _by("layers").rows(profile, "tiny.random", source, "en")
    shapes = [r["value"] for r in rows if r["dataset"] == "shapes"]
    assert shapes == pytest.approx(layer_self_similarity(source.states[("shapes", "en")]))
    assert [r["layer"] for r in rows if r["dataset"] == "shapes"] == [0, 1, 2]
    assert _by("layers").rows(profile, "tiny.random", FakeSource(layers=False), "en") == []


def test_word_benchmark_rows_come_with_the_word_tables_only(profile):
    """A dataset with word pairs gets word_spearman and one with a lexicon valnorm, for the output
    embedding (layer null) and every stored layer, each with its BCa interval; other datasets neither."""
    source = FakeSource()
    ids = list(source.texts[("shapes", "en")].text_ids)
    source.word_tables[("shapes", "word_pairs")] = {
        "pair_id": [f"p{k}" for k in range(6)], "text_id_a": ids[:6], "text_id_b": ids[6:12],
        "score": [0.5, 3.0, 1.0, 2.5, 4.0, 0.0]}
    source.word_tables[("digits", "lexicon")] = {
        "text_id": ["p0", "p1", "p2", "p3", "p0", "p3", "p1"],
        "role": ["lexicon", "lexicon", "lexicon", "lexicon", "pleasant", "unpleasant", "unpleasant"],
        "score": [4.0, 1.0, 3.0, 2.0, None, None, None]}
    rows = _by("layers").rows(profile, "tiny.random", source, "en")
    words = [r for r in rows if r["metric"] == "word_spearman"]
    lexicon = [r for r in rows if r["metric"] == "valnorm"]
    assert [(r["dataset"], r["layer"], r["n"]) for r in words] == [("shapes", layer, 6) for layer in (None, 0, 1, 2)]
    assert [(r["dataset"], r["layer"], r["n"]) for r in lexicon] == [("digits", layer, 4)
                                                                      for layer in (None, 0, 1, 2)]
    assert all(json.loads(r["params"])["ci"] == "bca" and r["ci_low"] <= r["value"] <= r["ci_high"]
               for r in words + lexicon)


def test_text_labels_follow_the_sample_or_the_class():
    rng = np.random.default_rng(1)
    text = _captions("d", "en", 3, rng)
    text = TextSet("d", "en", np.asarray(["a", "b", "c", "p"], dtype=object),
                   np.asarray(["d0", "d1", "gone", None], dtype=object), np.asarray([-1, -1, -1, 7]),
                   ["x", "y", "z", "a 7"], rng.normal(size=(4, D)))
    assert text_labels(text, {"d0": 4, "d1": 5}).tolist() == [4, 5, -1, 7]


def test_prompt_pairs_use_the_first_prompt_of_each_class():
    rng = np.random.default_rng(2)
    image = _image("d", 6, rng)  # labels 0 1 2 0 1 2
    text = _prompts("d", "en", rng)  # class 0 at rows 0 and 2, class 1 at 1, class 2 at 3
    img_rows, txt_rows = prompt_pairs(image, text, np.asarray([0, 1, 2, 3]))
    assert img_rows.tolist() == [0, 1, 2, 3] and txt_rows.tolist() == [0, 1, 3, 0]
    img_rows, txt_rows, kind = positive_pairs(image, text)
    assert kind == "class prompt" and txt_rows.tolist() == [0, 1, 3, 0, 1, 3]
    captions = _captions("d", "en", 6, rng)
    img_rows, txt_rows, kind = positive_pairs(image, captions)
    assert kind == "caption" and img_rows.tolist() == txt_rows.tolist() == list(range(6))


def test_protocol_datasets_are_every_named_one(profile):
    assert protocol_datasets(profile.transforms) == {"shapes", "digits"}


def test_model_lang_keys_round_trip():
    key = model_lang_key("vit-b-32.random", "en")
    assert key == "en|vit-b-32.random"  # the key strings of the former lang x model multi-partition
    assert model_and_lang(key) == ("vit-b-32.random", "en")


def test_the_file_lock_is_exclusive(tmp_path):
    import os

    fd = try_lock(tmp_path / "x.lock")
    assert fd is not None and try_lock(tmp_path / "x.lock") is None
    os.close(fd)
    again = try_lock(tmp_path / "x.lock")
    assert again is not None
    os.close(again)
    assert try_lock(tmp_path / "no" / "such" / "dir.lock") is None


def _warehouse(home, value: float):
    from storage.warehouse import Warehouse, metric_rows

    rows = [{"dataset": "d", "model": "m", "lang": "en", "modality": "text", "metric": "i1", "value": value, "n": 3}]
    Warehouse(home / "warehouse.duckdb").replace_rows("metrics.isotropy", metric_rows(rows, "metrics.isotropy"),
                                                      {"model": "m", "lang": "en"})


def test_compare_warehouse_reports_a_changed_value(tmp_path, capsys):
    from bench.compare_warehouse import compare, main

    for name, value in (("a", 0.5), ("b", 0.5 + 1e-12), ("c", 0.5 + 1e-6)):
        _warehouse(tmp_path / name, value)
    assert compare(tmp_path / "a", tmp_path / "b") == []
    problems = compare(tmp_path / "a", tmp_path / "c")
    assert len(problems) == 1 and "value: 0.5 vs 0.500001" in problems[0]
    assert main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0 and "equal" in capsys.readouterr().out
