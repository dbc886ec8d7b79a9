"""Protocols: which rows are fitted on and which evaluated; fitting never sees evaluation rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conescope import protocol_eval as E
from conescope import protocols as P
from conescope.profile import MetricSettings, TransformSettings
from conescope.sets import ImageSet, TextSet
from conescope.transforms import KINDS


def _captioned(n: int = 60, d: int = 16, seed: int = 0) -> tuple[ImageSet, TextSet]:
    rng = np.random.default_rng(seed)
    ids = np.asarray([f"s-{i}" for i in range(n)], dtype=object)
    labels = rng.integers(0, 4, n)
    splits = np.where(np.arange(n) % 5 == 0, "test", "train").astype(object)
    image = (rng.standard_normal((n, d)) + 2).astype(np.float32)
    # two captions per image, the first one is the fit pair
    text_ids = np.asarray([f"t-{i}-{j}" for i in range(n) for j in range(2)], dtype=object)
    sample_ids = np.repeat(ids, 2)
    text = (np.repeat(image, 2, axis=0) + rng.standard_normal((2 * n, d)) - 3).astype(np.float32)
    return (ImageSet("cap", ids, labels, splits, image),
            TextSet("cap", "en", text_ids, sample_ids, np.full(2 * n, -1), [str(t) for t in text_ids], text))


def _classes(n: int = 80, d: int = 16, k: int = 6, seed: int = 1) -> tuple[ImageSet, TextSet]:
    rng = np.random.default_rng(seed)
    ids = np.asarray([f"c-{i}" for i in range(n)], dtype=object)
    labels = np.arange(n) % k
    splits = np.where(rng.random(n) < 0.3, "test", "train").astype(object)
    prompts = rng.standard_normal((k, d)).astype(np.float32)
    image = (prompts[labels] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    return (ImageSet("cls", ids, labels, splits, image),
            TextSet("cls", "en", np.asarray([f"p-{c}" for c in range(k)], dtype=object),
                    np.asarray([None] * k, dtype=object), np.arange(k), [f"class {c}" for c in range(k)], prompts))


SETTINGS = TransformSettings(kinds=tuple(KINDS), k=(4,), gap_shift_lambdas=(0.0, 1.0), in_domain=("cap", "cls"),
                             cross_dataset=(("cap", "cls"),), class_disjoint=("cls",), class_disjoint_seed=3)


@pytest.fixture
def sets():
    return {"cap": _captioned(), "cls": _classes()}


def test_plan_names_and_sizes(sets):
    p = P.plan(SETTINGS, sets)
    assert set(p.fit_sets) == {"cap:train", "cls:train", "cls:train:known"}
    assert [(e.protocol, e.fit_set, e.name) for e in p.evals] == [
        ("in_domain", "cap:train", "cap:test"), ("in_domain", "cls:train", "cls:test"),
        ("cross_dataset", "cap:train", "cls:test"), ("class_disjoint", "cls:train:known", "cls:test:known"),
        ("class_disjoint", "cls:train:known", "cls:test:new")]
    img, txt = sets["cap"]
    fit = p.fit_sets["cap:train"]
    assert np.all(img.splits[fit.image_rows] == "train") and len(fit.image_rows) == 48
    # the first caption of each train image
    assert [txt.text_ids[r] for r in fit.text_rows[:2]] == ["t-1-0", "t-2-0"]
    ev = p.evals[0]
    assert np.all(img.splits[ev.image_rows] == "test") and len(ev.text_rows) == 2 * len(ev.image_rows)


def test_class_disjoint_splits_known_and_new_classes(sets):
    p = P.plan(SETTINGS, sets)
    img, txt = sets["cls"]
    known = P.known_classes(img, 3)
    assert len(known) == 3 and np.array_equal(known, P.known_classes(img, 3))
    fit = p.fit_sets["cls:train:known"]
    assert set(img.labels[fit.image_rows]) == set(known) and set(txt.labels[fit.text_rows]) == set(known)
    known_eval, new_eval = p.evals[3], p.evals[4]
    assert set(img.labels[known_eval.image_rows]) == set(known)
    assert not set(img.labels[new_eval.image_rows]) & set(known)
    assert np.all(img.splits[new_eval.image_rows] == "test")
    assert len(new_eval.text_rows) == 6  # zero-shot among every class


def _poisoned(sets, p: P.Plan, fit_set: str) -> dict:
    """Every row that an eval set of ``fit_set`` reads and its fit must not, replaced by NaN: the eval
    images, their captions and, class-disjoint, the prompts of the new classes."""
    out = dict(sets)
    for ev in p.evals:
        if ev.fit_set != fit_set or ev.dataset != p.fit_sets[fit_set].dataset:
            continue
        img, txt = out[ev.dataset]
        ie, te = img.emb.copy(), txt.emb.copy()
        ie[ev.image_rows] = np.nan
        te[np.intersect1d(ev.text_rows, txt.caption_rows)] = np.nan
        if ev.protocol == P.CLASS_DISJOINT:
            new = np.setdiff1d(np.unique(img.labels), ev.params["known_classes"])
            te[np.isin(txt.labels, new) & (txt.labels >= 0)] = np.nan
        out[ev.dataset] = (dataclasses.replace(img, emb=ie), dataclasses.replace(txt, emb=te))
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_fit_never_reads_evaluation_rows(sets, kind):
    p = P.plan(SETTINGS, sets)
    checked = 0
    for fit in P.fit_sets_for(kind, p):
        poisoned = _poisoned(sets, p, fit.name)
        assert np.isnan(poisoned[fit.dataset][0].emb).any()  # the poison is there
        for clean_t, t in zip(P.variants(SETTINGS, kind), P.variants(SETTINGS, kind), strict=True):
            a = clean_t.fit(*P.fit_arrays(fit, sets), fit_set=fit.name)
            b = t.fit(*P.fit_arrays(fit, poisoned), fit_set=fit.name)  # would raise on a single NaN
            assert a.provenance["data_sha256"] == b.provenance["data_sha256"]
            for attr in a._arrays:
                assert np.array_equal(getattr(a, attr), getattr(b, attr)), (a.name, fit.name, attr)
            checked += 1
    assert checked >= len(P.variants(SETTINGS, kind))


def test_poisoning_reaches_the_fit_when_a_fit_row_is_poisoned(sets):
    """The poisoning test above can fail: NaN in one fit row makes the fit refuse."""
    p = P.plan(SETTINGS, sets)
    img, txt = sets["cap"]
    emb = img.emb.copy()
    emb[p.fit_sets["cap:train"].image_rows[0]] = np.nan
    bad = {**sets, "cap": (dataclasses.replace(img, emb=emb), txt)}
    _, skipped = E.fit_all(SETTINGS, "centering", p, bad)
    assert skipped and "non-finite" in skipped[0]


def test_plan_refuses_overlapping_fit_and_eval_rows(sets):
    p = P.plan(SETTINGS, sets)
    fit = p.fit_sets["cap:train"]
    leaky = dataclasses.replace(fit, image_rows=np.append(fit.image_rows, p.evals[0].image_rows[0]),
                                text_rows=np.append(fit.text_rows, p.evals[0].text_rows[0]))
    with pytest.raises(AssertionError, match="both fitted on and evaluated"):
        P.check_disjoint(P.Plan({**p.fit_sets, "cap:train": leaky}, p.evals), sets)


def test_evaluate_all_fills_transform_fit_and_eval_sets(sets):
    p = P.plan(SETTINGS, sets)
    stored = [t for kind in ("identity", "procrustes", "gap_shift") for t in E.fit_all(SETTINGS, kind, p, sets)[0]]
    rows = E.evaluate_all(stored, p, sets, MetricSettings(bootstrap=20), {"cap": (10.0, None), "cls": (10.0, None)})
    assert set(rows) == {"isotropy", "modality_gap", "clip_loss", "zero_shot", "retrieval", "clusters"}
    loss = {(r["transform"], r["fit_set"], r["eval_set"]) for r in rows["clip_loss"] if r["metric"] == "loss"}
    assert ("procrustes", "cap:train", "cap:test") in loss and ("gap_shift_1", "cap:train", "cap:test") in loss
    top1 = {(r["transform"], r["eval_set"]) for r in rows["zero_shot"] if r["metric"] == "top1"}
    assert {("procrustes", "cls:test:known"), ("procrustes", "cls:test:new"), ("identity", "cls:test")} <= top1
    assert not any(r["transform"].startswith("gap_shift") for r in rows["isotropy"])
    # the silhouette is geometry: in-domain only, like isotropy (the cross-transform view pairs the two)
    sil = {(r["transform"], r["eval_set"], r["modality"]) for r in rows["clusters"]}
    assert ("procrustes", "cap:test", "image") in sil and not any(t.startswith("gap_shift") for t, _, _ in sil)
    assert not any(e.startswith("cls:test:") for _, e, _ in sil)
    # gap closed by lambda = 1 (renormalized) on the fit set's distribution
    gap = {r["transform"]: r["value"] for r in rows["modality_gap"] if r["metric"] == "gap_norm"
           and r["eval_set"] == "cap:test"}
    assert gap["gap_shift_1"] < 0.2 * gap["gap_shift_0"]
    # identity rows equal the metric on the raw eval rows
    from conescope.metrics.gap import gap_norm

    img, txt = sets["cap"]
    ev = p.evals[0]
    assert gap["identity"] == pytest.approx(gap_norm(img.emb[ev.image_rows], txt.emb[ev.text_rows]))


def test_a_stale_transform_is_refused(sets):
    p = P.plan(SETTINGS, sets)
    stored, _ = E.fit_all(SETTINGS, "centering", p, sets)
    img, txt = sets["cap"]
    changed = {**sets, "cap": (dataclasses.replace(img, emb=img.emb + 1), txt)}
    with pytest.raises(ValueError, match="rematerialize transforms/centering"):
        E.evaluate_all(stored, P.plan(SETTINGS, changed), changed, MetricSettings(bootstrap=20),
                       {"cap": (10.0, None), "cls": (10.0, None)})


def test_plan_skips_protocols_whose_datasets_are_absent(sets):
    """A text-only model (or a language a dataset lacks) leaves a dataset out of the partition: its
    protocols are skipped with the reason, the others still run, and an empty partition plans nothing."""
    p = P.plan(SETTINGS, {"cap": sets["cap"]})
    assert [(e.protocol, e.name) for e in p.evals] == [("in_domain", "cap:test")]
    assert len(p.skipped) == 3 and all("cls" in reason for reason in p.skipped)
    empty = P.plan(SETTINGS, {})
    assert empty.evals == [] and empty.fit_sets == {} and len(empty.skipped) == 4


def test_an_empty_partition_fits_and_evaluates_nothing():
    """A text-only model's partition has no image-text sets: nothing is fitted, no row is written."""
    p = P.plan(SETTINGS, {})
    for kind in KINDS:
        assert E.fit_all(SETTINGS, kind, p, {}) == ([], [])
    assert not any(E.evaluate_all([], p, {}, MetricSettings(bootstrap=10), {}).values())


def test_all_rows_protocol_and_cross_dataset_fit_on_every_row(sets):
    """The authors' Table 5 (each modality centred on all its rows, I1 of those rows) and their COCO fits
    (every pair) as named protocols: fit and eval sets say ``:all``; the plan's disjointness check exempts
    only the all-rows protocol."""
    settings = dataclasses.replace(SETTINGS, all_rows=("cap",), cross_dataset_fit_rows="all")
    p = P.plan(settings, sets)
    img, txt = sets["cap"]
    assert {"cap:all", "cap:train"} <= set(p.fit_sets)
    all_fit = p.fit_sets["cap:all"]
    assert len(all_fit.image_rows) == len(img.emb)  # every image with its first caption
    assert np.array_equal(txt.text_ids[all_fit.text_rows], [f"t-{i}-0" for i in range(len(img.emb))])
    by_protocol = {(e.protocol, e.fit_set, e.name) for e in p.evals}
    assert ("all_rows", "cap:all", "cap:all") in by_protocol and ("cross_dataset", "cap:all", "cls:test") in by_protocol
    assert ("in_domain", "cap:train", "cap:test") in by_protocol  # in-domain still held out
    ev = next(e for e in p.evals if e.protocol == "all_rows")
    assert len(ev.image_rows) == len(img.emb) and ev.params == {"rows": "all"}
    # the in-domain check still refuses a leak; the all-rows eval is its fit set by definition
    leaky = dataclasses.replace(p.fit_sets["cap:train"], image_rows=np.append(p.fit_sets["cap:train"].image_rows,
                                                                               p.evals[0].image_rows[0]))
    with pytest.raises(AssertionError, match="both fitted on and evaluated"):
        P.check_disjoint(P.Plan({**p.fit_sets, "cap:train": leaky}, p.evals), sets)
    stored, _ = E.fit_all(settings, "centering_per_modality", p, sets)
    rows = E.evaluate_all(stored, p, sets, MetricSettings(bootstrap=20), {"cap": (10.0, None), "cls": (10.0, None)})
    iso = [r for r in rows["isotropy"] if r["eval_set"] == "cap:all"]
    assert {r["metric"] for r in iso} >= {"i1", "i1_compat"} and all(r["fit_set"] == "cap:all" for r in iso)
    assert not any(r["metric"].startswith("separability") for r in rows["modality_gap"] if r["eval_set"] == "cap:all")


def test_transductive_gap_shift_rows_name_the_eval_set_as_fit_set(sets):
    settings = dataclasses.replace(SETTINGS, gap_shift_gap_of=("fit_set", "eval_set"))
    p = P.plan(settings, sets)
    stored, _ = E.fit_all(settings, "gap_shift", p, sets)
    rows = E.evaluate_all(stored, p, sets, MetricSettings(bootstrap=20), {"cap": (10.0, None), "cls": (10.0, None)})
    gap = {(r["transform"], r["fit_set"]): r for r in rows["modality_gap"] if r["metric"] == "gap_norm"
           and r["eval_set"] == "cap:test"}
    assert set(gap) >= {("gap_shift_1", "cap:train"), ("gap_shift_1_eval", "cap:test")}
    import json

    assert json.loads(gap[("gap_shift_1_eval", "cap:test")]["params"])["transform"]["gap_of"] == "eval_set"
    assert json.loads(gap[("gap_shift_1", "cap:train")]["params"])["transform"]["gap_of"] == "fit_set"
    # closing the evaluated set's own gap leaves less of it than the train split's gap does
    assert gap[("gap_shift_1_eval", "cap:test")]["value"] < gap[("gap_shift_1", "cap:train")]["value"]
