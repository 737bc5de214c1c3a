"""Pacing and slicing on a real broker (issue 16 item 3): a large move as three plans, each
published once the previous is reached, also across a restart; a large intent as slices that
the execution node trades in order."""

from __future__ import annotations

import time
from typing import Any

import pytest

from consumers.topics import ensure_topics
from consumers.venues import PaperConfig, PaperVenue
from service.app import RebalancerApp
from service.policies.pacing import pace_quantity
from tests.execution.test_execution_node import Rig, qty, until
from tests.kafka_support import Feed, Tail, fresh_settings

pytestmark = pytest.mark.broker

NOW = int(time.time() * 1000)
PACING = {"max_step_share": 0.5, "steps": 3}
LOTS = {"lot_size_by_symbol": {"BTC": 1.0}}


def move(event_id: str = "move") -> dict[str, Any]:
    """World w from 0.2 to 0.5 of the equity: its 120 BTC become 300 (+180)."""
    return {
        "type": "world_allocations_changed",
        "event_id": event_id,
        "occurred_at": NOW,
        "total_equity": 1_000_000.0,
        "world_alloc_before": {"w": 0.2},
        "world_alloc_after": {"w": 0.5},
    }


def holding(qty: float, as_of: int, plan_id: str | None = None) -> dict[str, Any]:
    snap: dict[str, Any] = {
        "world_id": "w",
        "strategy_id": "s1",
        "as_of": as_of,
        "positions": [{"venue": "paper", "symbol": "BTC", "qty": qty, "mark": 100.0}],
    }
    if plan_id is not None:
        snap["converged_plan_id"] = plan_id
    return snap


def planned(records: list[Any]) -> list[dict[str, Any]]:
    return [r for r in records if r is not None and r["status"] == "planned"]


def legs(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [leg for key in record["per_world"]["w"]["deltas"] for leg in key["legs"]]


async def test_a_large_move_goes_in_three_steps_each_after_the_previous_is_reached(
    bootstrap_servers: str,
) -> None:
    settings = fresh_settings(bootstrap_servers, pacing=PACING, planner=LOTS)
    servers = settings.bootstrap_servers or ""
    await ensure_topics(settings, servers)
    t = settings.topics
    venue = PaperVenue("paper", PaperConfig(fill_model="partial", fill_interval_ms=20))
    venue.seed_position("w", "BTC", 120.0)
    app = RebalancerApp(settings)
    async with Feed(servers) as feed, Tail(servers, t.plans) as plans:
        await feed.snapshot(t.snapshots, holding(120.0, NOW - 1_000))
        await app.start()
        rig = Rig(settings, feed, plans)
        try:
            node = await rig.node(venue)
            await feed.event(t.allocations, move())
            records = await plans.until(lambda rs: len(planned(rs)) >= 3, timeout=60)
            steps = planned(records)
            assert len({r["plan_id"] for r in steps}) == 3
            expected = pace_quantity(180.0, 3, lot=1.0)
            assert expected == [90.0, 60.0, 30.0]
            assert [[leg["delta_qty"] for leg in legs(r)] for r in steps] == [[d] for d in expected]
            # each step was planned from the positions the previous one reached
            assert [legs(r)[0]["current_qty"] for r in steps] == [120.0, 210.0, 270.0]
            assert [legs(r)[0]["target_qty"] for r in steps] == [210.0, 270.0, 300.0]
            assert [r["per_world"]["w"]["alloc_after"] for r in steps] == [
                pytest.approx(0.35),
                pytest.approx(0.45),
                0.5,
            ]
            await until(lambda: not venue._open and qty(venue) == 300.0, "the move done")
            # the venue saw the steps in order, one after the other
            assert [o.qty for o in venue.placed] == expected
            step_of = {leg["intent_id"]: n for n, r in enumerate(steps) for leg in legs(r)}
            assert [step_of[o.order_id.split(":")[0]] for o in venue.placed] == [0, 1, 2]
            await until(lambda: app.state.world("default", "w").held is None, "no step left")
            assert node.stats.given_up == 0
        finally:
            for n in rig.nodes:
                await n.stop()
            await app.stop()


def step_held(app: RebalancerApp) -> int | None:
    """The paced step world ``w`` holds, waiting for the one in flight (None: none)."""
    held = app.state.world("default", "w").held
    return None if held is None or held.pacing is None else held.pacing.step


async def test_a_restart_mid_pacing_goes_on_with_the_next_step_not_a_new_plan(
    bootstrap_servers: str,
) -> None:
    settings = fresh_settings(bootstrap_servers, pacing=PACING, planner=LOTS)
    servers = settings.bootstrap_servers or ""
    await ensure_topics(settings, servers)
    t = settings.topics
    async with Feed(servers) as feed, Tail(servers, t.plans) as plans:
        await feed.snapshot(t.snapshots, holding(120.0, NOW - 1_000))
        first_app = RebalancerApp(settings)
        await first_app.start()
        try:
            await feed.event(t.allocations, move())
            (first,) = planned(await plans.until(lambda rs: len(planned(rs)) >= 1))
            # the state is written after the record is published: wait for it
            await until(lambda: step_held(first_app) == 2, "step 2 held behind step 1")
        finally:
            await first_app.stop()
        # step 1 reached while no instance runs (snapshots simulate the execution node)
        await feed.snapshot(t.snapshots, holding(210.0, NOW, first["plan_id"]))
        second_app = RebalancerApp(settings)
        await second_app.start()
        try:
            records = await plans.until(lambda rs: len(planned(rs)) >= 2, timeout=30)
            second = planned(records)[1]
            assert [
                (leg["current_qty"], leg["delta_qty"], leg["target_qty"]) for leg in legs(second)
            ] == [(210.0, 60.0, 270.0)]
            assert second["coalesced_event_ids"] == ["move"]
            await until(lambda: step_held(second_app) == 3, "step 3 held behind step 2")
            # step 1 was not planned again: one record per step, in order
            assert [r["plan_id"] for r in planned(await plans.quiet(0.5))] == [
                first["plan_id"],
                second["plan_id"],
            ]
        finally:
            await second_app.stop()


async def test_a_large_intent_is_sliced_and_the_node_trades_the_slices_in_order(
    bootstrap_servers: str,
) -> None:
    settings = fresh_settings(
        bootstrap_servers, slicing={"max_slice_notional": 5_000.0}, planner=LOTS
    )
    servers = settings.bootstrap_servers or ""
    await ensure_topics(settings, servers)
    t = settings.topics
    venue = PaperVenue(
        "paper", PaperConfig(fill_model="partial", partial_slices=3, fill_interval_ms=20)
    )
    venue.seed_position("w", "BTC", 120.0)
    app = RebalancerApp(settings)
    async with (
        Feed(servers) as feed,
        Tail(servers, t.plans) as plans,
        Tail(servers, t.intents) as intents,
    ):
        await feed.snapshot(t.snapshots, holding(120.0, NOW - 1_000))
        await app.start()
        rig = Rig(settings, feed, plans)
        try:
            node = await rig.node(venue)
            await feed.event(t.allocations, move())
            (record,) = planned(await plans.until(lambda rs: len(planned(rs)) >= 1))
            published = await intents.count(4)
            assert [i["intent_id"] for i in published] == record["intent_ids"]
            assert [(i["slice_index"], i["slice_count"], i["delta_qty"]) for i in published] == [
                (k, 4, 45.0) for k in range(4)
            ]
            assert [i["depends_on"] for i in published] == [
                None,
                *(i["intent_id"] for i in published[:-1]),
            ]
            await until(lambda: not venue._open and qty(venue) == 300.0, "the slices done")
            # the node reported the plan converged, and the service saw it reached
            await until(
                lambda: app.state.world("default", "w").reached_notified == record["plan_id"],
                "the plan reached",
            )
            # the venue's order sequence: slice by slice, never one before the last is done
            order_slices = [
                next(i["slice_index"] for i in published if o.order_id.startswith(i["intent_id"]))
                for o in venue.placed
            ]
            assert order_slices == sorted(order_slices)
            assert set(order_slices) == {0, 1, 2, 3}
            assert all(abs(o.qty) * 100.0 <= 5_000.0 for o in venue.placed)
            assert node.stats.given_up == 0
        finally:
            for n in rig.nodes:
                await n.stop()
            await app.stop()
