"""Planners chosen per world, and per-venue minimum notionals, on a real broker: world a is
planned by the target-weight planner, world b by the proportional planner (its small move on
a venue with a minimum notional dropped), world c by the cost-aware planner (its move, costing
more than it removes, dropped)."""

from __future__ import annotations

from typing import Any

import pytest

from service.app import RebalancerApp
from tests.kafka_support import Feed, Tail, fresh_settings
from tests.stream.test_policy_stream import until
from tests.stream.test_stream_service import btc, snapshot, world_move


def eth(qty: float, venue: str = "okx", mark: float = 3_000.0) -> dict[str, Any]:
    return {"venue": venue, "symbol": "ETHUSDT", "qty": qty, "mark": mark}


async def test_each_world_is_planned_by_its_planner_with_venue_minimums(
    bootstrap_servers: str,
) -> None:
    settings = fresh_settings(
        bootstrap_servers,
        planner={
            "lot_size_by_symbol": {"BTCUSDT": 0.001, "ETHUSDT": 0.01},
            "min_notional_by_venue": {"okx": 1_000.0},
        },
        costs={"fixed_per_trade": 100_000.0},
        planners={
            "choice": [
                {"world": "a", "planner": "target_weight"},
                {"world": "c", "planner": "cost_aware", "cost_aware": {"volatility": 0.5}},
            ]
        },
    )
    app = RebalancerApp(settings)
    await app.start()
    servers, t = bootstrap_servers, settings.topics
    try:
        async with (
            Feed(servers) as feed,
            Tail(servers, t.plans) as plans,
            Tail(servers, t.intents) as intents,
        ):
            # a: 1 BTC (60,000) though allocated 0.1 of 1,000,000; b: 1 BTC and 0.1 ETH on okx
            await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(1.0)], as_of=app.clock()))
            await feed.snapshot(
                t.snapshots, snapshot("b", "s1", [btc(1.0), eth(0.1)], as_of=app.clock())
            )
            await feed.snapshot(t.snapshots, snapshot("c", "s1", [btc(1.0)], as_of=app.clock()))
            await app.snapshot_reader.caught_up()
            await feed.event(t.allocations, world_move("e1", {"a": 0.05}, {"a": 0.1}))
            await feed.event(t.allocations, world_move("e2", {"b": 0.05}, {"b": 0.1}))
            await feed.event(t.allocations, world_move("e3", {"c": 0.05}, {"c": 0.1}))
            by_event = {r["event_id"]: r for r in await plans.count(3)}
            a, b, c = by_event["e1"], by_event["e2"], by_event["e3"]

            # a keeps its mix (all BTC) at 0.05 x 1,000,000 = 50,000: 0.833.. BTC, to a lot
            assert a["options"]["planner"] == "target_weight"
            (key,) = a["per_world"]["a"]["deltas"]
            assert key["target_qty"] == pytest.approx(0.834)
            assert "min_notional_by_venue" in a["options"]

            # b halves what it holds; its ETH move (0.05 x 3,000 = 150) is below okx's 1,000
            assert b["options"]["planner"] == "proportional"
            assert b["options"]["min_notional_by_venue"] == {"okx": 1_000.0}
            (traded,) = b["per_world"]["b"]["deltas"]
            assert (traded["venue"], traded["delta_qty"]) == ("binance", -0.5)
            (dropped,) = b["per_world"]["b"]["dropped"]
            assert (dropped["venue"], dropped["reason"]) == ("okx", "below_min_notional")
            assert dropped["notional"] == pytest.approx(150.0)

            # c would sell 0.5 BTC (30,000) for 0.5 x 30,000 = 15,000 of tracking error a
            # year, at a cost of 100,000 + nothing: dropped, no intent
            assert c["options"]["planner"] == "cost_aware"
            assert c["per_world"]["c"]["deltas"] == []
            (costly,) = c["per_world"]["c"]["dropped"]
            assert (costly["reason"], costly["delta_qty_unrounded"]) == (
                "cost_exceeds_benefit",
                -0.5,
            )
            assert c["intent_ids"] == []
            # the move itself is applied (the state is written after the record is published)
            await until(lambda: app.state.world("default", "c").alloc == 0.05, "c at 0.05")

            published = await intents.count(2)
            await intents.quiet(0.3)
            assert sorted((i["world_id"], i["venue"], i["delta_qty"]) for i in published) == [
                ("a", "binance", -0.166),
                ("b", "binance", -0.5),
            ]
    finally:
        await app.stop()
