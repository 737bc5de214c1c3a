"""The service as a process: killed at every step of the order of work, restarted, stopped by
signal, and run twice in one consumer group."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.clients import partitions_of
from consumers.unit_of_work import Step
from service.app import FAULT_STEPS
from service.settings import Settings
from tests.kafka_support import Feed, Tail, fresh_settings
from tests.process_support import ServiceProcess, http_get
from tests.stream.test_stream_service import btc, snapshot, world_move

EVENTS = [
    world_move("e1", {"a": 0.2}, {"a": 0.3}),
    world_move("e2", {"b": 0.1}, {"b": 0.2}, lot_size_by_symbol={"BTCUSDT": 0.01}),
    world_move("e3", {"c": 0.0}, {"c": 0.1}),
]
SNAPSHOTS = [
    snapshot("a", "s1", [btc(0.6)]),
    snapshot(
        "a", "s2", [btc(0.9), {"venue": "okx", "symbol": "ETHUSDT", "qty": 3.0, "mark": 3000.0}]
    ),
    snapshot("b", "t1", [btc(-1.0)]),
    snapshot("c", "u1", [btc(0.25)]),
]


async def seed(settings: Settings) -> None:
    async with Feed(settings.bootstrap_servers or "") as feed:
        for s in SNAPSHOTS:
            await feed.snapshot(settings.topics.snapshots, s)


async def send_events(settings: Settings, events: list[dict[str, Any]]) -> None:
    async with Feed(settings.bootstrap_servers or "") as feed:
        for e in events:
            await feed.event(settings.topics.allocations, e)


async def outputs(
    settings: Settings, n_plans: int, isolation_level: str | None = None
) -> tuple[list[Any], list[Any]]:
    """Plan records (status planned) until ``n_plans`` distinct events are planned, and every
    intent published so far (read with ``isolation_level``)."""
    servers = settings.bootstrap_servers or ""
    async with Tail(servers, settings.topics.plans, isolation_level) as plans:
        await plans.until(
            lambda rs: (
                len({e for r in rs if r["status"] == "planned" for e in r["coalesced_event_ids"]})
                >= n_plans
            ),
            timeout=90,
        )
        await plans.quiet(0.3)
    async with Tail(servers, settings.topics.intents, isolation_level) as intents:
        expected = {i for r in plans.records for i in r["intent_ids"]}
        await intents.until(lambda rs: expected <= {i["intent_id"] for i in rs})
        await intents.quiet(0.3)
    return [r for r in plans.records if r["status"] == "planned"], intents.records


def by_event(plans: list[Any]) -> dict[str, tuple[str, list[str]]]:
    return {p["event_id"]: (p["plan_id"], p["intent_ids"]) for p in plans}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reference(
    bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A crash-free run: the plan and intent ids every other run must reproduce."""
    settings = fresh_settings(bootstrap_servers)
    await seed(settings)
    service = ServiceProcess(settings, tmp_path_factory.mktemp("ref") / "service.log")
    try:
        await service.ready()
        await send_events(settings, EVENTS)
        plans, intents = await outputs(settings, len(EVENTS))
    finally:
        service.stop()
    return {"plans": by_event(plans), "intents": {i["intent_id"]: i for i in intents}}


def strip_time(intent: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in intent.items() if k not in {"created_at", "expires_at"}}


async def killed_at(step: str, settings: Settings, log: Path) -> ServiceProcess:
    """A service that kills itself at ``step`` of the first event's work (seeded, then sent
    ``EVENTS``), seen dead; then its successor on the same settings, ready."""
    await seed(settings)
    doomed = ServiceProcess(settings, log, REBALANCER_FAULT_KILL_AT=step)
    await doomed.ready()
    await send_events(settings, EVENTS)
    assert await doomed.exited() == -signal.SIGKILL
    assert f"killing this process at {step}" in doomed.output()
    survivor = ServiceProcess(settings, log)
    try:
        await survivor.ready()
    except BaseException:
        survivor.stop()
        raise
    return survivor


@pytest.mark.parametrize("step", FAULT_STEPS)
async def test_killed_at_each_step_restarts_with_the_same_plans(
    step: str, bootstrap_servers: str, reference: dict[str, Any], tmp_path: Path
) -> None:
    settings = fresh_settings(bootstrap_servers)
    survivor = await killed_at(step, settings, tmp_path / "service.log")
    try:
        plans, intents = await outputs(settings, len(EVENTS))
    finally:
        survivor.stop()
    # every event has exactly its plan, with the ids of the crash-free run
    assert by_event(plans) == reference["plans"]
    # every intent published is one of the reference's, identical but for its timestamps;
    # re-publication after the crash is allowed (at-least-once), with byte-identical copies
    ref_intents = reference["intents"]
    assert {i["intent_id"] for i in intents} == set(ref_intents)
    for intent in intents:
        assert strip_time(intent) == strip_time(ref_intents[intent["intent_id"]])
    copies: dict[str, list[dict[str, Any]]] = {}
    for intent in intents:
        copies.setdefault(intent["intent_id"], []).append(intent)
    assert all(all(c == group[0] for c in group) for group in copies.values())


EXACTLY_ONCE_STEPS = tuple(s for s in FAULT_STEPS if s != Step.AFTER_PENDING)
"""Where an exactly-once service can be killed: a transaction needs no write-ahead."""


@pytest.mark.kafka_only
@pytest.mark.parametrize("step", EXACTLY_ONCE_STEPS)
async def test_exactly_once_killed_at_each_step_publishes_each_intent_once(
    step: str, bootstrap_servers: str, reference: dict[str, Any], tmp_path: Path
) -> None:
    settings = fresh_settings(bootstrap_servers, processing_guarantee="exactly_once")
    survivor = await killed_at(step, settings, tmp_path / "service.log")
    try:
        plans, intents = await outputs(settings, len(EVENTS), "read_committed")
        # what the killed instance wrote is on the topic, uncommitted and then aborted
        async with Tail(bootstrap_servers, settings.topics.intents, "read_uncommitted") as raw:
            await raw.count(len(intents) + 1)
    finally:
        survivor.stop()
    assert "processing guarantee: exactly-once" in survivor.output()
    # every event has exactly one plan record, with the ids of the crash-free run
    assert len(plans) == len(EVENTS)
    assert by_event(plans) == reference["plans"]
    # and read_committed, every intent of the reference exactly once, identical but for time
    ref_intents = reference["intents"]
    assert sorted(i["intent_id"] for i in intents) == sorted(ref_intents)
    for intent in intents:
        assert strip_time(intent) == strip_time(ref_intents[intent["intent_id"]])


async def test_exactly_once_is_refused_by_the_embedded_broker(tmp_path: Path) -> None:
    # no bootstrap servers: the service starts its embedded broker, which has no transactions
    settings = fresh_settings("", processing_guarantee="exactly_once")
    service = ServiceProcess(settings, tmp_path / "service.log")
    assert await service.exited() == 4
    output = service.output()
    assert "error: cannot use the Kafka brokers: processing_guarantee = 'exactly_once' " in output
    assert "needs Kafka transactions" in output
    assert "Traceback" not in output


async def test_restart_restores_allocations_from_the_changelog(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = fresh_settings(bootstrap_servers)
    servers = settings.bootstrap_servers or ""
    await seed(settings)
    first = ServiceProcess(settings, tmp_path / "first.log")
    await first.ready()
    await send_events(settings, [world_move("m1", {"a": 0.2}, {"a": 0.3})])
    (plan,), _ = await outputs(settings, 1)
    first.proc.send_signal(signal.SIGTERM)
    assert await first.exited() == 0
    # positions reach plan m1; then a new move without 'before' must scale from 0.2
    async with Feed(servers) as feed:
        await feed.snapshot(
            settings.topics.snapshots,
            snapshot("a", "s1", [btc(0.4)], as_of=2_000, converged_plan_id=plan["plan_id"]),
        )
        await feed.snapshot(
            settings.topics.snapshots,
            snapshot(
                "a",
                "s2",
                [btc(0.6), {"venue": "okx", "symbol": "ETHUSDT", "qty": 2.0, "mark": 3000.0}],
                as_of=2_000,
                converged_plan_id=plan["plan_id"],
            ),
        )
    second = ServiceProcess(settings, tmp_path / "second.log")
    try:
        await second.ready()
        await send_events(settings, [world_move("m2", {"a": 0.1})])
        plans, _ = await outputs(settings, 2)
    finally:
        second.stop()
    m2 = next(p for p in plans if p["event_id"] == "m2")
    world = m2["per_world"]["a"]
    assert (world["alloc_before"], world["alloc_after"], world["scale_world"]) == (0.2, 0.1, 0.5)
    assert {(d["venue"], d["symbol"], d["delta_qty"]) for d in world["deltas"]} == {
        ("binance", "BTCUSDT", -0.5),
        ("okx", "ETHUSDT", -1.0),
    }
    assert sum(1 for p in plans if p["event_id"] == "m1") == 1  # m1 was committed: not redone


async def test_sigterm_finishes_commits_and_exits_zero(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = fresh_settings(bootstrap_servers)
    await seed(settings)
    service = ServiceProcess(settings, tmp_path / "service.log")
    await service.ready()
    assert (await http_get(service.port, "/healthz"))[0] == 200
    await send_events(settings, EVENTS)
    await outputs(settings, len(EVENTS))
    service.proc.send_signal(signal.SIGTERM)
    assert await service.exited() == 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=settings.group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, settings.topics.allocations)
        committed = 0
        for p in partitions:
            committed += (
                await consumer.committed(TopicPartition(settings.topics.allocations, p)) or 0
            )
    finally:
        await consumer.stop()
    assert committed == len(EVENTS)


async def test_two_instances_share_the_work_and_survive_losing_one(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = fresh_settings(bootstrap_servers, plan_settle_timeout_ms=1)
    servers = settings.bootstrap_servers or ""
    portfolios = [f"p{i}" for i in range(8)]
    async with Feed(servers) as feed:
        for p in portfolios:
            await feed.snapshot(settings.topics.snapshots, snapshot(f"{p}-w", "s", [btc(1.0)]))
    one = ServiceProcess(settings, tmp_path / "one.log")
    two = ServiceProcess(settings, tmp_path / "two.log")
    try:
        await one.ready()
        await two.ready()

        def events(round_: int) -> list[dict[str, Any]]:
            return [
                world_move(
                    f"{p}-r{round_}",
                    {f"{p}-w": 0.1 + 0.05 * round_},
                    {f"{p}-w": 0.1} if round_ == 0 else None,
                    portfolio_id=p,
                )
                for p in portfolios
            ]

        await send_events(settings, events(0))
        await outputs(settings, len(portfolios))
        one.proc.kill()  # SIGKILL mid-stream
        await send_events(settings, events(1) + events(2))
        plans, _ = await outputs(settings, 3 * len(portfolios))
    finally:
        one.stop()
        two.stop()
    planned = {e for p in plans for e in p["coalesced_event_ids"]}
    assert planned == {f"{p}-r{r}" for p in portfolios for r in range(3)}
    per_event = {}
    for p in plans:
        per_event.setdefault(p["event_id"], set()).add(p["plan_id"])
    assert all(len(ids) == 1 for ids in per_event.values())
