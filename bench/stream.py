"""Benchmark of the stream service on the embedded broker (issue: the stream service).

Run from the README's venv:  .venv/bin/python bench/stream.py [--quick]

(a) Snapshot ingest: N snapshots (5 positions each) are on the snapshot topic; a raw aiokafka
    consumer reads them all (assign, seek to beginning, getmany to the high watermark), then
    the service's reader restores the snapshot table from the same messages (decode, validate,
    apply). Reported as messages/s and the ratio service / raw (target >= 0.5).
(b) Latency from publishing an allocation event to receiving the last of its intents, for one
    world of 10,000 positions (50 strategies x 200 symbols), with the service running as its
    own process. Each event moves the world back and forth; the settle timeout is 1 ms so a
    new change never waits for the previous plan. Measured twice: with events arriving every
    100 ms (open loop: each finds the service idle, as allocation changes do), and back to
    back (closed loop: each waits behind the previous plan's record and state writes).
    Target: p50 <= 20 ms, p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from consumers.embedded_broker import EmbeddedBroker, free_port
from consumers.reader import TopicReader
from consumers.topics import ensure_topics
from service.app import RebalancerApp
from service.runtime import tune_allocator
from service.settings import Settings, Topics

tune_allocator()  # as the service does at start-up

ROUNDS = 7
PACE_MS = 100


def settings_for(servers: str, **overrides: object) -> Settings:
    overrides.setdefault("http_port", free_port())
    tag = uuid.uuid4().hex[:6]
    topics = Topics(
        snapshots=f"snap-{tag}",
        allocations=f"alloc-{tag}",
        intents=f"int-{tag}",
        plans=f"plans-{tag}",
        dead_letters=f"dlq-{tag}",
        changelog=f"state-{tag}",
    )
    return Settings.model_validate(
        {"bootstrap_servers": servers, "topics": topics, "group_id": f"g-{tag}", **overrides}
    )


def snapshot(world: str, strategy: str, symbols: list[str], as_of: int) -> bytes:
    return orjson.dumps(
        {
            "world_id": world,
            "strategy_id": strategy,
            "as_of": as_of,
            "positions": [
                {"venue": "binance", "symbol": s, "qty": 1.5, "mark": 100.0 + i}
                for i, s in enumerate(symbols)
            ],
        }
    )


async def produce(servers: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, enable_idempotence=False, linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_read(servers: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        count = 0
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=5_000)
            count += sum(len(v) for v in batch.values())
            done = True
            for tp in parts:
                high = consumer.highwater(tp)
                if high is None or await consumer.position(tp) < high:
                    done = False
            if done:
                return count
    finally:
        await consumer.stop()


async def bench_ingest(servers: str, n: int) -> None:
    settings = settings_for(servers)
    await ensure_topics(settings, servers)
    topic = settings.topics.snapshots
    symbols = [f"SYM{i}" for i in range(5)]
    items = [
        (f"w{i % 10}|s{i}".encode(), snapshot(f"w{i % 10}", f"s{i}", symbols, 1_000 + i))
        for i in range(n)
    ]
    await produce(servers, topic, items)
    raw_rates, ours_rates, ratios = [], [], []
    for _ in range(ROUNDS):
        gc.collect()  # each round starts from the same heap, whatever the last one left
        start = time.perf_counter()
        count = await raw_read(servers, topic)
        raw_rates.append(count / (time.perf_counter() - start))
        app = RebalancerApp(settings)  # not started: only its snapshot handler is used
        table = app.snapshots
        gc.collect()
        start = time.perf_counter()
        reader = TopicReader(servers, topic, app._on_snapshots, client_id="bench")
        await reader.start()
        await reader.restore()
        ours_rates.append(len(table) / (time.perf_counter() - start))
        ratios.append(ours_rates[-1] / raw_rates[-1])
        await reader.stop()
        assert len(table) == n == count
        del app, table, reader
    raw, ours = statistics.median(raw_rates), statistics.median(ours_rates)
    print(f"## (a) Snapshot ingest, {n:,} snapshots of 5 positions\n")
    print(f"| reader | messages/s (median of {ROUNDS}) |")
    print("|---|---:|")
    print(f"| raw aiokafka consumer (bytes only) | {raw:,.0f} |")
    print(f"| service snapshot handler (decode, validate, apply, count) | {ours:,.0f} |")
    spread = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"\nratio service / raw: **{ours / raw:.2f}** (target >= 0.5)")
    print(f"per-round ratios, in order (each pair run back to back): {spread}\n")


async def bench_latency(servers: str, rounds: int) -> None:
    settings = settings_for(servers, plan_settle_timeout_ms=1, release_check_interval_ms=50)
    await ensure_topics(settings, servers)
    t = settings.topics
    symbols = [f"SYM{i:03d}" for i in range(200)]
    snaps = [
        (f"big|s{i:02d}".encode(), snapshot("big", f"s{i:02d}", symbols, 1_000)) for i in range(50)
    ]
    await produce(servers, t.snapshots, snaps)
    service = start_service(settings)
    consumer, producer = await clients(servers)
    try:
        await wait_ready(service, settings)
        parts = [
            TopicPartition(t.intents, p) for p in consumer.partitions_for_topic(t.intents) or []
        ]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)  # empty topic: the end is 0 on every broker
        allocs = [0.3, 0.2]
        serial = 0

        async def one_event() -> float:
            """Publish the next move; ms until the last of its intents is read back."""
            nonlocal serial
            r = serial
            serial += 1
            before, after = allocs[r % 2], allocs[(r + 1) % 2]
            event = {
                "type": "world_allocations_changed",
                "event_id": f"lat-{r}",
                "occurred_at": 1_000 + r,
                "total_equity": 1e7,
                "world_alloc_after": {"big": after},
                "world_alloc_before": {"big": before},
            }
            marker = f'"event_id":"lat-{r}"'.encode()
            start = time.perf_counter()
            await producer.send_and_wait(t.allocations, key=b"default", value=orjson.dumps(event))
            received = 0
            while received < len(symbols):  # one intent per symbol of the world
                batch = await consumer.getmany(timeout_ms=5_000)
                if not batch:
                    raise RuntimeError(f"event {r}: no intents in 5 s")
                for records in batch.values():
                    received += sum(1 for rec in records if marker in rec.value)
            return (time.perf_counter() - start) * 1e3

        for _ in range(3):  # warm-up, not counted
            await one_event()
        paced, back_to_back = [], []
        loop = asyncio.get_running_loop()
        for _ in range(rounds):
            # open loop: an event every PACE_MS, so each finds the service idle
            due = loop.time() + PACE_MS / 1000
            paced.append(await one_event())
            await asyncio.sleep(max(0.0, due - loop.time()))
        for _ in range(rounds):
            # closed loop: the next event as soon as the last intent is read, while the
            # service is still writing the previous plan's record and state
            back_to_back.append(await one_event())
        title = "Event to last intent, one world of 10,000 positions"
        print(f"## (b) {title} ({rounds} events each)\n")
        print("The service runs as its own process (`rebalancer run`), as deployed.\n")
        print("| arrivals | p50 ms | p90 ms | p99 ms | max ms | intents per event |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, samples in (
            (f"one event every {PACE_MS} ms", paced),
            ("back to back", back_to_back),
        ):
            samples.sort()
            p50 = statistics.median(samples)
            p90 = samples[int(len(samples) * 0.9)]
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            print(
                f"| {name} | {p50:.1f} | {p90:.1f} | {p99:.1f} | {samples[-1]:.1f} "
                f"| {len(symbols)} |"
            )
        print()
    finally:
        await producer.stop()
        await consumer.stop()
        service.terminate()
        service.wait(timeout=30)


async def clients(servers: str) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """A started consumer (no group, short fetch waits) and producer for measuring."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=5
    )
    producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=False, linger_ms=0)
    await consumer.start()
    await producer.start()
    return consumer, producer


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a ``rebalancer`` process these settings."""
    return {
        **os.environ,
        "REBALANCER_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "REBALANCER_GROUP_ID": settings.group_id,
        "REBALANCER_HTTP_PORT": str(settings.http_port),
        "REBALANCER_PLAN_SETTLE_TIMEOUT_MS": str(settings.plan_settle_timeout_ms),
        **{f"REBALANCER_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()},
    }


def start_service(settings: Settings) -> subprocess.Popen[bytes]:
    env = service_env(settings)
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", "--log-level", "warning"], env=env
    )


async def readyz(port: int) -> bool:
    """Whether the service on ``port`` answers ``/readyz`` with 200 (False while it cannot)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /readyz HTTP/1.1\r\n\r\n")
        status = (await reader.read()).split(b" ", 2)[1]
        writer.close()
    except (OSError, IndexError):
        return False
    return status == b"200"


async def wait_ready(service: subprocess.Popen[bytes], settings: Settings) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError(f"service exited with {service.returncode}")
        if await readyz(settings.http_port):
            await asyncio.sleep(6)  # let the consumer group settle
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("service not ready in 60 s")


async def main(quick: bool, parts: list[str]) -> None:
    print(f"Python {platform.python_version()}, {platform.machine()}, {sys.platform}\n")
    with EmbeddedBroker() as broker:
        if "ingest" in parts:
            await bench_ingest(broker.bootstrap_servers, 5_000 if quick else 50_000)
        if "latency" in parts:
            await bench_latency(broker.bootstrap_servers, 20 if quick else 200)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (smoke test)")
    parser.add_argument(
        "--only", choices=["ingest", "latency"], help="run one part (default: both)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.quick, [args.only] if args.only else ["ingest", "latency"]))
