"""Hostile input against the running service on a real broker: each message that once stopped
the service, lost its state or published a wrong intent (issue 11, cases 1-8)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from service.app import RebalancerApp
from service.settings import Settings
from service.state.allocations import ChangelogError
from tests.kafka_support import Feed, Tail, allow_large_messages, fresh_settings
from tests.process_support import ServiceProcess
from tests.stream.test_stream_service import Rig, btc, rig, service, snapshot, world_move

__all__ = ["rig", "service"]  # the fixtures, shared with the stream service's tests

EPOCH_MS_BEYOND_64_BITS = 18446744073709551616


def event_bytes(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "type": "world_allocations_changed",
        "portfolio_id": "default",
        "occurred_at": 1_000,
        "total_equity": 1_000_000.0,
    }
    return orjson.dumps({**base, **fields})


def alive(app: RebalancerApp) -> bool:
    return bool(app._tasks) and not any(task.done() for task in app._tasks)


async def started(settings: Settings) -> RebalancerApp:
    app = RebalancerApp(settings)
    await app.start()
    return app


@pytest.fixture
def settings(bootstrap_servers: str) -> Settings:
    return fresh_settings(bootstrap_servers)


async def test_case1_an_event_time_beyond_64_bits_is_dead_lettered_and_consuming_goes_on(
    rig: Rig,
) -> None:
    await rig.snapshots(snapshot("alpha", "s1", [btc(1.0)]))
    raw = (
        b'{"type":"world_allocations_changed","event_id":"t-occ","portfolio_id":"default",'
        b'"occurred_at":18446744073709551616,"total_equity":1000000.0,'
        b'"world_alloc_after":{"alpha":0.29},"world_alloc_before":{"alpha":0.3}}'
    )
    await rig.feed.send(rig.t.allocations, "default", raw)
    await rig.event(world_move("good", {"alpha": 0.29}, {"alpha": 0.3}))
    (letter,) = await rig.dlq.count(1)
    assert letter["error_message"].startswith("occurred_at: Input should be less than or equal")
    assert base64.b64decode(letter["value_b64"]) == raw
    (plan,) = await rig.planned(1)
    assert plan["event_id"] == "good"
    assert alive(rig.app)


async def test_case2_an_equity_below_the_notional_is_refused_before_anything_is_published(
    settings: Settings,
) -> None:
    servers, t = settings.bootstrap_servers or "", settings.topics
    app = await started(settings)
    try:
        async with (
            Feed(servers) as feed,
            Tail(servers, t.plans) as plans,
            Tail(servers, t.dead_letters) as dlq,
            Tail(servers, t.intents) as intents,
        ):
            await feed.snapshot(t.snapshots, snapshot("alpha", "s1", [btc(1.0)]))  # 60,000
            await app.snapshot_reader.caught_up()
            poor = world_move("t-eq", {"alpha": 0.29}, {"alpha": 0.3}, total_equity=30_000.0)
            await feed.event(t.allocations, poor)
            (letter,) = await dlq.count(1)
            assert letter["error_message"] == (
                "world 'alpha': the new state would be invalid (strategy weights are fractions "
                "of total_equity: a weight above 1 derived from the snapshots means the "
                "strategies hold more than total_equity): strategy_alloc.s1: Input should be "
                "less than or equal to 1 (got 1.9333333333333333)"
            )
            await feed.event(t.allocations, world_move("ok", {"alpha": 0.29}, {"alpha": 0.3}))
            (plan,) = await plans.count(1)
            assert plan["event_id"] == "ok"
            assert {i["plan_id"] for i in await intents.count(1)} == {plan["plan_id"]}
            assert alive(app)
            reached = snapshot(
                "alpha", "s1", [btc(0.29 / 0.3)], as_of=2_000, converged_plan_id=plan["plan_id"]
            )
            await feed.snapshot(t.snapshots, reached)
    finally:
        await app.stop()
    # a restart restores the world: a move without a before is planned from the state
    app = await started(settings)
    try:
        assert app.state.world("default", "alpha").alloc == 0.29
        async with Feed(servers) as feed, Tail(servers, t.plans) as plans:
            await feed.event(t.allocations, world_move("next", {"alpha": 0.2}))
            records = await plans.until(lambda rs: any(r["event_id"] == "next" for r in rs))
            assert records[-1]["status"] == "planned"
            assert records[-1]["per_world"]["alpha"]["alloc_before"] == 0.29
    finally:
        await app.stop()


async def test_case2_a_snapshot_quantity_beyond_the_bound_is_dead_lettered(rig: Rig) -> None:
    await rig.feed.send(
        rig.t.snapshots,
        "alpha|s1",
        b'{"world_id":"alpha","strategy_id":"s1","as_of":1000,'
        b'"positions":[{"symbol":"BTCUSDT","qty":1e308,"mark":60000.0}]}',
    )
    (letter,) = await rig.dlq.count(1)
    assert (
        "positions.0.qty: Input should be less than or equal to 1000000000000000"
        in (letter["error_message"])
    )
    assert len(rig.app.snapshots) == 0


async def test_case3_a_denormal_lot_size_is_dead_lettered_and_publishes_nothing(rig: Rig) -> None:
    await rig.snapshots(snapshot("alpha", "s1", [btc(1.0)]))
    await rig.event(
        world_move(
            "tiny-lot", {"alpha": 0.2}, {"alpha": 0.3}, lot_size_by_symbol={"BTCUSDT": 5e-324}
        )
    )
    (letter,) = await rig.dlq.count(1)
    assert letter["error_message"] == (
        "lot_size_by_symbol.BTCUSDT: Input should be a lot size of at least 1e-12 (got 5e-324)"
    )
    await rig.intents.quiet(0.5)
    assert rig.intents.records == []
    assert rig.plans.records == []


async def test_case4_a_held_change_is_planned_with_its_events_options(rig: Rig) -> None:
    options = {"lot_size_by_symbol": {"BTCUSDT": 0.001}, "min_trade_notional": 10.0}
    await rig.snapshots(snapshot("alpha", "s1", [btc(0.16)]))
    await rig.event(world_move("e1", {"alpha": 0.2}, {"alpha": 0.3}, **options))
    (first,) = await rig.planned(1)
    assert first["options"]["min_trade_notional"] == 10.0
    await rig.event(world_move("e2", {"alpha": 0.1}, **options))
    await rig.plans.until(lambda rs: any(r["status"] == "held" for r in rs))
    # the node reaches e1's plan on a position off the lot grid
    await rig.snapshots(
        snapshot("alpha", "s1", [btc(0.1066667)], as_of=2_000, converged_plan_id=first["plan_id"])
    )
    (_, released) = await rig.planned(2)
    assert released["coalesced_event_ids"] == ["e2"]
    assert released["options"]["min_trade_notional"] == 10.0
    (delta,) = released["per_world"]["alpha"]["deltas"]
    assert delta["delta_qty"] == -0.053  # 0.1066667 halved is -0.05333335: whole lots of 0.001


def bad_snapshot(i: int) -> bytes:
    return orjson.dumps(
        {"world_id": "w", "strategy_id": f"s{i}", "as_of": 1_000, "positions": [{"qty": 1}]}
    )


async def test_case5_a_restart_does_not_dead_letter_the_snapshot_topic_again(
    settings: Settings,
) -> None:
    servers, t = settings.bootstrap_servers or "", settings.topics
    async with Feed(servers) as feed:
        for i in range(40):
            await feed.send(t.snapshots, f"w|s{i}", bad_snapshot(i))
        await feed.snapshot(t.snapshots, snapshot("w", "ok", [btc(1.0)]))
    app = await started(settings)
    try:
        async with Tail(servers, t.dead_letters) as dlq:
            await dlq.count(40)
    finally:
        await app.stop()
    app = await started(settings)
    try:
        assert len(app.snapshots) == 1
        async with Feed(servers) as feed, Tail(servers, t.dead_letters) as dlq:
            await dlq.count(40)
            await feed.send(t.snapshots, "w|s99", bad_snapshot(99))  # a new one still goes
            letters = await dlq.count(41)
            await dlq.quiet(1.0)
            assert len(dlq.records) == 41
            offsets = [(d["partition"], d["offset"]) for d in letters]
            assert len(set(offsets)) == 41
    finally:
        await app.stop()


async def test_case6_snapshots_dated_in_the_future_are_dead_lettered(rig: Rig) -> None:
    now = rig.app.clock()
    for as_of, seq in (
        (9223372036854775807, None),
        (now + 86_400_000, None),  # a day ahead: within the bound, beyond the clock skew
        (10**400, None),
        (now, 10**400),
    ):
        value = snapshot("alpha", "s1", [btc(1.0)], as_of=0)
        raw = orjson.dumps(value).replace(b'"as_of":0', f'"as_of":{as_of}'.encode())
        if seq is not None:
            raw = raw.replace(b"{", f'{{"seq":{seq},'.encode(), 1)
        await rig.feed.send(rig.t.snapshots, "alpha|s1", raw)
    letters = await rig.dlq.count(4)
    reasons = [d["error_message"] for d in letters]
    assert reasons[0].startswith("as_of: Input should be less than or equal to 253402300799999")
    assert "beyond the allowed clock skew of 60000 ms" in reasons[1]
    assert reasons[2].startswith("as_of: ")
    assert reasons[3].startswith("seq: ")
    assert len(rig.app.snapshots) == 0
    # a real snapshot of that strategy is not stale
    await rig.snapshots(snapshot("alpha", "s1", [btc(1.0)], as_of=now))
    held = rig.app.snapshots.get("alpha", "s1")
    assert held is not None
    assert held.as_of == now


async def test_case7_contract_gaps_are_closed(rig: Rig) -> None:
    await rig.snapshots(snapshot("alpha", "s1", [btc(1.0)]))
    foreign = world_move("keyed-elsewhere", {"alpha": 0.2}, {"alpha": 0.3})
    await rig.feed.send(rig.t.allocations, "other", foreign)
    await rig.feed.send(
        rig.t.allocations, None, world_move("no-key", {"alpha": 0.2}, {"alpha": 0.3})
    )
    for event_id in ("del\u007f", "nel\u0085", "ls\u2028"):
        await rig.event(world_move(event_id, {"alpha": 0.2}, {"alpha": 0.3}))
    await rig.feed.send(
        rig.t.allocations,
        "default",
        event_bytes(
            schema_version=1.0,
            event_id="v1.0",
            world_alloc_after={"alpha": 0.2},
            world_alloc_before={"alpha": 0.3},
        ),
    )
    bad_world = snapshot("a\u0085b", "s1", [btc(1.0)])
    await rig.feed.send(rig.t.snapshots, None, bad_world)
    letters = await rig.dlq.count(7)
    reasons = sorted(d["error_message"] for d in letters)
    assert sum("must be keyed by their portfolio_id 'default'" in r for r in reasons) == 2
    assert sum(r.startswith("event_id: String should match pattern") for r in reasons) == 3
    assert sum(r == "schema_version: Input should be the integer 1 (got 1.0)" for r in reasons) == 1
    assert sum(r.startswith("world_id: String should match pattern") for r in reasons) == 1
    await rig.plans.quiet(0.5)
    assert rig.plans.records == []


async def test_case8_a_dead_letter_keeps_a_truncated_copy_with_size_and_hash(rig: Rig) -> None:
    big = b'{"world_id":"w","strategy_id":"s","as_of":1,"positions":[' + b" " * 6_000_000 + b"]"
    await allow_large_messages(rig.settings.bootstrap_servers or "", rig.t.snapshots)
    producer = AIOKafkaProducer(
        bootstrap_servers=rig.settings.bootstrap_servers,
        enable_idempotence=False,
        max_request_size=16 * 1024 * 1024,
    )
    await producer.start()
    try:
        await producer.send_and_wait(rig.t.snapshots, key=b"w|s", value=big)
    finally:
        await producer.stop()
    (letter,) = await rig.dlq.count(1)
    assert letter["truncated"] is True
    assert letter["value_size"] == len(big)
    assert letter["value_sha256"] == hashlib.sha256(big).hexdigest()
    kept = base64.b64decode(letter["value_b64"])
    assert kept == big[: len(kept)]
    assert len(kept) == rig.settings.dead_letter_max_bytes
    assert len(orjson.dumps(letter)) < 1_000_000  # Apache Kafka's default message size
    assert letter["error_message"]


async def test_an_unreadable_state_record_stops_the_service_naming_it(
    settings: Settings, tmp_path: Path
) -> None:
    servers, t = settings.bootstrap_servers or "", settings.topics
    async with Feed(servers) as feed:
        bad = {"portfolio_id": "default", "world_id": "alpha", "alloc": 2.0}
        await feed.send(t.changelog, "world|default|alpha", bad)
    app = RebalancerApp(settings)
    with pytest.raises(ChangelogError, match=r"b'world\|default\|alpha': alloc: Input should be"):
        await app.start()
    await app.stop()
    process = ServiceProcess(settings, tmp_path / "service.log")
    try:
        assert await process.exited() == 3
        assert "error: the service state cannot be restored: " in process.output()
        assert "b'world|default|alpha': alloc: Input should be less than or equal to 1" in (
            process.output()
        )
    finally:
        process.stop()


async def test_two_instances_dead_letter_each_bad_snapshot_once(settings: Settings) -> None:
    servers, t = settings.bootstrap_servers or "", settings.topics
    first = await started(settings)
    second = await started(settings)
    try:
        async with Feed(servers) as feed, Tail(servers, t.dead_letters) as dlq:
            for i in range(12):
                await feed.send(t.snapshots, f"w|s{i}", bad_snapshot(i))
            await dlq.count(12)
            await dlq.until(
                lambda _: bool(
                    first.ownership.has_partitions() and second.ownership.has_partitions()
                )
            )
            for i in range(12, 24):  # after both own partitions
                await feed.send(t.snapshots, f"w|s{i}", bad_snapshot(i))
            letters = await dlq.count(24)
            await dlq.quiet(2.0)
            assert len(dlq.records) == 24
            assert len({(d["partition"], d["offset"]) for d in letters}) == 24
    finally:
        await second.stop()
        await first.stop()
