"""Reports: the pieces against hand values and libraries, every report kind rendered for the tiny
profile, the t-SNE cache, and each page opened in headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from conescope.profile import ReportSettings
from conescope.reports.cache import ArrayCache, data_key
from conescope.reports.page import Items, render_page
from conescope.reports.paper import ModelInfo, enrich, table_lines
from conescope.reports.partition import gap_shift_points, render_partition_report
from conescope.reports.projections import (
    cluster_labels,
    cluster_order,
    contiguous_groups,
    similarity_blocks,
    svd_projection,
    tsne_maps,
)
from conescope.reports.published import PUBLISHED, Published
from conescope.reports.report_data import DatasetData
from conescope.reports.svg import Series, heatmap, scatter
from storage.embedding_sets import load_image_set, load_text_set
from storage.report_links import report_url, reports_url
from tests.browser import chromium_browser

TEST_OUTPUT = Path(__file__).resolve().parent.parent / "test-output"


# --- pieces ----------------------------------------------------------------------------------------

def test_svd_projection_matches_scikit_learn_truncated_svd():
    from sklearn.decomposition import TruncatedSVD

    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(30, 8)) + 2, rng.normal(size=(20, 8)) - 1
    a, b, share = svd_projection(image, text, normalize=False)
    ref = TruncatedSVD(2, algorithm="arpack").fit(np.vstack([image, text]))
    got = np.vstack([a, b])
    want = ref.transform(np.vstack([image, text]))
    assert np.allclose(np.abs(got), np.abs(want), atol=1e-8)  # equal up to the sign of each component
    assert np.all(got.mean(axis=0) >= 0)  # our sign convention
    s = np.linalg.svd(np.vstack([image, text]), compute_uv=False)
    assert share == pytest.approx(s[:2] ** 2 / np.sum(s**2))


def test_similarity_blocks_are_the_cosines_of_the_stacked_rows():
    rng = np.random.default_rng(1)
    image, text = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    sim = similarity_blocks(image, text)
    from sklearn.metrics.pairwise import cosine_similarity

    assert np.allclose(sim, cosine_similarity(np.vstack([image, text])))
    assert np.allclose(sim[:5, 5:], sim[5:, :5].T)


def test_cluster_order_keeps_each_cluster_contiguous_and_finds_planted_groups():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 16)) * 5
    truth = np.repeat([0, 1, 2], 6)
    rng.shuffle(truth)
    image = centres[truth] + rng.normal(size=(18, 16)) * 0.1
    text = centres[truth] + rng.normal(size=(18, 16)) * 0.1
    order, ids = cluster_order(image, text, 3)
    assert sorted(order) == list(range(18))
    groups = contiguous_groups(ids)
    assert len(groups) == 3 and len({g[2] for g in groups}) == 3  # each cluster is one run
    for start, end, _ in groups:
        assert len(set(truth[order[start:end]])) == 1


def test_cluster_labels_pick_distinctive_words_without_stop_words():
    captions = ["a red circle", "a red square", "a blue star", "a blue star"]
    labels = cluster_labels(captions, np.array([1, 1, 2, 2]), top=2)
    assert labels[1].split()[0] == "red" and "a" not in labels[1].split()
    assert labels[2] in ("blue star", "star blue") and "a" not in labels[2].split()


def test_gap_shift_points_parse_the_sweep_rows():
    rows = [{"family": "clip_loss", "metric": "loss", "transform": f"gap_shift_{lam:g}", "eval_set": "s:test",
             "value": v} for lam, v in ((1.0, 0.3), (0.0, 0.5), (0.5, 0.4))]
    rows.append({"family": "clip_loss", "metric": "loss", "transform": "gap_shift_0.5_raw", "eval_set": "s:test",
                 "value": 0.9})
    rows.append({"family": "clip_loss", "metric": "loss", "transform": "centering", "eval_set": "s:test", "value": 2})
    # the transductive rows (the eval set's own gap) are a series of their own, beside the inductive one
    rows += [{"family": "clip_loss", "metric": "loss", "transform": t, "eval_set": "s:test", "value": v}
             for t, v in (("gap_shift_1_eval", 0.2), ("gap_shift_0_eval", 0.5), ("gap_shift_1_raw_eval", 0.7))]
    points = gap_shift_points(rows)
    assert points[("clip_loss/loss", "s:test", True, False)] == [(0.0, 0.5), (0.5, 0.4), (1.0, 0.3)]
    assert points[("clip_loss/loss", "s:test", False, False)] == [(0.5, 0.9)]
    assert points[("clip_loss/loss", "s:test", True, True)] == [(0.0, 0.5), (1.0, 0.2)]
    assert points[("clip_loss/loss", "s:test", False, True)] == [(1.0, 0.7)]
    assert len(points) == 4


def test_published_difference_for_values_and_ranges():
    assert Published(2, "x", 1.5).difference(1.75) == pytest.approx(0.25)
    ranged = Published(5, "x", interval=(0.99, 1.0))
    assert ranged.difference(0.995) == 0.0 and ranged.difference(0.95) == pytest.approx(-0.04)
    with pytest.raises(ValueError, match="no published value"):
        Published(1, "x").difference(0.5)
    # Every published entry names its table and the setting it applies to.
    assert all(1 <= p.table <= 7 and p.match.get("arch") == "ViT-B-32" for p in PUBLISHED)


def test_paper_table_compares_only_rows_of_the_papers_setting():
    rows = [{"family": "clip_loss", "metric": "loss", "model": m, "dataset": "coco", "lang": "en",
             "transform": "centering", "fit_set": "coco:train", "eval_set": "coco:test", "modality": "pair",
             "value": v, "params": '{"mean_over": "batches", "batch_size": 64, "logit_scale": 100, "split": "authors"}'}
            for m, v in (("clip", 1.70), ("random", 2.0))]
    models = {"clip": ModelInfo("ViT-B-32", "openai", False), "random": ModelInfo("ViT-B-32", None, False)}
    columns, lines = table_lines(2, enrich(rows, models, {"coco": "coco"}), "en")
    assert columns[:2] == ["model", "dataset"]
    by_model = {ln.cells[0]: ln for ln in lines}
    assert by_model["clip"].published.value == 1.6201
    assert by_model["clip"].difference == pytest.approx(1.70 - 1.6201)
    assert by_model["random"].published is None and by_model["random"].difference is None
    # Published rows no measured row matched are still listed, with an empty measured cell.
    missing = [ln for ln in lines if ln.measured is None]
    assert {ln.published.label for ln in missing} == {"raw", "Procrustes", "LSTSQ", "whitening-128"}


def test_array_cache_hits_on_unchanged_data_and_recomputes_on_change(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3.0)}

    a = np.ones((4, 2), dtype=np.float32)
    cache = ArrayCache(tmp_path)
    assert cache.get_or_compute("m", data_key(a, seed=0), compute)["x"].tolist() == [0, 1, 2]
    assert cache.get_or_compute("m", data_key(a, seed=0), compute)["x"].tolist() == [0, 1, 2]
    assert len(calls) == 1 and cache.hits == 1 and cache.misses == 1
    b = a.copy()
    b[0, 0] = 2
    assert data_key(b, seed=0) != data_key(a, seed=0) != data_key(a, seed=1)
    cache.get_or_compute("m", data_key(b, seed=0), compute)
    assert len(calls) == 2
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


def test_tsne_out_of_sample_places_texts_among_their_images():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 32)) * 3
    labels = np.repeat(np.arange(4), 10)
    image = centres[labels] + rng.normal(size=(40, 32)) * 0.3
    text = centres[labels] + rng.normal(size=(40, 32)) * 0.3 + 2.0  # a shared offset: the "gap"
    maps = tsne_maps(image, text, seed=0, cache=ArrayCache(None))
    assert maps["joint_image"].shape == (40, 2) and maps["oos_text"].shape == (40, 2)
    # Each placed text lies nearest to an image of its own group.
    d = np.linalg.norm(maps["oos_text"][:, None] - maps["oos_image"][None], axis=2)
    assert np.mean(labels[d.argmin(axis=1)] == labels) > 0.9


def test_interactive_figures_carry_hover_items():
    items = Items()
    idx = [items.add("a red circle", "shapes/s1"), items.add("a blue star", None)]
    svg = scatter([Series("image", np.array([[0.0, 0.0], [1.0, 1.0]]), idx)], "t", lines=[
        (np.zeros((1, 2)), np.ones((1, 2)))])
    assert svg.count('data-i="') == 2 and "<path class=\"cs-pairs\"" in svg
    hm = heatmap(np.eye(2), idx, "g1", "t", [(0, "image"), (1, "text")], [(0, 1, "red")])
    payload = json.loads(re.search(r'id="g1">(.*?)</script>', hm).group(1))
    assert payload["items"] == idx and payload["v"] == [1000, 0, 0, 1000]
    hm2 = heatmap(np.eye(2)[::-1][:, ::-1], idx[::-1], "g2", "t", [(0, "image")], reorder_of=("g1", np.array([1, 0])))
    assert json.loads(re.search(r'id="g2">(.*?)</script>', hm2).group(1)) == {"ref": "g1", "order": [1, 0]}
    page = render_page("t", svg + hm, items, {"shapes/s1": "data:image/png;base64,AA==", "unused": "x"})
    thumbs = json.loads(re.search(r'id="cs-thumbs">(.*?)</script>', page).group(1))
    assert thumbs == {"shapes/s1": "data:image/png;base64,AA=="}  # only thumbnails some point uses
    # Captions cannot close the JSON script element.
    assert "</script>" not in render_page("t", "", Items(), {}).split("cs-items")[1].split("</script>")[0]


# --- every report of the tiny profile --------------------------------------------------------------

REPORT_KINDS = {
    "partition": lambda root, p: root.report_dir("tiny.random", "en"),
    "multilingual": lambda root, p: root.multilingual_report_dir("tiny.random"),
    "comparison": lambda root, p: root.summary_report_dir("comparison"),
    "paper": lambda root, p: root.summary_report_dir("paper"),
}


def test_every_report_is_rendered_and_linked(materialized):
    profile, root, _, instance = materialized
    for model in profile.models:
        for lang in profile.languages:
            page = (root.report_dir(model, lang) / "index.html").read_text()
            for ds in profile.datasets:
                assert f"{ds}: SVD projection, raw" in page and f"{ds}: SVD projection, centering" in page
                assert f"{ds}: SVD projection, whitening_" in page and f"{ds}: joint t-SNE" in page
                assert f"{ds}: reordered by clustering" in page and f"{ds}: shifting along the gap" in page
            assert "text tower: self-similarity per layer" in page and "Metrics after fitted transforms" in page
        ml = (root.multilingual_report_dir(model) / "index.html").read_text()
        assert "shapes: parallel captions, joint t-SNE" in ml and "distance_ratio_cos" in ml
    comparison = (root.summary_report_dir("comparison") / "index.html").read_text()
    assert all(m in comparison for m in profile.models) and "../tiny.random/fr/index.html" in comparison
    paper = (root.summary_report_dir("paper") / "index.html").read_text()
    assert all(f"Table {n}." in paper for n in range(1, 8))
    for key in ("partition_report", "multilingual_report", "comparison_report", "paper_report"):
        event = instance.get_latest_materialization_event(dg.AssetKey(["reports", key]))
        meta = event.asset_materialization.metadata
        assert meta["report"].value == report_url(root, Path(meta["path"].value)), key
        assert meta["report"].value.startswith(f"{reports_url()}/"), key
        assert "open the report" in meta["preview"].value, key
    for key in ("partition_report", "multilingual_report", "comparison_report", "paper_report"):
        meta = instance.get_latest_materialization_event(dg.AssetKey(["reports", key])).asset_materialization.metadata
        assert "![preview](data:image/png;base64," in meta["preview"].value, key


def test_second_render_of_an_unchanged_partition_recomputes_nothing(materialized, tmp_path):
    profile, root, _, _ = materialized
    sections = [DatasetData(load_image_set(root, "shapes", "tiny.random"),
                            load_text_set(root, "shapes", "tiny.random", "en"))]
    settings = ReportSettings(max_points=50, seed=0)
    cache = ArrayCache(tmp_path / "cache")
    first = render_partition_report("tiny.random", "en", sections, {}, settings, cache)
    # the page, and per dataset the image map and the joint/placed maps
    assert cache.misses == 1 + 2 * len(sections) and cache.hits == 0
    again = ArrayCache(tmp_path / "cache")
    second = render_partition_report("tiny.random", "en", sections, {}, settings, again)
    assert again.misses == 0 and again.hits == 1  # the whole page comes from the cache
    assert second.html == first.html and second.preview_png == first.preview_png
    # New warehouse rows (same embeddings): the page is rendered again, the t-SNE maps are reused.
    sections[0].rows = [{"family": "isotropy", "modality": "image", "transform": "none", "metric": "i1",
                         "value": 0.5, "ci_low": None, "ci_high": None, "n": 3}]
    changed = ArrayCache(tmp_path / "cache")
    third = render_partition_report("tiny.random", "en", sections, {}, settings, changed)
    assert changed.misses == 1 and changed.hits == 2 * len(sections)
    assert third.html != first.html
    # Another language of the model reuses the image map.
    fr = [DatasetData(d.image, load_text_set(root, d.name, "tiny.random", "fr")) for d in sections]
    other = ArrayCache(tmp_path / "cache")
    render_partition_report("tiny.random", "fr", fr, {}, settings, other)
    assert other.hits == len(sections) and other.misses == 1 + len(sections)
    # The pipeline's cache under the data root holds pages and maps.
    assert any(root.report_cache.glob("tsne-image-*.npz")) and any(root.report_cache.glob("page-*.npz"))


# --- in a browser ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    yield from chromium_browser("browser test")


@pytest.mark.parametrize("kind", list(REPORT_KINDS))
def test_report_opens_in_chromium_without_errors(browser, materialized, kind):
    profile, root, _, _ = materialized
    index = REPORT_KINDS[kind](root, profile) / "index.html"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(f"network request {r.url}")
            if not r.url.startswith(("file:", "data:")) else None)
    page.goto(index.as_uri(), wait_until="load")
    assert errors == [], errors
    figures = page.locator("svg.cs-fig")
    expected = {"partition": 18, "multilingual": 2, "comparison": 3, "paper": 0}[kind]
    assert figures.count() >= expected
    for k in range(figures.count()):  # every figure is laid out with a real size
        box = figures.nth(k).bounding_box()
        assert box and box["width"] > 50 and box["height"] > 50, (kind, k)
    if kind == "paper":
        assert page.locator("table.paper").count() == 8
    else:  # hovering a point shows its caption (and, for images of the dataset, a thumbnail)
        point = page.locator("[data-i]").first
        point.hover(force=True)
        tip = page.locator("#cs-tip")
        assert tip.is_visible() and len(tip.inner_text()) > 3
    if kind == "partition":
        page.locator("image[data-grid]").first.hover(force=True, position={"x": 5, "y": 5})
        assert "cos = " in page.locator("#cs-tip").inner_text()
        page.locator("image[data-grid]").nth(1).hover(force=True, position={"x": 5, "y": 5})  # the reordered copy
        assert "cos = " in page.locator("#cs-tip").inner_text()
        assert page.locator("#cs-tip img").count() >= 1
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0
    TEST_OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(TEST_OUTPUT / f"report-{kind}.png"), full_page=True)
    assert errors == [], errors
    page.close()
