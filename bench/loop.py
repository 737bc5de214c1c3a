"""Benchmark of the whole loop (issue: execution nodes): allocation event to converged snapshot.

Run from the README's venv:  .venv/bin/python bench/loop.py [--quick] [--broker B]

One world of 1,000 keys (5 strategies x 1,000 symbols on one venue, 5,000 positions) on the
embedded broker (``--broker tansu``, the default), Apache Kafka 4.1.1 (``kafka``, started
with ``deploy/kafka/run``) or each in turn (``both``). The service (`rebalancer run`) and
the execution node (`rebalancer execute`, paper venue, immediate fills) run as their own
processes, as deployed. Each round publishes a world move (back and forth between 0.3 and
0.2) and measures the time until every strategy's snapshot reports that plan's
`converged_plan_id`: planning, 1,000 intents, 1,000 orders and fills, and the snapshots back.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson
from aiokafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.stream import (
    WARM_UP_S,
    add_broker_argument,
    brokers_of,
    clients,
    note,
    print_machine,
    produce,
    running_broker,
    service_env,
    settings_for,
    start_service,
    stop_processes,
    wait_ready,
    warm_up,
)
from consumers.clients import partitions_of
from consumers.topics import ensure_topics
from service.runtime import tune_allocator

tune_allocator()

STRATEGIES = 5
SYMBOLS = 1_000


def start_node(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``rebalancer execute`` on the paper venue (immediate fills)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "execute",
            "--venue",
            "paper",
            "--log-level",
            "warning",
            "--heartbeat-ms",
            "60000",
            "--http-port",
            "0",
        ],
        env=env,
    )


async def bench(servers: str, rounds: int) -> list[float]:
    settings = settings_for(servers, plan_settle_timeout_ms=600_000, release_check_interval_ms=50)
    await ensure_topics(settings, servers)
    t = settings.topics
    symbols = [f"SYM{i:04d}" for i in range(SYMBOLS)]
    strategies = [f"s{i}" for i in range(STRATEGIES)]
    snaps = [
        (
            f"w|{s}".encode(),
            orjson.dumps(
                {
                    "world_id": "w",
                    "strategy_id": s,
                    "as_of": int(time.time() * 1000) - 10_000,
                    "positions": [
                        {"venue": "paper", "symbol": y, "qty": 3.0, "mark": 100.0} for y in symbols
                    ],
                }
            ),
        )
        for s in strategies
    ]
    await produce(servers, t.snapshots, snaps)
    service = start_service(settings)
    node = start_node(service_env(settings))
    consumer, producer = await clients(servers)
    try:
        await wait_ready(service, settings)
        parts = [TopicPartition(t.snapshots, p) for p in await partitions_of(consumer, t.snapshots)]
        parts += [TopicPartition(t.plans, p) for p in await partitions_of(consumer, t.plans)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        converged: dict[str, str | None] = {}
        plans: dict[str, str] = {}  # event_id -> plan_id

        async def read(done: object) -> None:
            deadline = time.monotonic() + 120
            while not done():  # type: ignore[operator]
                if time.monotonic() > deadline:
                    raise RuntimeError("the loop did not converge in 120 s")
                batch = await consumer.getmany(timeout_ms=100)
                for tp, records in batch.items():
                    for r in records:
                        value = orjson.loads(r.value) if r.value else None
                        if value is None:
                            continue
                        if tp.topic == t.plans and value["status"] == "planned":
                            for e in value["coalesced_event_ids"]:
                                plans[e] = value["plan_id"]
                        elif tp.topic == t.snapshots:
                            converged[value["strategy_id"]] = value.get("converged_plan_id")

        samples = []
        for r in range(rounds + 1):
            before, after = (0.3, 0.2) if r % 2 == 0 else (0.2, 0.3)
            event_id = f"loop-{r}"
            event = {
                "type": "world_allocations_changed",
                "event_id": event_id,
                "occurred_at": 1_000 + r,
                "total_equity": 5e6,
                "world_alloc_after": {"w": after},
                "world_alloc_before": {"w": before},
            }
            start = time.perf_counter()
            await producer.send_and_wait(t.allocations, key=b"default", value=orjson.dumps(event))

            def reached(event_id: str = event_id) -> bool:
                plan = plans.get(event_id)
                return plan is not None and all(converged.get(s) == plan for s in strategies)

            await read(reached)
            if r:  # the first round warms up
                samples.append((time.perf_counter() - start) * 1e3)
        return samples
    finally:
        await producer.stop()
        await consumer.stop()
        stop_processes(node, service)


async def main(quick: bool, brokers: list[str], kafka_settings: list[str]) -> None:
    print_machine()
    rounds = 3 if quick else 10
    results: list[tuple[str, list[float]]] = []
    try:
        for kind in brokers:
            with running_broker(kind, kafka_settings) as broker:
                note(f"{broker.description} at {broker.servers}")
                print(f"- {broker.name}: {broker.description}")
                await warm_up(broker.servers, 3 if quick else WARM_UP_S)
                results.append((broker.name, await bench(broker.servers, rounds)))
    finally:
        if results:
            print(f"\n## Event to converged snapshots, 1,000 keys ({rounds} rounds)\n")
            print("| broker | keys | intents per round | p50 ms | min ms | max ms | rounds, ms |")
            print("|---|---:|---:|---:|---:|---:|---|")
            for name, samples in results:
                ordered = sorted(samples)
                print(
                    f"| {name} | {SYMBOLS:,} | {SYMBOLS:,} | {statistics.median(samples):.0f} "
                    f"| {ordered[0]:.0f} | {ordered[-1]:.0f} "
                    f"| {', '.join(f'{x:.0f}' for x in samples)} |"
                )
            print()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    add_broker_argument(parser)
    args = parser.parse_args()
    asyncio.run(main(args.quick, brokers_of(args.broker), args.kafka_set))
