"""A plan larger than the state topic takes (Apache Kafka: the embedded broker has no record
size limit). Its write-ahead is the first thing written, so nothing of it is published: its
event is dead-lettered saying why, a held change stays held until the topic takes it, and the
service goes on with the next event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from consumers.clients import KafkaClients
from consumers.topics import LARGE_RECORDS, ensure_topics, undersized_topics
from service.app import RebalancerApp
from service.settings import Settings
from tests.kafka_support import Feed, Tail, allow_large_messages, fresh_settings
from tests.stream.test_stream_service import snapshot, world_move

pytestmark = pytest.mark.kafka_only

SMALL_LIMIT = 30_000
"""The state topic's limit while plans of the wide world do not fit (its write-ahead is some
70 kB, uncompressed: the service's compression is off here)."""


async def state_topic_takes(settings: Settings, limit: int) -> None:
    """Set the state topic's ``max.message.bytes`` and wait until the broker says so."""
    servers = settings.bootstrap_servers or ""
    await allow_large_messages(servers, settings.topics.changelog, max_bytes=limit)
    clients = KafkaClients(servers)
    await clients.connect()
    deadline = time.monotonic() + 30
    while True:
        said = await undersized_topics(settings, clients)
        if (limit >= int(LARGE_RECORDS)) == (not said):
            return
        assert time.monotonic() < deadline, f"the broker still says {said}"
        await asyncio.sleep(0.05)


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not in {timeout}s: {what}"
        await asyncio.sleep(0.05)


def wide_world() -> list[dict[str, Any]]:
    """30 strategies x 40 symbols: each of its plans has 40 keys of 30 strategies each."""
    positions = [
        {"venue": "v", "symbol": f"S{i:02d}", "qty": 1.0, "mark": 100.0 + i} for i in range(40)
    ]
    return [snapshot("wide", f"s{k:02d}", positions) for k in range(30)]


async def test_a_plan_the_state_topic_refuses_is_dead_lettered_or_kept_held(
    bootstrap_servers: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fresh_settings(
        bootstrap_servers,
        compression="none",
        plan_settle_timeout_ms=1_000,
        release_check_interval_ms=100,
    )
    t = settings.topics
    await ensure_topics(settings, bootstrap_servers)
    await state_topic_takes(settings, SMALL_LIMIT)
    caplog.set_level(logging.WARNING, logger="rebalancer")
    app = RebalancerApp(settings)
    await app.start()
    try:
        said = [r.getMessage() for r in caplog.records]
        assert f"topic {t.changelog} takes records up to {SMALL_LIMIT} bytes" in "\n".join(said)
        async with (
            Feed(bootstrap_servers) as feed,
            Tail(bootstrap_servers, t.intents) as intents,
            Tail(bootstrap_servers, t.plans) as plans,
            Tail(bootstrap_servers, t.dead_letters) as dlq,
        ):
            narrow_position = {"venue": "v", "symbol": "X", "qty": 2.0, "mark": 50.0}
            for s in [*wide_world(), snapshot("narrow", "s1", [narrow_position])]:
                await feed.snapshot(t.snapshots, s)
            await app.snapshot_reader.caught_up()

            # events whose plan does not fit: dead-lettered, nothing of them published (two in
            # a row: after a refused batch the producer must still write to the state topic)
            await feed.event(t.allocations, world_move("too-wide", {"wide": 0.2}, {"wide": 0.3}))
            await feed.event(t.allocations, world_move("again", {"wide": 0.2}, {"wide": 0.3}))
            await feed.event(t.allocations, world_move("narrow", {"narrow": 0.2}, {"narrow": 0.3}))
            letters = await dlq.count(2)
            for letter in letters:
                reason = letter["error_message"]
                assert reason.startswith("its plan's write-ahead (")
                assert f"larger than the state topic {t.changelog} takes" in reason
                assert reason.endswith("nothing of the plan was published")
            assert [d["offset"] for d in letters] == [0, 1]
            records = await plans.until(lambda rs: any(r["event_id"] == "narrow" for r in rs))
            (narrow,) = [r for r in records if r["status"] == "planned"]
            await intents.count(1)
            await intents.quiet(0.5)
            assert {i["plan_id"] for i in intents.records} == {narrow["plan_id"]}
            assert not any(r["event_id"] in ("too-wide", "again") for r in plans.records)

            # the topic takes it: the wide world plans, and its plan is in flight
            await state_topic_takes(settings, int(LARGE_RECORDS))
            await feed.event(t.allocations, world_move("wide-1", {"wide": 0.2}, {"wide": 0.3}))
            await plans.until(
                lambda rs: any(r["event_id"] == "wide-1" and r["status"] == "planned" for r in rs)
            )

            # the topic takes less again: the next move waits for wide-1, then its release is
            # refused, and it stays held; the service goes on
            await state_topic_takes(settings, SMALL_LIMIT)
            caplog.clear()
            await feed.event(t.allocations, world_move("wide-2", {"wide": 0.25}, {"wide": 0.2}))
            await plans.until(
                lambda rs: any(r["event_id"] == "wide-2" and r["status"] == "held" for r in rs)
            )
            await until(
                lambda: any(
                    "kept held" in r.getMessage() and t.changelog in r.getMessage()
                    for r in caplog.records
                ),
                "the release refused and the change kept held",
            )
            assert all(not task.done() for task in app._tasks)
            assert len(dlq.records) == 2

            # once the topic takes it, the held change is planned
            await state_topic_takes(settings, int(LARGE_RECORDS))
            await plans.until(
                lambda rs: any(
                    r["status"] == "planned" and "wide-2" in r["coalesced_event_ids"] for r in rs
                )
            )
            assert len(dlq.records) == 2
    finally:
        await app.stop()
