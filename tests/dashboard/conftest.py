"""A headless Chromium (Debian's, driven by Playwright) and a running service to point it at.

Browser tests run with ``make test-browser`` (``REBALANCER_TEST_BROWSER=1``); ``.ci/run``
installs Chromium when the machine lacks it. Without a browser the fixture fails and says
what to install: it never skips.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from service.app import RebalancerApp
from tests.api.test_http_api import api_settings

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("REBALANCER_CHROMIUM") or shutil.which("chromium")
    if not found or not Path(found).exists():
        raise RuntimeError(
            "browser tests need Chromium: apt-get install chromium (or set REBALANCER_CHROMIUM "
            "to its path)"
        )
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    opened.on(
        "console",
        lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    try:
        yield opened
    finally:
        await context.close()
    unexpected = [e for e in errors if "401" not in e]  # the wrong-token sign-in is expected
    assert not unexpected, unexpected


@pytest.fixture
async def service(bootstrap_servers: str) -> AsyncIterator[RebalancerApp]:
    app = RebalancerApp(api_settings(bootstrap_servers, costs={"fee_bps": 5.0}))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
