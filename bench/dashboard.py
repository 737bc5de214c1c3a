"""Benchmark of the dashboard's first view (issue 15): sign-in to a rendered page, in Debian's
headless Chromium, with 10 and with 10,000 plans in the history, in one run.

Run from the README's venv:  .venv/bin/python bench/dashboard.py [--repeat N]

The service runs in this process on the embedded broker with an admin token; plan records are
published straight to its plan topic (one traded key each) and read into its history. Each
sample opens a fresh browser context, loads the page, signs in and waits until the page says
it rendered everything (portfolios, work in progress, the history's first 50 plans, its
charts and health): the time from the sign-in click to that moment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from consumers.embedded_broker import EmbeddedBroker
from service.api.auth import sha256_hex
from service.app import RebalancerApp
from service.settings import ApiSettings, ApiToken, Settings, Topics
from tests.dashboard.conftest import CHROMIUM_ARGS as ARGS
from tests.dashboard.test_dashboard_browser import history_record as record

TOKEN = "bench-dashboard-admin-token"


async def first_view(browser: Browser, url: str) -> float:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(url)
    await page.fill("#token", TOKEN)
    started = time.perf_counter()
    await page.click("#sign-in-button")
    await page.wait_for_function("document.body.dataset.rendered !== undefined", timeout=30_000)
    elapsed = time.perf_counter() - started
    await context.close()
    return elapsed * 1000


async def main(repeat: int) -> None:
    chromium = os.environ.get("REBALANCER_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {datetime.now(UTC):%Y-%m-%d}")
    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        settings = Settings(
            bootstrap_servers=servers,
            http_port=0,
            topics=Topics(),
            api=ApiSettings(
                tokens=[ApiToken(name="bench", role="admin", sha256=sha256_hex(TOKEN))]
            ),
        )
        app = RebalancerApp(settings)
        await app.start()
        producer = AIOKafkaProducer(
            bootstrap_servers=servers, enable_idempotence=False, linger_ms=5
        )
        await producer.start()
        url = f"http://127.0.0.1:{app.http.port}/"
        published = 0
        try:
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=chromium, args=ARGS)
                for size in (10, 10_000):
                    for i in range(published, size):
                        await producer.send(
                            settings.topics.plans, orjson.dumps(record(i)), b"default"
                        )
                    await producer.flush()
                    published = size
                    deadline = time.monotonic() + 120
                    while len(app.read_model.plans) < size:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"only {len(app.read_model.plans)} plans read")
                        await asyncio.sleep(0.05)
                    await first_view(browser, url)  # warm-up: the browser's caches
                    samples = sorted([await first_view(browser, url) for _ in range(repeat)])
                    print(
                        f"{size:>6} plans: first view median {statistics.median(samples):.0f} ms, "
                        f"min {samples[0]:.0f}, max {samples[-1]:.0f} (n={repeat})"
                    )
                await browser.close()
        finally:
            await producer.stop()
            await app.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    asyncio.run(main(parser.parse_args().repeat))
