"""The Dagster UI in a real browser: ``conescope dev`` on a free port with its own data root (a copy
of the materialized tiny profile), the asset graph, an asset's Partitions and Checks tabs, one
partition materialized by clicking, a report materialized and opened from the link in its metadata (served
by ``conescope dev`` over http), then the server stopped with every child process. Screenshots go to
``test-output/``.

Chromium from the system (Debian: ``apt-get install -y chromium``) driven by playwright; without it
the test is skipped with the reason, or fails with ``CONESCOPE_REQUIRE_BROWSER=1``. The served
profile adds a text-only model (not materialized): an image asset shows no partition of it."""

import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.browser import chromium_browser
from tests.conftest import TEXT_ONLY_MODEL, TINY_PROFILE
from tests.devserver import DevServer

TEST_OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
ASSET = "metrics/image_isotropy"
PARTITION = "tiny.random"
TEXT_ASSET = "metrics/isotropy"  # model x lang: a flat list of lang|model keys
TEXT_ONLY = "minilm"  # in the served profile, not materialized: no image partition, text partitions only
REPORT = "reports/paper_report"
REPORT_TITLE = "paper reproduction"  # in the page's title and heading (conescope/reports/paper.py)
RUNS = """{ runsOrError(limit: 10) { ... on Runs { results { runId status tags { key value } } } } }"""


@pytest.fixture(scope="module")
def chromium():
    yield from chromium_browser("UI test")


def _click_if_shown(page, button: str, timeout_ms: int) -> None:
    """Click the button named ``button`` if it shows within ``timeout_ms``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    found = page.get_by_role("button", name=button)
    try:
        found.wait_for(state="visible", timeout=timeout_ms)
    except PlaywrightTimeout:
        return
    found.click()


def _dismiss_welcome(page) -> None:
    """A fresh instance may greet a visit with a newsletter dialog (shown a moment after the page)."""
    _click_if_shown(page, "Skip", 3000)


def _open(page, url: str, ready_text: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text(ready_text).first.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)  # let the live data settle before the screenshot
    _dismiss_welcome(page)


def _wait_for_run(server: DevServer, timeout_s: float = 420.0) -> dict:
    """The run that materializes ``PARTITION``, once it has finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = server.graphql(RUNS)["data"]["runsOrError"]["results"]
        mine = [r for r in runs if {"key": "dagster/partition", "value": PARTITION} in r["tags"]]
        if mine and mine[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return mine[0]
        time.sleep(2)
    raise TimeoutError(f"no finished run for {ASSET} [{PARTITION}] after {timeout_s} s: {runs}")


def _wait_for_new_run(server: DevServer, known: set[str], timeout_s: float = 420.0) -> dict:
    """The first run not in ``known``, once it has finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = [r for r in server.graphql(RUNS)["data"]["runsOrError"]["results"] if r["runId"] not in known]
        if new and new[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return new[0]
        time.sleep(2)
    raise TimeoutError(f"no new finished run after {timeout_s} s")


def _confirm_if_asked(page) -> None:
    """Past the upstream warning, when the UI shows it (this instance has not recorded the upstream runs)."""
    _click_if_shown(page, "Confirm", 15_000)


def _follow(page, link):
    """Click ``link``; the page it opened: a new tab (the UI opens a metadata URL so) or this one."""
    context, href = page.context, link.get_attribute("href")
    before = set(context.pages)
    link.click()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        opened = [p for p in context.pages if p not in before]
        if opened:
            opened[0].wait_for_load_state("load")
            return opened[0]
        if page.url == href:
            page.wait_for_load_state("load")
            return page
        page.wait_for_timeout(200)
    raise TimeoutError(f"clicking {href} opened nothing")


def _assert_report(page, url: str) -> None:
    """``page`` shows the paper report served at ``url``, not an error page."""
    heading = page.get_by_role("heading", level=1).first
    heading.wait_for(timeout=30_000)
    assert page.url == url
    assert REPORT_TITLE in page.title(), page.title()
    assert REPORT_TITLE in heading.inner_text()


def test_ui_graph_partitions_checks_and_one_materialization(chromium, materialized, tmp_path):
    _, root, _, _ = materialized
    data = tmp_path / "data"
    shutil.copytree(root.root, data, ignore=shutil.ignore_patterns("dagster_home", "tmp"))
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({**TINY_PROFILE, "models": {**TINY_PROFILE["models"],
                                                                  TEXT_ONLY: TEXT_ONLY_MODEL}}))
    TEST_OUTPUT.mkdir(exist_ok=True)
    # automation off: this instance has recorded none of the copied materializations, and would rebuild them
    server = DevServer(data, str(profile), tmp_path / "dev.log", env={"CONESCOPE_AUTOMATION": "off"})
    t0 = time.monotonic()
    try:
        server.wait_ready()
        started = time.monotonic() - t0
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        _open(page, f"{server.url}/asset-groups", "Global asset lineage")
        for group in ("datasets", "embeddings", "metrics", "reports", "transforms"):
            assert page.get_by_text(group, exact=True).count() >= 1, group
        page.screenshot(path=str(TEST_OUTPUT / "ui-asset-graph.png"))

        _open(page, f"{server.url}/assets/{ASSET}?view=partitions", "tiny.random-nobias")
        assert page.get_by_text(PARTITION, exact=True).count() >= 1
        assert page.get_by_text(TEXT_ONLY).count() == 0  # an image asset has no text-only model partition
        page.screenshot(path=str(TEST_OUTPUT / "ui-partitions.png"))
        _open(page, f"{server.url}/assets/{TEXT_ASSET}?view=partitions", f"en|{TEXT_ONLY}")
        assert page.get_by_text(f"fr|{PARTITION}", exact=True).count() >= 1
        page.screenshot(path=str(TEST_OUTPUT / "ui-partitions-model-lang.png"))

        _open(page, f"{server.url}/assets/{ASSET}?view=checks", "expected_metrics")
        for check in ("finite_values", "value_in_ci", "n_matches_rows"):
            assert page.get_by_text(check).count() >= 1, check
        page.screenshot(path=str(TEST_OUTPUT / "ui-checks.png"))

        # Materialize one partition: Materialize..., past the upstream warning (this instance has not
        # recorded the upstream runs, the files are there), pick the partition, launch.
        _open(page, f"{server.url}/assets/{ASSET}?view=partitions", "tiny.random-nobias")
        page.get_by_role("button", name="Materialize…").click()
        confirm = page.get_by_role("button", name="Confirm")
        confirm.wait_for(timeout=30_000)
        confirm.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Select a partition or create one").click()
        items = page.get_by_role("menuitem")
        items.first.wait_for(timeout=30_000)
        labels = [items.nth(i).inner_text().split("\n")[0] for i in range(items.count())]
        items.nth(labels.index(PARTITION)).click()
        page.keyboard.press("Escape")
        launch = dialog.get_by_role("button", name="Launch 1 run")
        launch.wait_for(timeout=30_000)
        page.screenshot(path=str(TEST_OUTPUT / "ui-launch.png"))
        launch.click()
        t1 = time.monotonic()
        run = _wait_for_run(server)
        ran = time.monotonic() - t1
        assert run["status"] == "SUCCESS", (run, server.log.read_text()[-3000:])

        _open(page, f"{server.url}/assets/{ASSET}?view=checks", "expected_metrics")
        page.get_by_text("Passed").first.wait_for(timeout=60_000)
        page.screenshot(path=str(TEST_OUTPUT / "ui-checks-after-run.png"))
        _open(page, f"{server.url}/runs/{run['runId']}", "RUN_SUCCESS")
        page.screenshot(path=str(TEST_OUTPUT / "ui-run.png"))

        # A report one click away: materialize the paper report from its page, then click the `report`
        # link of its materialization (a new tab) and the preview's link; conescope dev serves the page
        # over http (a file:// link is dead in the UI).
        known = {r["runId"] for r in server.runs()}
        _open(page, f"{server.url}/assets/{REPORT}", REPORT.split("/")[-1])
        page.get_by_role("button").filter(has_text=re.compile(r"^\s*Materialize\s*$")).first.click()
        _confirm_if_asked(page)
        report_run = _wait_for_new_run(server, known)
        assert report_run["status"] == "SUCCESS", (report_run, server.log.read_text()[-3000:])
        url = f"{server.reports_url}/_paper/index.html"
        _open(page, f"{server.url}/assets/{REPORT}", REPORT.split("/")[-1])
        link = page.locator(f'a[href="{url}"]').first  # the metadata table of the latest materialization
        link.wait_for(timeout=60_000)
        page.screenshot(path=str(TEST_OUTPUT / "ui-report-link.png"))
        report_page = _follow(page, link)
        _assert_report(report_page, url)
        report_page.screenshot(path=str(TEST_OUTPUT / "ui-report-opened.png"))
        if report_page is not page:
            report_page.close()
        assert errors == [], errors
        page.get_by_text("[Show Markdown]").first.click()
        preview_link = page.get_by_role("dialog").get_by_role("link", name="open the report")
        preview_link.wait_for(timeout=30_000)
        assert preview_link.get_attribute("href") == url
        _assert_report(_follow(page, preview_link), url)
        page.close()
        took, left = server.stop(signal.SIGTERM)
        print(f"UI test (loaded machine): server ready in {started:.0f} s, run in {ran:.0f} s, stopped in {took:.1f} s")
        assert server.proc.returncode is not None and not left, left
    finally:
        server.kill()
