"""Headless Chromium from Debian's packages, driven by playwright (its own browser download is not
used), for the tests that open pages: skipped with the reason where either is missing, failed instead
with ``CONESCOPE_REQUIRE_BROWSER=1`` (set by ``.ci/run``, which installs Chromium)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_browser(what: str) -> Iterator:
    """A launched browser for a module fixture (``yield from chromium_browser("UI test")``)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if executable is None or sync_playwright is None:
        reason = ("headless Chromium is not installed (Debian: apt-get install -y chromium)" if executable is None
                  else "the playwright package is not installed (pip install -e '.[dev]')")
        if os.environ.get("CONESCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CONESCOPE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(f"{what} skipped: {reason}; set CONESCOPE_REQUIRE_BROWSER=1 to make this a failure")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        yield browser
        browser.close()
