"""Apache Kafka failing under the service: the broker SIGKILLed mid-stream and restarted on its
data, and the partition leader of a three-node cluster SIGKILLed. The service runs as a real
process and must come through by itself: every allocation event sent gets exactly one plan
id (copies with the same id are allowed: at-least-once), and none is lost."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumers.clients import partitions_of
from service.settings import Settings
from tests.brokers import ApacheKafka
from tests.kafka_support import Tail, fresh_settings
from tests.process_support import ServiceProcess
from tests.stream.test_stream_service import btc, snapshot, world_move

pytestmark = pytest.mark.kafka_only

WORLDS = ("a", "b", "c", "d")
SNAPSHOTS = [snapshot(w, "s1", [btc(0.5 + i / 10)]) for i, w in enumerate(WORLDS)]


def events(n: int) -> list[dict[str, Any]]:
    """``n`` moves, round robin over the worlds, each from the world's last allocation to a
    new one."""
    current = dict.fromkeys(WORLDS, 0.1)
    out = []
    for i in range(n):
        world = WORLDS[i % len(WORLDS)]
        after = round(0.05 + (i % 7 + 1) / 50, 4)  # four worlds stay below 1 together
        if after == current[world]:
            after += 0.01
        out.append(world_move(f"e{i}", {world: after}, {world: current[world]}))
        current[world] = after
    return out


async def produce(servers: str, topic: str, records: list[tuple[bytes, dict[str, Any]]]) -> None:
    """Each record acknowledged by all in-sync replicas before the next is sent; a send the
    broker cannot take yet (restarting, electing a leader) is retried by the producer."""
    import orjson

    producer = AIOKafkaProducer(
        bootstrap_servers=servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=60_000,
        retry_backoff_ms=200,
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, orjson.dumps(value), key=key)
    finally:
        await producer.stop()


async def feed_events(settings: Settings, batch: list[dict[str, Any]], pause: float) -> None:
    for event in batch:
        await produce(
            settings.bootstrap_servers or "", settings.topics.allocations, [(b"default", event)]
        )
        await asyncio.sleep(pause)  # a stream, not a burst: the fault lands mid-stream


async def plans_of_every_event(settings: Settings, sent: list[str]) -> dict[str, set[str]]:
    """Plan ids per event id, read until every event sent has one."""
    async with Tail(settings.bootstrap_servers or "", settings.topics.plans) as plans:

        def covered(records: list[Any]) -> bool:
            seen = {
                e for r in records if r["status"] == "planned" for e in r["coalesced_event_ids"]
            }
            return set(sent) <= seen

        await plans.until(covered, timeout=240)
        await plans.quiet(1.0)
        ids: dict[str, set[str]] = {}
        for r in plans.records:
            if r["status"] == "planned":
                for e in r["coalesced_event_ids"]:
                    ids.setdefault(e, set()).add(r["plan_id"])
        return ids


async def every_event_planned_once(
    settings: Settings, service: ServiceProcess, stream: list[dict[str, Any]], fault: str
) -> None:
    """Each event sent has exactly one plan id, and the service is the one that was started
    (it came through the fault without stopping)."""
    plan_ids = await plans_of_every_event(settings, [e["event_id"] for e in stream])
    assert service.proc.poll() is None, f"the service stopped ({fault}):\n{service.output()}"
    one_each = {e: ids for e, ids in plan_ids.items() if len(ids) != 1}
    assert not one_each, f"events with more than one plan id ({fault}): {one_each}"
    assert set(plan_ids) == {e["event_id"] for e in stream}


async def leader_of(servers: str, topic: str, partition: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None)
    await consumer.start()
    try:
        await partitions_of(consumer, topic)
        leader = consumer._client.cluster.leader_for_partition(TopicPartition(topic, partition))
        assert leader is not None, f"{topic}/{partition} has no leader"
        assert leader >= 0, f"{topic}/{partition} has no leader"
        return int(leader)
    finally:
        await consumer.stop()


async def test_single_broker_killed_and_restarted_mid_stream(tmp_path: Path) -> None:
    kafka = ApacheKafka(1, data=tmp_path / "kafka").start()
    service: ServiceProcess | None = None
    try:
        settings = fresh_settings(kafka.bootstrap_servers, plan_settle_timeout_ms=1)
        await produce(
            kafka.bootstrap_servers,
            settings.topics.snapshots,
            [(f"{s['world_id']}|{s['strategy_id']}".encode(), s) for s in SNAPSHOTS],
        )
        service = ServiceProcess(settings, tmp_path / "service.log")
        await service.ready()
        stream = events(24)
        await feed_events(settings, stream[:8], pause=0.05)
        sending = asyncio.create_task(feed_events(settings, stream[8:], pause=0.2))
        await asyncio.sleep(0.3)
        kafka.kill_node(1)  # mid-stream: events in flight, the service mid-write
        assert kafka.wait_exited(60) == 1, kafka.log_tail()
        kafka = ApacheKafka(1, data=tmp_path / "kafka").start()  # same data, same port
        assert kafka.bootstrap_servers == settings.bootstrap_servers
        await asyncio.wait_for(sending, timeout=240)
        await every_event_planned_once(settings, service, stream, "broker restarted")
    finally:
        if service is not None:
            service.stop()
        kafka.stop()


async def test_partition_leader_of_a_three_node_cluster_killed_mid_stream(
    tmp_path: Path,
) -> None:
    kafka = ApacheKafka(3, data=tmp_path / "kafka", survive_node_loss=True).start()
    service: ServiceProcess | None = None
    try:
        settings = fresh_settings(
            kafka.bootstrap_servers,
            plan_settle_timeout_ms=1,
            topic_replication=3,
            topic_min_insync_replicas=2,
        )
        service = ServiceProcess(settings, tmp_path / "service.log")
        await service.ready()  # the service has created its topics: three replicas each
        await produce(
            kafka.bootstrap_servers,
            settings.topics.snapshots,
            [(f"{s['world_id']}|{s['strategy_id']}".encode(), s) for s in SNAPSHOTS],
        )
        stream = events(24)
        await feed_events(settings, stream[:8], pause=0.05)
        allocations = settings.topics.allocations
        leader = await leader_of(kafka.bootstrap_servers, allocations, partition_of_default(3))
        intent_leaders = [
            await leader_of(kafka.bootstrap_servers, settings.topics.intents, p) for p in range(3)
        ]
        sending = asyncio.create_task(feed_events(settings, stream[8:], pause=0.2))
        await asyncio.sleep(0.3)
        kafka.kill_node(leader)
        await asyncio.wait_for(sending, timeout=240)
        await every_event_planned_once(
            settings, service, stream, f"node {leader} killed, intent leaders {intent_leaders}"
        )
    finally:
        if service is not None:
            service.stop()
        with contextlib.suppress(Exception):
            kafka.stop()


def partition_of_default(partitions: int) -> int:
    from consumers.ownership import partition_of

    return partition_of(b"default", partitions)
