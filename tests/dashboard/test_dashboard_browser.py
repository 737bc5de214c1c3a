"""The dashboard in real headless Chromium against a running service on a real broker:
sign-in, the overview, live history without a reload, a plan's realised cost, controls by
role, flatten's confirmation, a proposal approved from the page. Screenshots of the main views go to
docs/screenshots/."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from playwright.async_api import Page

from consumers.venues import PaperConfig, PaperVenue
from service.app import RebalancerApp
from tests.api.test_approval_http import proposed
from tests.api.test_http_api import TOKENS, call, until
from tests.dashboard.demo_process import demo_ui
from tests.execution.test_node_endpoints import node_app
from tests.kafka_support import Feed, Tail
from tests.process_support import ROOT
from tests.stream.test_stream_service import btc, snapshot, world_move

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "docs" / "screenshots"
WAIT_MS = 30_000


async def seeded(app: RebalancerApp) -> dict[str, Any]:
    """Worlds a and b of portfolio default, planned once; returns the plan record."""
    t, servers = app.settings.topics, app.settings.bootstrap_servers or ""
    async with Feed(servers) as feed, Tail(servers, t.plans) as plans:
        await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(0.6)]))
        await feed.snapshot(t.snapshots, snapshot("b", "t1", [btc(0.3, venue="okx")]))
        await app.snapshot_reader.caught_up()
        move = world_move("e1", {"a": 0.2, "b": 0.2}, {"a": 0.3, "b": 0.1})
        await feed.event(t.allocations, move)
        (record,) = await plans.count(1)
    return record


async def sign_in(page: Page, app: RebalancerApp, role: str) -> None:
    await page.goto(f"http://127.0.0.1:{app.http.port}/")
    await page.fill("#token", TOKENS[role])
    await page.click("#sign-in-button")
    await page.wait_for_selector(f"text={role}-user ({role})", timeout=WAIT_MS)


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_sign_in_shows_the_worlds_and_history_follows_without_a_reload(
    service: RebalancerApp, page: Page
) -> None:
    record = await seeded(service)
    await page.goto(f"http://127.0.0.1:{service.http.port}/")
    await page.fill("#token", "not-a-token")
    await page.click("#sign-in-button")
    error = page.locator("#sign-in-error")
    await error.wait_for(timeout=WAIT_MS)
    assert "401" in await error.inner_text()
    await sign_in(page, service, "viewer")
    for world in ("a", "b"):
        row = page.locator(f'#portfolios tr[data-world="{world}"]')
        await row.wait_for(timeout=WAIT_MS)
        assert "active" in await row.inner_text()
    plan_row = page.locator(f'#plans tr[data-plan="{record["plan_id"]}"]')
    await plan_row.wait_for(timeout=WAIT_MS)
    assert "planned" in await plan_row.inner_text()
    await page.wait_for_selector("#live.on", timeout=WAIT_MS)
    loads = await page.evaluate("performance.getEntriesByType('navigation').length")
    t = service.settings.topics
    async with Feed(service.settings.bootstrap_servers or "") as feed:
        await feed.event(t.allocations, world_move("e2", {"b": 0.25}))
    moved = page.locator('#plans tr[data-event="e2"]')
    await moved.wait_for(timeout=WAIT_MS)  # pushed by the event stream, not reloaded
    assert await page.evaluate("performance.getEntriesByType('navigation').length") == loads
    await shot(page, "overview")


async def test_a_plan_filled_by_an_execution_node_shows_its_realised_cost(
    service: RebalancerApp, page: Page
) -> None:
    """A paper venue charging 10 bps fills world a's sell; the history row of the plan shows
    the realised cost beside the estimate, and the cost chart draws it beside the estimate."""
    venue = PaperVenue("binance", PaperConfig(fee_bps=10.0))
    venue.seed_position("a", "BTCUSDT", 0.6)
    node = node_app(service.settings, venue, heartbeat_ms=100)
    t, servers = service.settings.topics, service.settings.bootstrap_servers or ""
    async with Feed(servers) as feed:
        await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(0.6)]))
        await node.start()
    try:
        record = await seeded(service)

        async def realised() -> dict[str, Any] | None:
            _, body = await call(service, "GET", "/v1/plans", TOKENS["viewer"])
            found = [p for p in body["plans"] if p["plan_id"] == record["plan_id"]]
            return found[0]["realised_cost"] if found else None

        cost = await until(realised, "the plan's realised cost")
        assert cost["fees"] == pytest.approx(0.2 * 60_000 * 0.001)  # 12: a third of 0.6 sold
        await sign_in(page, service, "viewer")
        cell = page.locator(f'#plans tr[data-plan="{record["plan_id"]}"] td.realised')
        await cell.wait_for(timeout=WAIT_MS)
        assert await cell.inner_text() == "12"
        assert "fees 12 + slippage 0 on 1 fills" in (await cell.get_attribute("title") or "")
        header = await page.locator("#plans thead").inner_text()
        assert "est. cost" in header
        assert "realised cost" in header
        assert await page.locator("#cost-chart rect.pair").count() == 1
        await shot(page, "realised-cost")
    finally:
        await node.stop()


async def test_a_viewer_sees_no_controls_and_an_operator_does(
    service: RebalancerApp, page: Page
) -> None:
    await seeded(service)
    await sign_in(page, service, "viewer")
    await page.locator('#portfolios tr[data-world="a"]').wait_for(timeout=WAIT_MS)
    assert await page.locator("button[data-action]").count() == 0
    await page.click("#sign-out")
    await sign_in(page, service, "operator")
    await page.locator('#portfolios tr[data-world="a"]').wait_for(timeout=WAIT_MS)
    assert await page.locator('button[data-action="pause"]').count() == 3  # portfolio, a, b


async def test_flatten_asks_for_confirmation(service: RebalancerApp, page: Page) -> None:
    await seeded(service)
    await sign_in(page, service, "operator")
    flatten = page.locator('.portfolio h3 button[data-action="flatten"]')
    await flatten.click()
    dialog = page.locator("#command")
    await dialog.wait_for(state="visible")
    warning = await page.locator("#command-warning").inner_text()
    assert "every key is closed to zero now" in warning
    await page.click("#command-cancel")
    await dialog.wait_for(state="hidden")
    await flatten.click()
    await page.fill("#command-reason", "venue down")
    await shot(page, "flatten-confirmation")
    await page.click("#command-confirm")

    async def halted() -> bool:
        _, view = await call(service, "GET", "/v1/portfolios/default", TOKENS["viewer"])
        return bool(view["trading"]["mode"] == "halted")

    await until(halted, "the portfolio halted by the flatten")
    _, view = await call(service, "GET", "/v1/portfolios/default", TOKENS["viewer"])
    assert (view["trading"]["by"], view["trading"]["reason"]) == ("operator-user", "venue down")
    t, servers = service.settings.topics, service.settings.bootstrap_servers or ""
    async with Tail(servers, t.allocations) as allocations:
        await allocations.quiet(0.5)
    sent = [r for r in allocations.records if r.get("type") == "operator_command"]
    assert [c["action"] for c in sent] == ["flatten"]  # the cancelled dialog sent nothing


async def test_a_proposal_approved_from_the_page_puts_its_intents_on_the_topic(
    service: RebalancerApp, page: Page
) -> None:
    async with proposed(service) as scene:
        proposal, intents = scene.proposal, scene.intents
        await sign_in(page, service, "approver")
        row = page.locator(f'tr.proposal[data-plan="{proposal["plan_id"]}"]')
        await row.wait_for(timeout=WAIT_MS)
        await shot(page, "proposal")
        await row.locator('button[data-decision="approve"]').click()
        await page.fill("#command-reason", "sizes checked")
        await page.click("#command-confirm")
        wanted = set(proposal["intent_ids"])
        await intents.until(lambda rs: {i["intent_id"] for i in rs} >= wanted)
        approved = page.locator(f'#plans tr[data-plan="{proposal["plan_id"]}"] .status-approved')
        await approved.wait_for(timeout=WAIT_MS)


async def test_the_first_view_renders_quickly_with_10000_plans(
    service: RebalancerApp, page: Page
) -> None:
    await seeded(service)
    t, servers = service.settings.topics, service.settings.bootstrap_servers or ""
    async with Feed(servers) as feed:
        for i in range(10_000):
            await feed.send(t.plans, "default", history_record(i))

    async def all_read() -> bool:
        return len(service.read_model.plans) >= 10_001

    await until(all_read, "10,000 plans in the history", timeout=120)
    await page.goto(f"http://127.0.0.1:{service.http.port}/")
    await page.fill("#token", TOKENS["viewer"])
    started = time.perf_counter()
    await page.click("#sign-in-button")
    await page.wait_for_function("document.body.dataset.rendered !== undefined", timeout=WAIT_MS)
    elapsed = time.perf_counter() - started
    assert await page.locator("#plans tr.plan").count() == 50
    print(f"\nfirst view with 10,001 plans in history: {elapsed * 1000:.0f} ms")
    await shot(page, "history")


def history_record(i: int) -> dict[str, Any]:
    """A plan record as the history reads it (one traded key)."""
    created = 1_700_000_000_000 + i * 60_000
    return {
        "plan_id": f"hist-{i:05d}",
        "event_id": f"h{i}",
        "portfolio_id": "default",
        "occurred_at": created,
        "created_at": created,
        "status": "planned",
        "per_world": {
            "a": {"deltas": [{"notional": 1_000.0 + i, "legs": [{"intent_id": f"i{i}"}]}]}
        },
        "intent_ids": [f"i{i}"],
        "coalesced_event_ids": [f"h{i}"],
    }


async def test_the_demo_keeps_running_for_the_dashboard_until_ctrl_c(page: Page) -> None:
    async with demo_ui() as demo:
        await page.goto(f"{demo.url}/")
        await page.fill("#token", demo.token)
        await page.click("#sign-in-button")
        for world in ("alpha", "beta"):  # the demo's worlds
            await page.locator(f'#portfolios tr[data-world="{world}"]').wait_for(timeout=WAIT_MS)
        assert await page.locator("#plans tr.plan").count() >= 2
        for venue in ("binance", "okx"):  # the demo's execution nodes, by their heartbeats
            node = page.locator(f'#nodes tr.node[data-venue="{venue}"][data-alive="true"]')
            await node.wait_for(timeout=WAIT_MS)
        await shot(page, "demo")
        await page.goto("about:blank")  # the page would report the stopped service's refusals
        demo.process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(demo.process.wait(), 30) == 0
