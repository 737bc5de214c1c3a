"""Realised cost end to end on a real broker: the service plans an event, an execution node
on a paper venue that charges a fee and slips fills it, and the service's HTTP API (real
HTTP) shows that plan's realised cost -- the fee and slippage worked out by hand -- beside its
estimated cost, in the plan history and its stats; a replayed fill report changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from consumers.topics import ensure_topics
from consumers.venues import PaperConfig, PaperVenue
from service.app import RebalancerApp
from service.messages import PlanFills
from tests.api.test_http_api import TOKENS, api_settings, call, until
from tests.execution.test_node_endpoints import node_app
from tests.kafka_support import Feed, Tail
from tests.stream.test_stream_service import btc, snapshot, world_move

FEE_BPS = 10.0
SLIPPAGE_BPS = 5.0


@pytest.fixture
async def service(bootstrap_servers: str) -> AsyncIterator[RebalancerApp]:
    settings = api_settings(bootstrap_servers, costs={"fee_bps": 4.0, "half_spread_bps": 1.0})
    await ensure_topics(settings, bootstrap_servers)
    app = RebalancerApp(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def plans(app: RebalancerApp) -> list[dict[str, Any]]:
    status, body = await call(app, "GET", "/v1/plans", TOKENS["viewer"])
    assert status == 200, body
    plans: list[dict[str, Any]] = body["plans"]
    return plans


async def test_a_plan_filled_at_a_venue_with_fees_shows_its_realised_cost(
    service: RebalancerApp,
) -> None:
    settings = service.settings
    t, servers = settings.topics, settings.bootstrap_servers or ""
    venue = PaperVenue("binance", PaperConfig(fee_bps=FEE_BPS, slippage_bps=SLIPPAGE_BPS))
    venue.seed_position("a", "BTCUSDT", 0.6)
    async with Feed(servers) as feed, Tail(servers, t.intents) as intents:
        await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(0.6)]))
        await service.snapshot_reader.caught_up()
        node = node_app(settings, venue, heartbeat_ms=100)
        await node.start()
        try:
            # world a goes from 30% to 20% of 1,000,000: s1 sells a third of its 0.6 BTC
            await feed.event(t.allocations, world_move("e1", {"a": 0.2}, {"a": 0.3}))
            (leg,) = await intents.count(1)
            assert (leg["venue"], leg["delta_qty"], leg["mark"]) == ("binance", -0.2, 60_000.0)

            # by hand: a sell of 0.2 at 5 bps under the 60,000 mark, and 10 bps of that notional
            price = 60_000.0 * (1 - SLIPPAGE_BPS / 10_000)  # 59,970
            fees = 0.2 * price * FEE_BPS / 10_000  # 11.994
            slippage = -0.2 * (price - 60_000.0)  # 6: the sell got 30 less for each BTC
            assert (fees, slippage) == pytest.approx((11.994, 6.0))

            async def realised() -> dict[str, Any] | None:
                found = [p for p in await plans(service) if p["plan_id"] == leg["plan_id"]]
                return found[0] if found and found[0]["realised_cost"] else None

            plan = await until(realised, "the plan's realised cost in GET /v1/plans")
            cost = plan["realised_cost"]
            assert cost["fees"] == pytest.approx(fees)
            assert cost["slippage"] == pytest.approx(slippage)
            assert cost["total"] == pytest.approx(fees + slippage)
            assert cost["filled_notional"] == pytest.approx(0.2 * price)
            assert (cost["fills"], cost["nodes"]) == (1, 1)
            # the estimate, beside it: (4 + 1) bps of the 12,000 turnover
            assert plan["turnover"] == pytest.approx(12_000.0)
            assert plan["estimated_cost"] == pytest.approx(6.0)
        finally:
            await node.stop()

        status, stats = await call(service, "GET", "/v1/plans/stats?buckets=1", TOKENS["viewer"])
        assert status == 200, stats
        (bucket,) = stats["buckets"]
        assert bucket["realised_cost"] == pytest.approx(fees + slippage)
        assert (bucket["realised_plans"], bucket["estimated_cost"]) == (1, pytest.approx(6.0))

        # the node's own report delivered again (a replay) and an older one: counted once
        async with Tail(servers, t.nodes) as nodes_topic:
            (sent,) = [
                r
                for r in await nodes_topic.until(lambda rs: any(r and "kind" in r for r in rs))
                if r and "kind" in r
            ]
        report = PlanFills.model_validate_json(orjson.dumps(sent))
        older = report.model_copy(update={"fills": 0, "fees": 0.0, "slippage": 0.0})
        for again in (report, report, older):
            await feed.send(t.nodes, again.key, again.model_dump(mode="json"))
        marker = {"node_id": "marker-node", "venue": "x", "started_at": 1, "sent_at": 1}
        marker |= {"interval_ms": 1, "ready": True, "plans": []}
        marker["counts"] = dict.fromkeys(
            ("intents", "orders", "fills", "rejections", "plans_converged"), 0
        )
        await feed.send(t.nodes, "marker-node", marker)

        async def read_past_the_replay() -> bool:
            _, body = await call(service, "GET", "/v1/nodes", TOKENS["viewer"])
            return any(n["node_id"] == "marker-node" for n in body["nodes"])

        await until(read_past_the_replay, "the records after the replay read")
        (plan,) = [p for p in await plans(service) if p["plan_id"] == leg["plan_id"]]
        assert plan["realised_cost"]["total"] == pytest.approx(fees + slippage)
        assert plan["realised_cost"]["fills"] == 1
