"""A real broker for tests, and small clients to feed and read topics with deadlines.

The broker is ``KAFKA_BOOTSTRAP_SERVERS`` if set, else the one ``REBALANCER_TEST_BROKER``
names: ``tansu`` (the default: the embedded broker, on a machine with only Python) or
``kafka`` (Apache Kafka through ``deploy/kafka/run``: Java and Maven needed).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consumers.clients import KafkaClients, clients_of, partitions_of
from consumers.embedded_broker import EmbeddedBroker
from service.settings import Settings, Topics
from tests.brokers import ApacheKafka

BROKERS = ("tansu", "kafka")


def broker_name() -> str:
    """The broker the tests run on: ``tansu`` or ``kafka``."""
    name = os.environ.get("REBALANCER_TEST_BROKER", "tansu")
    if name not in BROKERS:
        raise RuntimeError(f"REBALANCER_TEST_BROKER: expected tansu or kafka, got {name!r}")
    return name


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """Bootstrap servers of a broker that lives as long as the context."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if broker_name() == "kafka":
        with ApacheKafka() as kafka:
            yield kafka.bootstrap_servers
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


async def allow_large_messages(servers: str, *topics: str, max_bytes: int = 16 << 20) -> None:
    """Let ``topics`` take records up to ``max_bytes`` (Apache Kafka refuses more than about
    1 MB by default; the embedded broker has no such limit and no call to change it)."""
    clients = KafkaClients(servers)
    if not (await clients.connect()).full_kafka:
        return
    admin = clients.admin()
    await admin.start()
    try:
        await admin.alter_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, t, {"max.message.bytes": str(max_bytes)})
                for t in topics
            ]
        )
    finally:
        await admin.close()


def fresh_settings(bootstrap_servers: str, **overrides: Any) -> Settings:
    """Settings with topics and group of their own, so tests sharing a broker do not meet."""
    tag = uuid.uuid4().hex[:8]
    topics = Topics(
        snapshots=f"snapshots-{tag}",
        allocations=f"allocations-{tag}",
        intents=f"intents-{tag}",
        plans=f"plans-{tag}",
        dead_letters=f"dlq-{tag}",
        changelog=f"state-{tag}",
        nodes=f"nodes-{tag}",
        notifications=f"notifications-{tag}",
    )
    base: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "topics": topics,
        "group_id": f"rebalancer-{tag}",
        "http_port": 0,
        "release_check_interval_ms": 100,
        "execution": {"http_port": 0},
    }
    return Settings.model_validate({**base, **overrides})


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that give a subprocess these settings."""
    env = {
        "REBALANCER_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "REBALANCER_GROUP_ID": settings.group_id,
        "REBALANCER_HTTP_PORT": str(settings.http_port),
        "REBALANCER_RELEASE_CHECK_INTERVAL_MS": str(settings.release_check_interval_ms),
        "REBALANCER_PLAN_SETTLE_TIMEOUT_MS": str(settings.plan_settle_timeout_ms),
        "REBALANCER_PLANNER": settings.planner.model_dump_json(),
        "REBALANCER_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "REBALANCER_TOPIC_REPLICATION": str(settings.topic_replication),
        "REBALANCER_PROCESSING_GUARANTEE": settings.processing_guarantee,
    }
    if settings.topic_min_insync_replicas is not None:
        env["REBALANCER_TOPIC_MIN_INSYNC_REPLICAS"] = str(settings.topic_min_insync_replicas)
    env["REBALANCER_EXECUTION"] = settings.execution.model_dump_json()
    for name, value in settings.topics.model_dump().items():
        env[f"REBALANCER_TOPICS__{name.upper()}"] = value
    if settings.max_snapshot_age_ms is not None:
        env["REBALANCER_MAX_SNAPSHOT_AGE_MS"] = str(settings.max_snapshot_age_ms)
    return env


class Feed:
    """Publishes test input (JSON values) to topics and waits for the acknowledgement."""

    def __init__(self, servers: str | KafkaClients) -> None:
        self.producer = clients_of(servers).producer(enable_idempotence=False, acks="all")

    async def __aenter__(self) -> Feed:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, topic: str, key: str | None, value: Any) -> None:
        raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
        await self.producer.send_and_wait(
            topic, key=None if key is None else key.encode(), value=raw
        )

    async def snapshot(self, topic: str, snapshot: dict[str, Any]) -> None:
        await self.send(topic, f"{snapshot['world_id']}|{snapshot['strategy_id']}", snapshot)

    async def event(self, topic: str, event: dict[str, Any]) -> None:
        await self.send(topic, event.get("portfolio_id", "default"), event)


class Tail:
    """Reads a topic from the beginning, collecting decoded values, until a condition holds."""

    def __init__(
        self, servers: str | KafkaClients, topic: str, isolation_level: str | None = None
    ) -> None:
        self.topic = topic
        clients = clients_of(servers)
        self.consumer = clients.consumer(
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            group_id=None,
            fetch_max_wait_ms=50,
            isolation_level=isolation_level or clients.isolation_level,
        )
        self.records: list[Any] = []
        self.keys: list[bytes | None] = []
        self.raw: list[bytes | None] = []
        """The values as published (bytes), beside ``records``."""

    async def __aenter__(self) -> Tail:
        await self.consumer.start()
        parts = [
            TopicPartition(self.topic, p)
            for p in await partitions_of(self.consumer, self.topic, timeout=20)
        ]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def until(
        self, condition: Callable[[list[Any]], bool], timeout: float = 30.0
    ) -> list[Any]:
        """Poll until ``condition(records)``; fail with what arrived if the deadline passes."""
        deadline = time.monotonic() + timeout
        while not condition(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.topic}: condition not met in {timeout}s; got {len(self.records)} "
                    f"records: {self.records[-5:]}"
                )
            batch = await self.consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for r in records:
                    self.keys.append(r.key)
                    self.raw.append(r.value)
                    self.records.append(None if r.value is None else orjson.loads(r.value))
        return self.records

    async def count(self, n: int, timeout: float = 30.0) -> list[Any]:
        return await self.until(lambda rs: len(rs) >= n, timeout)

    async def quiet(self, seconds: float = 0.5) -> list[Any]:
        """Read for ``seconds`` more, to see that nothing else arrives."""
        end = time.monotonic() + seconds
        with contextlib.suppress(AssertionError):
            await self.until(lambda _: time.monotonic() > end, seconds + 1)
        return self.records
