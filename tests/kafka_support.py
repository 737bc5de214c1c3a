"""A real broker for tests, and small clients to feed and read topics with deadlines.

The broker is, in order: ``KAFKA_BOOTSTRAP_SERVERS`` if set, testcontainers' Kafka if a Docker
daemon answers, else the embedded Tansu broker on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumers.embedded_broker import EmbeddedBroker
from service.settings import Settings, Topics


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """Bootstrap servers of a broker that lives as long as the context."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


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
    )
    base: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "topics": topics,
        "group_id": f"rebalancer-{tag}",
        "http_port": 0,
        "release_check_interval_ms": 100,
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
    }
    for name, value in settings.topics.model_dump().items():
        env[f"REBALANCER_TOPICS__{name.upper()}"] = value
    if settings.max_snapshot_age_ms is not None:
        env["REBALANCER_MAX_SNAPSHOT_AGE_MS"] = str(settings.max_snapshot_age_ms)
    return env


class Feed:
    """Publishes test input (JSON values) to topics and waits for the acknowledgement."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, enable_idempotence=False, acks="all"
        )

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

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            group_id=None,
            fetch_max_wait_ms=50,
        )
        self.records: list[Any] = []
        self.keys: list[bytes | None] = []

    async def __aenter__(self) -> Tail:
        await self.consumer.start()
        deadline = time.monotonic() + 20
        while not self.consumer.partitions_for_topic(self.topic):
            await self.consumer.topics()
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {self.topic} never appeared")
            await asyncio.sleep(0.05)
        parts = [
            TopicPartition(self.topic, p) for p in self.consumer.partitions_for_topic(self.topic)
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
