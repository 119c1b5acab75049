"""Headless Chromium for the dashboard tests: Debian's chromium driven by Playwright (never downloaded)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = Path(os.environ.get("LUMINA_CHROMIUM", "/usr/bin/chromium"))
OUTPUT = Path(os.environ.get("LUMINA_TEST_OUTPUT", ROOT / "test-output")) / "dashboard"


@contextmanager
def chromium() -> Iterator[Any]:
    """A browser; skips (fails in CI) when Chromium is not installed."""
    from tests.conftest import IN_CI

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message + "; CI must run the browser tests")
        pytest.skip(message)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--disable-gpu", "--disable-dev-shm-usage", "--disable-component-update"],
        )
        yield browser
        browser.close()


@contextmanager
def watched_page(browser: Any, base_url: str, permissions: list[str] | None = None) -> Iterator[Any]:
    """A fresh page that fails the test on any script error or alert (an XSS payload would cause one); the
    dashboard's own confirmations ("Delete …?", "Resolve …?") are accepted."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base_url)
    if permissions:
        context.grant_permissions(permissions)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def on_dialog(dialog: Any) -> None:
        if dialog.type == "confirm":
            dialog.accept()
        else:
            problems.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

    page.on("dialog", on_dialog)
    yield page
    context.close()
    assert problems == []


def shot(page: Any, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)
