"""The stream service against a real broker: events and snapshots in, intents and plans out."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from service.app import RebalancerApp
from service.demo import run_demo
from service.settings import Settings
from tests.kafka_support import Feed, Tail, fresh_settings
from tests.process_support import http_get

# every test here needs a broker; the demo's starts its own, without the bootstrap_servers fixture
pytestmark = pytest.mark.broker


def snapshot(
    world: str, strategy: str, positions: list[dict[str, Any]], as_of: int = 1_000, **extra: Any
) -> dict[str, Any]:
    return {
        "world_id": world,
        "strategy_id": strategy,
        "as_of": as_of,
        "positions": positions,
        **extra,
    }


def btc(qty: float, venue: str = "binance", mark: float = 60_000.0) -> dict[str, Any]:
    return {"venue": venue, "symbol": "BTCUSDT", "qty": qty, "mark": mark}


def world_move(
    event_id: str, after: dict[str, float], before: dict[str, float] | None = None, **extra: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "world_allocations_changed",
        "event_id": event_id,
        "occurred_at": 1_000,
        "total_equity": 1_000_000.0,
        "world_alloc_after": after,
        **extra,
    }
    if before is not None:
        event["world_alloc_before"] = before
    return event


@pytest.fixture
def settings(bootstrap_servers: str) -> Settings:
    return fresh_settings(bootstrap_servers)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[RebalancerApp]:
    app = RebalancerApp(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def test_two_strategies_net_into_one_intent_through_kafka(
    settings: Settings, service: RebalancerApp
) -> None:
    t = settings.topics
    async with (
        Feed(settings.bootstrap_servers or "") as feed,
        Tail(settings.bootstrap_servers or "", t.intents) as intents,
        Tail(settings.bootstrap_servers or "", t.plans) as plans,
    ):
        await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(0.6)]))
        await feed.snapshot(t.snapshots, snapshot("a", "s2", [btc(0.9)]))
        await service.snapshot_reader.caught_up()
        await feed.event(
            t.allocations,
            world_move(
                "e1",
                {"a": 0.2},
                {"a": 0.3},
                strategy_alloc_before_total={"a": {"s1": 0.15, "s2": 0.15}},
                strategy_alloc_after_total={"a": {"s1": 0.1, "s2": 0.1}},
            ),
        )
        (intent,) = await intents.count(1)
        assert intent["delta_qty"] == -0.5
        assert intent["reduce_only"] is True
        assert {b["strategy_id"]: b["delta_qty"] for b in intent["strategy_breakdown"]} == {
            "s1": -0.2,
            "s2": -0.3,
        }
        assert intents.keys == [b"binance|BTCUSDT"]
        (record,) = await plans.count(1)
        assert record["plan_id"] == intent["plan_id"]
        assert record["intent_ids"] == [intent["intent_id"]]
        await intents.quiet(0.5)
        assert len(intents.records) == 1


class Rig:
    """A running service with a feed and tails on its outputs."""

    def __init__(
        self,
        settings: Settings,
        app: RebalancerApp,
        feed: Feed,
        intents: Tail,
        plans: Tail,
        dlq: Tail,
    ) -> None:
        self.settings, self.app, self.feed = settings, app, feed
        self.intents, self.plans, self.dlq = intents, plans, dlq
        self.t = settings.topics

    async def snapshots(self, *snaps: dict[str, Any]) -> None:
        for s in snaps:
            await self.feed.snapshot(self.t.snapshots, s)
        await self.app.snapshot_reader.caught_up()

    async def event(self, event: dict[str, Any]) -> None:
        await self.feed.event(self.t.allocations, event)

    async def planned(self, n: int) -> list[dict[str, Any]]:
        """Wait for ``n`` plan records with status planned; returns them."""
        records = await self.plans.until(
            lambda rs: sum(1 for r in rs if r["status"] == "planned") >= n
        )
        return [r for r in records if r["status"] == "planned"]


@pytest.fixture
async def rig(settings: Settings, service: RebalancerApp) -> AsyncIterator[Rig]:
    servers = settings.bootstrap_servers or ""
    t = settings.topics
    async with (
        Feed(servers) as feed,
        Tail(servers, t.intents) as intents,
        Tail(servers, t.plans) as plans,
        Tail(servers, t.dead_letters) as dlq,
    ):
        yield Rig(settings, service, feed, intents, plans, dlq)


async def test_spec_examples_end_to_end(rig: Rig) -> None:
    await rig.snapshots(
        snapshot("a", "b", [btc(1.0)]),
        snapshot("c", "s", [{"venue": "v", "symbol": "U", "qty": 1.0, "mark": 100.0}]),
        snapshot("d", "s1", [{"venue": "v", "symbol": "ETH", "qty": 1.0, "mark": 100.0}]),
        snapshot("d", "s2", [{"venue": "v", "symbol": "ETH", "qty": 1.0, "mark": 100.0}]),
    )
    await rig.event(
        world_move(
            "ex1",
            {"a": 0.2},
            {"a": 0.3},
            strategy_alloc_after_total={"a": {"b": 0.0667}},
            strategy_alloc_before_total={"a": {"b": 0.1}},
            lot_size_by_symbol={"BTCUSDT": 0.001},
        )
    )
    await rig.event(world_move("ex3", {"c": 0.199}, {"c": 0.2}, min_trade_notional=1.0))
    await rig.event(world_move("ex4", {"d": 0.1}, {"d": 0.2}, lot_size_by_symbol={"ETH": 0.25}))
    plans = await rig.planned(3)
    by_event = {p["event_id"]: p for p in plans}
    assert [d["delta_qty"] for d in by_event["ex1"]["per_world"]["a"]["deltas"]] == [-0.333]
    assert by_event["ex3"]["intent_ids"] == []
    assert [d["reason"] for d in by_event["ex3"]["per_world"]["c"]["dropped"]] == [
        "below_min_notional"
    ]
    assert [d["delta_qty"] for d in by_event["ex4"]["per_world"]["d"]["deltas"]] == [-1.0]
    intents = await rig.intents.count(2)
    assert sorted(i["delta_qty"] for i in intents) == [-1.0, -0.333]


async def test_cascade_multi_world_event_and_weight_update(rig: Rig) -> None:
    await rig.snapshots(
        snapshot("a", "s1", [btc(1.0)]),
        snapshot("a", "s2", [btc(2.0)]),
        snapshot("b", "t1", [btc(3.0)]),
    )
    # two worlds at once, no strategy weights: each world's strategies follow it
    await rig.event(world_move("m1", {"a": 0.1, "b": 0.3}, {"a": 0.2, "b": 0.2}))
    (plan,) = await rig.planned(1)
    assert plan["per_world"]["a"]["scale_by_strategy"] == {"s1": 0.5, "s2": 0.5}
    assert [d["delta_qty"] for d in plan["per_world"]["a"]["deltas"]] == [-1.5]
    assert [d["delta_qty"] for d in plan["per_world"]["b"]["deltas"]] == [1.5]
    assert plan["global_dropped"][0]["reason"] == "rounded_to_zero"  # the worlds' moves cancel
    intents = await rig.intents.count(2)
    assert {(i["world_id"], i["delta_qty"]) for i in intents} == {("a", -1.5), ("b", 1.5)}
    # the execution side reaches plan m1 and reports it, so world b is free again
    await rig.snapshots(
        snapshot("a", "s1", [btc(0.5)], as_of=2_000, converged_plan_id=plan["plan_id"]),
        snapshot("a", "s2", [btc(1.0)], as_of=2_000, converged_plan_id=plan["plan_id"]),
        snapshot("b", "t1", [btc(4.5)], as_of=2_000, converged_plan_id=plan["plan_id"]),
    )
    await rig.event(
        {
            "type": "strategy_weights_updated",
            "event_id": "w1",
            "occurred_at": 3_000,
            "world_id": "b",
            "strategy_alloc_after_total": {"t1": 0.15},
        }
    )
    # the weighting module moves weights inside world b (its allocation 0.3 stays)
    (_, update) = await rig.planned(2)
    assert update["coalesced_event_ids"] == ["w1"]
    world = update["per_world"]["b"]
    # the service's weights for b: derived from snapshots at m1 (3 BTC x 60,000 / 1,000,000 =
    # 0.18 of equity), then cascaded with the world (x1.5)
    assert world["weights_source"] == "request"
    assert world["strategy_alloc_before"] == {"t1": pytest.approx(0.27)}
    assert world["scale_by_strategy"] == {"t1": pytest.approx(0.15 / 0.27)}
    assert [d["delta_qty"] for d in world["deltas"]] == [-2.0]


async def test_out_of_order_and_tombstoned_snapshots(rig: Rig) -> None:
    await rig.snapshots(
        snapshot("a", "s1", [btc(2.0)], as_of=5_000, seq=3),
        snapshot("a", "s1", [btc(9.0)], as_of=4_000),  # older: ignored
        snapshot("a", "s1", [btc(7.0)], as_of=5_000, seq=2),  # same time, lower seq: ignored
        snapshot("a", "s2", [btc(1.0)], as_of=5_000),
    )
    await rig.feed.send(rig.t.snapshots, "a|s2", None)  # s2 is gone
    await rig.app.snapshot_reader.caught_up()
    assert rig.app.metrics.registry.get_sample_value("rebalancer_snapshots_stale_total") == 2
    await rig.event(world_move("e1", {"a": 0.1}, {"a": 0.2}))
    (plan,) = await rig.planned(1)
    (delta,) = plan["per_world"]["a"]["deltas"]
    assert (delta["current_qty"], delta["delta_qty"]) == (2.0, -1.0)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (
            b'{"type": "manual_override", "event_id": "x"}',
            "does not match any of the expected tags",
        ),
        (
            b'{"type": "world_allocations_changed", "event_id": "x", "occurred_at": 1, '
            b'"total_equity": 1, "world_alloc_after": {"a": 1.5}}',
            "world_alloc_after.a",
        ),
        (
            b'{"type": "world_allocations_changed", "event_id": "x", "occurred_at": 1, '
            b'"total_equity": 1, "world_alloc_after": {"a": 0.6, "b": 0.6}}',
            "add up to 1.2",
        ),
        (
            b'{"type": "world_allocations_changed", "event_id": "x", "occurred_at": 1, '
            b'"total_equity": NaN, "world_alloc_after": {"a": 0.5}}',
            "finite number",
        ),
        (
            b'{"type": "world_allocations_changed", "event_id": "x", "occurred_at": 1, '
            b'"total_equity": 1, "world_alloc_after": {"a": 0.2}, '
            b'"strategy_alloc_after_total": {"a": {"s": 0.3}}}',
            "above 0.2",
        ),
        (
            b'{"type": "world_allocations_changed", "event_id": "x", "occurred_at": 1, '
            b'"total_equity": 1, "world_alloc_after": {"zz": 0.1}}',
            "world_alloc_before.zz: missing",
        ),
    ],
)
async def test_bad_events_are_dead_lettered_and_the_next_good_one_is_planned(
    rig: Rig, raw: bytes, reason: str
) -> None:
    await rig.snapshots(snapshot("a", "s1", [btc(1.0)]))
    await rig.feed.send(rig.t.allocations, "default", raw)
    await rig.event(world_move("good", {"a": 0.1}, {"a": 0.2}))
    (letter,) = await rig.dlq.count(1)
    assert reason in letter["error_message"]
    assert letter["topic"] == rig.t.allocations
    assert base64.b64decode(letter["value_b64"]) == raw
    (plan,) = await rig.planned(1)
    assert plan["event_id"] == "good"


async def test_bad_snapshots_are_dead_lettered(rig: Rig) -> None:
    await rig.feed.send(
        rig.t.snapshots,
        "a|s1",
        b'{"world_id": "a", "strategy_id": "s1", '
        b'"as_of": 1, "positions": [{"symbol": "X", "qty": NaN}]}',
    )
    await rig.feed.send(rig.t.snapshots, "a|s9", snapshot("a", "s1", [btc(1.0)]))
    await rig.feed.send(rig.t.snapshots, "nobar", None)
    letters = await rig.dlq.count(3)
    messages = sorted(letter["error_message"] for letter in letters)
    assert "does not match the snapshot's 'a|s1'" in messages[0]
    assert "positions.0.qty: Input should be a finite number" in messages[1]
    assert "tombstone key 'nobar'" in messages[2]
    assert len(rig.app.snapshots) == 0


async def test_duplicate_event_is_not_planned_twice(rig: Rig) -> None:
    await rig.snapshots(snapshot("a", "s1", [btc(1.0)]))
    await rig.event(world_move("e1", {"a": 0.1}, {"a": 0.2}))
    await rig.event(world_move("e1", {"a": 0.1}, {"a": 0.2}))
    await rig.planned(1)
    await rig.plans.quiet(1.0)
    assert len(rig.plans.records) == 1
    assert rig.app.metrics.events_duplicate._value.get() == 1


async def test_change_while_a_plan_is_in_flight_is_held_then_released_by_convergence(
    rig: Rig,
) -> None:
    await rig.snapshots(snapshot("a", "s1", [btc(1.2)]), snapshot("a", "s2", [btc(0.6)]))
    await rig.event(world_move("e1", {"a": 0.2}, {"a": 0.3}))
    (first,) = await rig.planned(1)
    await rig.event(world_move("e2", {"a": 0.15}))
    await rig.event(world_move("e3", {"a": 0.1}))
    held = await rig.plans.until(lambda rs: sum(r["status"] == "held" for r in rs) >= 2)
    assert [r["coalesced_event_ids"] for r in held if r["status"] == "held"] == [
        ["e2"],
        ["e2", "e3"],
    ]
    assert "plan_in_flight" in held[-1]["held_reason"]
    await rig.plans.quiet(0.5)
    assert sum(r["status"] == "planned" for r in rig.plans.records) == 1
    # the execution node reaches plan e1 for both strategies: held work goes, once, from 0.2
    await rig.snapshots(
        snapshot("a", "s1", [btc(0.8)], as_of=2_000, converged_plan_id=first["plan_id"]),
        snapshot("a", "s2", [btc(0.4)], as_of=2_000, converged_plan_id=first["plan_id"]),
    )
    (_, released) = await rig.planned(2)
    assert released["coalesced_event_ids"] == ["e2", "e3"]
    assert released["per_world"]["a"]["alloc_before"] == 0.2
    assert released["per_world"]["a"]["alloc_after"] == 0.1
    assert [d["delta_qty"] for d in released["per_world"]["a"]["deltas"]] == [-0.6]
    assert rig.app.metrics.events_held.labels("plan_in_flight")._value.get() == 2


async def test_held_change_is_released_by_the_settle_timeout(bootstrap_servers: str) -> None:
    settings = fresh_settings(bootstrap_servers, plan_settle_timeout_ms=1_500)
    app = RebalancerApp(settings)
    await app.start()
    try:
        servers, t = bootstrap_servers, settings.topics
        async with Feed(servers) as feed, Tail(servers, t.plans) as plans:
            await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(1.0)]))
            await app.snapshot_reader.caught_up()
            await feed.event(t.allocations, world_move("e1", {"a": 0.2}, {"a": 0.4}))
            await feed.event(t.allocations, world_move("e2", {"a": 0.1}))
            records = await plans.until(
                lambda rs: sum(r["status"] == "planned" for r in rs) >= 2, timeout=20
            )
            statuses = [r["status"] for r in records]
            assert statuses == ["planned", "held", "planned"]
            assert records[2]["coalesced_event_ids"] == ["e2"]
    finally:
        await app.stop()


async def test_stale_snapshots_hold_until_a_fresh_one_arrives(bootstrap_servers: str) -> None:
    settings = fresh_settings(bootstrap_servers, max_snapshot_age_ms=60_000)
    app = RebalancerApp(settings)
    await app.start()
    try:
        servers, t = bootstrap_servers, settings.topics
        now = app.clock()
        async with Feed(servers) as feed, Tail(servers, t.plans) as plans:
            await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(1.0)], as_of=now - 120_000))
            await app.snapshot_reader.caught_up()
            await feed.event(t.allocations, world_move("e1", {"a": 0.1}, {"a": 0.2}))
            (held,) = await plans.count(1)
            assert held["status"] == "held"
            assert "stale_snapshots" in held["held_reason"]
            await plans.quiet(0.5)
            assert len(plans.records) == 1
            await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(1.0)], as_of=app.clock()))
            (_, planned) = await plans.count(2)
            assert planned["status"] == "planned"
            assert [d["delta_qty"] for d in planned["per_world"]["a"]["deltas"]] == [-0.5]
    finally:
        await app.stop()


async def test_metrics_and_health_over_http(rig: Rig) -> None:
    port = rig.app.http.port
    assert await http_get(port, "/healthz") == (200, "ok\n")
    assert await http_get(port, "/readyz") == (200, "ready\n")
    await rig.snapshots(snapshot("a", "s1", [btc(1.0)]))
    await rig.event(world_move("e1", {"a": 0.1}, {"a": 0.2}))
    await rig.feed.send(rig.t.allocations, "default", b"garbage")
    await rig.planned(1)
    await rig.dlq.count(1)
    status, body = await http_get(port, "/metrics")
    assert status == 200
    metrics = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }
    assert metrics["rebalancer_events_consumed_total"] == 2
    assert metrics["rebalancer_events_planned_total"] == 1
    dead = f'rebalancer_events_dead_lettered_total{{topic="{rig.t.allocations}"}}'
    assert metrics[dead] == 1
    assert metrics["rebalancer_intents_published_total"] == 1
    assert metrics["rebalancer_snapshots_applied_total"] == 1
    assert metrics["rebalancer_plan_latency_seconds_count"] == 1
    assert metrics["rebalancer_ready"] == 1
    assert "rebalancer_consumer_lag" in body
    assert (await http_get(port, "/nope"))[0] == 404


async def test_demo_runs_the_scenario_end_to_end() -> None:
    out = io.StringIO()
    assert await run_demo(out) == 0  # no traded key away from its target
    text = out.getvalue()
    assert "loop closed: every position is at its target" in text
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ \(sign in with the demo's", text)
    assert "[okx] order alpha:SOLUSDT -66.6 reduce-only" in text
    assert "snapshot beta/momentum reached plan" in text
    assert text.count(" reached\n") == 2  # both plans
    assert "alpha  binance:BTCUSDT  adjust      0.9 -> 0.6      delta -0.3 reduce-only" in text
    assert "[carry +0.1, trend -0.4]" in text
    assert "beta   binance:BTCUSDT  adjust      0.5 -> 0.375    delta -0.125" in text


async def test_cloudevents_envelopes_are_planned_and_a_bad_one_dead_lettered(rig: Rig) -> None:
    await rig.snapshots(snapshot("a", "s1", [btc(1.0)]), snapshot("b", "s1", [btc(2.0)]))
    attributes = {"specversion": "1.0", "source": "qmtl/controlbus"}
    structured = {
        **attributes,
        "id": "ce-1",
        "type": "world_allocations_changed",
        "time": "2026-12-02T10:00:00Z",
        "data": {
            "total_equity": 1_000_000.0,
            "world_alloc_after": {"a": 0.1},
            "world_alloc_before": {"a": 0.2},
        },
    }
    await rig.feed.send(rig.t.allocations, "default", structured)
    binary = world_move("ce-2", {"b": 0.3}, {"b": 0.2})
    del binary["type"]
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"ce-2"),
        ("ce_source", b"qmtl/controlbus"),
        ("ce_type", b"world_allocations_changed"),
    ]
    await rig.feed.producer.send_and_wait(
        rig.t.allocations, orjson.dumps(binary), key=b"default", headers=headers
    )
    await rig.feed.send(rig.t.allocations, "default", {**structured, "specversion": "0.3"})
    plans = {p["event_id"]: p for p in await rig.planned(2)}
    assert plans["ce-1"]["occurred_at"] == 1_796_205_600_000
    assert [d["delta_qty"] for d in plans["ce-1"]["per_world"]["a"]["deltas"]] == [-0.5]
    assert [d["delta_qty"] for d in plans["ce-2"]["per_world"]["b"]["deltas"]] == [1.0]
    (letter,) = await rig.dlq.count(1)
    assert letter["error_message"] == "cloudevents: specversion '0.3' is not 1.0"
