"""Benchmark of the operator API while the service plans (issue 14).

Run from the README's venv:  .venv/bin/python bench/api.py [--quick] [--broker B]

One world of 10,000 positions (50 strategies x 200 symbols), as in ``bench/stream.py``, with
the service as its own process and an admin token configured. Three parts:

(r) Reads under planning: allocation events arrive every 100 ms (each moves the world, 200
    intents a plan). First alone, then with API reads at 200 requests/s beside them (open
    loop: a request every 5 ms whatever the answers, alternating ``GET /v1/portfolios/default``
    and ``GET /v1/plans?limit=20``, one connection each, over real HTTP). Reported: the reads'
    latency, and the events' time to their last intent in both runs, so what the reads cost
    the planning is seen beside what the planning costs the reads.
(v) ``POST /v1/preview`` of a move of the 10,000-position world: the time to the answer (the
    plan record and its 200 intents, nothing published), one request at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.stream import (
    PACE_MS,
    WARM_UP_S,
    add_broker_argument,
    brokers_of,
    clients,
    note,
    percentile,
    print_machine,
    produce,
    running_broker,
    settings_for,
    snapshot,
    start_service,
    stop_processes,
    wait_ready,
    warm_up,
)
from consumers.clients import partitions_of
from consumers.topics import ensure_topics
from service.api.auth import sha256_hex

TOKEN = "bench-api-admin-token"
READS_PER_S = 200
SYMBOLS = [f"SYM{i:03d}" for i in range(200)]


async def request(port: int, method: str, path: str, body: bytes | None = None) -> bytes:
    """One HTTP/1.1 request on a fresh connection; the response body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    head.append(f"Authorization: Bearer {TOKEN}")
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
    await writer.drain()
    raw = await reader.read()
    writer.close()
    status = int(raw.split(b" ", 2)[1])
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {raw[:300]!r}")
    return raw.partition(b"\r\n\r\n")[2]


def move(serial: int) -> dict[str, Any]:
    allocs = [0.3, 0.2]
    return {
        "type": "world_allocations_changed",
        "event_id": f"api-{serial}",
        "occurred_at": 1_000 + serial,
        "total_equity": 1e7,
        "world_alloc_after": {"big": allocs[(serial + 1) % 2]},
        "world_alloc_before": {"big": allocs[serial % 2]},
    }


class Rig:
    """The service, a producer of events and a reader of its intents."""

    def __init__(self, servers: str) -> None:
        self.servers = servers
        tokens = [{"name": "bench", "role": "admin", "sha256": sha256_hex(TOKEN)}]
        self.settings = settings_for(
            servers,
            plan_settle_timeout_ms=1,
            release_check_interval_ms=50,
            api={"tokens": tokens},
        )
        self.serial = 0

    async def __aenter__(self) -> Rig:
        t = self.settings.topics
        await ensure_topics(self.settings, self.servers)
        snaps = [
            (f"big|s{i:02d}".encode(), snapshot("big", f"s{i:02d}", SYMBOLS, 1_000))
            for i in range(50)
        ]
        await produce(self.servers, t.snapshots, snaps)
        self.service = start_service(self.settings)
        self.consumer, self.producer = await clients(self.servers)
        await wait_ready(self.service, self.settings)
        parts = [
            TopicPartition(t.intents, p) for p in await partitions_of(self.consumer, t.intents)
        ]
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
        await self.consumer.stop()
        stop_processes(self.service)

    @property
    def port(self) -> int:
        return self.settings.http_port

    async def one_event(self) -> float:
        """Publish the next move; ms until the last of its intents is read back."""
        serial = self.serial
        self.serial += 1
        marker = f'"event_id":"api-{serial}"'.encode()
        start = time.perf_counter()
        await self.producer.send_and_wait(
            self.settings.topics.allocations, key=b"default", value=orjson.dumps(move(serial))
        )
        received = 0
        while received < len(SYMBOLS):
            batch = await self.consumer.getmany(timeout_ms=5_000)
            if not batch:
                raise RuntimeError(f"event {serial}: no intents in 5 s")
            for records in batch.values():
                received += sum(1 for rec in records if marker in rec.value)
        return (time.perf_counter() - start) * 1e3

    async def paced_events(self, n: int) -> list[float]:
        loop = asyncio.get_running_loop()
        out = []
        for _ in range(n):
            due = loop.time() + PACE_MS / 1000
            out.append(await self.one_event())
            await asyncio.sleep(max(0.0, due - loop.time()))
        return out


async def reads_at_rate(port: int, stop: asyncio.Event) -> tuple[list[float], float]:
    """GETs at ``READS_PER_S``, open loop, until ``stop``: each one's latency, ms, and the
    seconds they were sent over."""
    paths = ["/v1/portfolios/default", "/v1/plans?limit=20"]
    latencies: list[float] = []
    pending: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def one(path: str) -> None:
        start = time.perf_counter()
        await request(port, "GET", path)
        latencies.append((time.perf_counter() - start) * 1e3)

    began = due = loop.time()
    i = 0
    while not stop.is_set():
        task = asyncio.create_task(one(paths[i % 2]))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
        due += 1 / READS_PER_S
        await asyncio.sleep(max(0.0, due - loop.time()))
    sent_for = loop.time() - began
    await asyncio.gather(*pending)
    return latencies, sent_for


async def bench(servers: str, events: int, previews: int) -> dict[str, Any]:
    async with Rig(servers) as rig:
        for _ in range(3):
            await rig.one_event()  # warm-up, not counted
        alone = await rig.paced_events(events)
        stop = asyncio.Event()
        reader = asyncio.create_task(reads_at_rate(rig.port, stop))
        await asyncio.sleep(1.0)  # the reads at their rate before the events start
        with_reads = await rig.paced_events(events)
        stop.set()
        reads, seconds = await reader
        body = orjson.dumps(move(rig.serial))  # the next move: from the current allocation
        preview_ms = []
        for _ in range(previews):
            start = time.perf_counter()
            answer = orjson.loads(await request(rig.port, "POST", "/v1/preview", body))
            preview_ms.append((time.perf_counter() - start) * 1e3)
            assert len(answer["intents"]) == len(SYMBOLS), answer["outcome"]
    return {
        "alone": alone,
        "with_reads": with_reads,
        "reads": reads,
        "seconds": seconds,
        "preview": preview_ms,
    }


def row(name: str, samples: list[float]) -> str:
    return (
        f"| {name} | {len(samples)} | {statistics.median(samples):.1f} | "
        f"{percentile(samples, 0.9):.1f} | {percentile(samples, 0.99):.1f} | {max(samples):.1f} |"
    )


async def main(quick: bool, brokers: list[str]) -> None:
    print_machine()
    events, previews = (20, 10) if quick else (200, 50)
    for kind in brokers:
        note(f"starting {kind}")
        with running_broker(kind) as broker:
            await warm_up(broker.servers, 3 if quick else WARM_UP_S)
            result = await bench(broker.servers, events, previews)
        print(f"## {broker.name}: {broker.description}\n")
        print("| what | n | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|---:|")
        print(row("event to last intent, no reads", result["alone"]))
        print(row(f"event to last intent, reads at {READS_PER_S}/s", result["with_reads"]))
        print(row(f"API read (GET), at {READS_PER_S}/s while planning", result["reads"]))
        print(row("POST /v1/preview, 10,000 positions", result["preview"]))
        rate = len(result["reads"]) / result["seconds"]
        print(
            f"\n({len(result['reads'])} reads sent over {result['seconds']:.1f} s: {rate:.0f}/s)\n"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (smoke test)")
    add_broker_argument(parser)
    args = parser.parse_args()
    asyncio.run(main(args.quick, brokers_of(args.broker)))
