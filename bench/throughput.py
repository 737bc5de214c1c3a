"""Throughput of the stream service: sustained allocation events per second (issue 13).

Run from the README's venv:  .venv/bin/python bench/throughput.py [--quick] [--broker B]

24 worlds of 100 positions each (10 strategies x 10 symbols, one venue), four in each of six
portfolios. The allocation topic has six partitions and the portfolio names are picked so
that each lands on its own partition (Kafka's default partitioning of the key), so a group
of two instances splits them three and three. Allocation events are keyed by portfolio and
go round-robin over the worlds, each moving one world back and forth (0.20 <-> 0.25); the
settle timeout is 1 ms, so no event waits for the previous plan's convergence.

The load is a closed loop with a window: at most ``--window`` events (default 48, two per
world) are sent and not yet seen in a ``planned`` plan record (``coalesced_event_ids``);
each one seen lets the next go. The producer so runs exactly as fast as the service keeps
up, the backlog stays bounded (an open loop above capacity would only measure a growing
queue), and the window keeps every partition supplied while earlier events are in flight:
on Tansu a window of 24 left one instance idle part of the time (116 and 159 events/s
against 183-207 with 48 or 96), and 96 gave no more than 48.
Warm-up first (not counted), then events planned are counted for ``--seconds``.

Measured for one ``rebalancer run`` process and for two in one consumer group, alternately,
``--runs`` times, on fresh topics each time. Beside the rate: the CPU time each process used
in the measured interval (from /proc), so what the machine's cores were spent on is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.stream import (
    WARM_UP_S,
    Broker,
    add_broker_argument,
    brokers_of,
    clients,
    note,
    print_machine,
    produce,
    readyz,
    running_broker,
    scrape,
    settings_for,
    snapshot,
    start_service,
    stop_processes,
    warm_up,
)
from consumers.clients import partitions_of
from consumers.embedded_broker import free_port
from consumers.ownership import partition_of
from consumers.topics import ensure_topics
from service.runtime import tune_allocator

tune_allocator()

PARTITIONS = 6
WORLDS_PER_PORTFOLIO = 4
STRATEGIES = 10
SYMBOLS = 10
ALLOCS = (0.20, 0.25)  # four worlds of a portfolio at 0.25 add up to 1


def portfolios(partitions: int = PARTITIONS) -> list[str]:
    """One portfolio name per partition of the allocation topic: ``p<i>``, the first ``i``
    whose key Kafka's default partitioner puts there."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        found.setdefault(partition_of(f"p{i}".encode(), partitions), f"p{i}")
        i += 1
    return [found[p] for p in range(partitions)]


@dataclass(frozen=True)
class World:
    portfolio: str
    world: str


def worlds() -> list[World]:
    """Round-robin order: consecutive worlds are in different portfolios (partitions)."""
    names = portfolios()
    return [World(p, f"{p}-w{j}") for j in range(WORLDS_PER_PORTFOLIO) for p in names]


# -- CPU time from /proc ----------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (all its threads), in seconds."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every core."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return (total - idle) / TICK, total / TICK


@dataclass
class CpuMeter:
    """CPU time of the given processes between ``start`` and ``stop``."""

    pids: dict[str, int | None]
    start_at: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def start(self) -> None:
        self.start_at = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.start_at["machine"], self.start_at["machine total"] = machine_busy_seconds()
        self.wall = time.perf_counter()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.wall
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        now["machine"], now["machine total"] = machine_busy_seconds()
        self.used = {name: now[name] - self.start_at[name] for name in now}

    def share(self, name: str) -> float:
        """Percent of one core over the measured interval."""
        return 100 * self.used[name] / self.wall


# -- one measurement --------------------------------------------------------------------------


@dataclass
class Result:
    broker: str
    instances: int
    seconds: float
    events: int
    plans: int
    per_interval: list[float]
    per_instance: list[float]
    cpu: CpuMeter
    service_names: list[str]


def setup_snapshots() -> list[tuple[bytes, bytes]]:
    symbols = [f"SYM{i:02d}" for i in range(SYMBOLS)]
    return [
        (f"{w.world}|s{s}".encode(), snapshot(w.world, f"s{s}", symbols, 1_000))
        for w in worlds()
        for s in range(STRATEGIES)
    ]


async def wait_group(
    services: list[subprocess.Popen[bytes]], ports: list[int], timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    for service, port in zip(services, ports, strict=True):
        while not await readyz(port):
            if service.poll() is not None:
                raise RuntimeError(f"service exited with {service.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("service not ready in time")
            await asyncio.sleep(0.1)


async def measure(
    broker: Broker, instances: int, *, window: int, warmup: float, seconds: float
) -> Result:
    servers = broker.servers
    settings = settings_for(
        servers,
        plan_settle_timeout_ms=1,
        release_check_interval_ms=50,
        topic_partitions=PARTITIONS,
    )
    await ensure_topics(settings, servers)
    t = settings.topics
    await produce(servers, t.snapshots, setup_snapshots())
    ports = [settings.http_port] + [free_port() for _ in range(instances - 1)]
    services = [start_service(settings, http_port=port) for port in ports]
    consumer, producer = await clients(servers)
    order = worlds()
    current: dict[str, float | None] = {w.world: None for w in order}  # as the service has it
    tag = t.allocations
    outstanding: dict[str, float] = {}
    serial = 0
    events = plans = 0
    counting = False
    completions: list[float] = []  # completion times while counting
    try:
        await wait_group(services, ports)
        parts = [TopicPartition(t.plans, p) for p in await partitions_of(consumer, t.plans)]
        parts += [
            TopicPartition(t.dead_letters, p) for p in await partitions_of(consumer, t.dead_letters)
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)

        async def fill() -> None:
            nonlocal serial
            while len(outstanding) < window:
                w = order[serial % len(order)]
                before = current[w.world]
                after = ALLOCS[1] if before == ALLOCS[0] else ALLOCS[0]
                event_id = f"{tag}-{serial}"
                event = {
                    "type": "world_allocations_changed",
                    "event_id": event_id,
                    "portfolio_id": w.portfolio,
                    "occurred_at": 1_000 + serial,
                    "total_equity": 1e6,
                    "world_alloc_after": {w.world: after},
                    "world_alloc_before": {w.world: before if before is not None else ALLOCS[1]},
                }
                current[w.world] = after
                outstanding[event_id] = time.perf_counter()
                await producer.send(
                    t.allocations, key=w.portfolio.encode(), value=orjson.dumps(event)
                )
                serial += 1

        async def drain() -> None:
            nonlocal events, plans
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for tp, records in batch.items():
                for rec in records:
                    if tp.topic == t.dead_letters:
                        letter = orjson.loads(rec.value)
                        raise RuntimeError(f"dead letter: {letter['error_message']}")
                    record = orjson.loads(rec.value)
                    if record["status"] != "planned":
                        continue
                    done = [e for e in record["coalesced_event_ids"] if e in outstanding]
                    for e in done:
                        del outstanding[e]
                    if counting:
                        plans += 1
                        events += len(done)
                        completions.extend([now] * len(done))

        async def run_for(duration: float) -> None:
            end = time.perf_counter() + duration
            last = time.perf_counter()
            while time.perf_counter() < end:
                await fill()
                await drain()
                if len(outstanding) < window:  # some were planned
                    last = time.perf_counter()
                elif time.perf_counter() - last > 20:
                    raise RuntimeError("no event planned in 20 s")

        note(f"{broker.name}, {instances} instance(s): warm-up {warmup:g} s")
        await run_for(warmup)
        before = [await scrape(port) for port in ports]
        pids = {f"service {i + 1}": s.pid for i, s in enumerate(services)}
        cpu = CpuMeter({**pids, "broker": broker.pid, "load generator": os.getpid()})
        cpu.start()
        counting = True
        started = time.perf_counter()
        await run_for(seconds)
        counting = False
        elapsed = time.perf_counter() - started
        cpu.stop()
        after = [await scrape(port) for port in ports]
    finally:
        await producer.stop()
        await consumer.stop()
        stop_processes(*services)
    key = "rebalancer_events_planned_total"
    per_instance = [(a[key] - b[key]) / elapsed for a, b in zip(after, before, strict=True)]
    step = 5.0 if seconds >= 20 else 1.0
    buckets = [0] * max(1, int(elapsed // step))
    for c in completions:
        i = int((c - started) // step)
        if i < len(buckets):
            buckets[i] += 1
    return Result(
        broker.name,
        instances,
        elapsed,
        events,
        plans,
        [b / step for b in buckets],
        per_instance,
        cpu,
        list(pids),
    )


def print_results(results: list[Result], window: int) -> None:
    n_worlds = len(worlds())
    print(
        f"## Sustained allocation events per second: {n_worlds} worlds of "
        f"{STRATEGIES * SYMBOLS} positions ({STRATEGIES} strategies x {SYMBOLS} symbols), "
        f"{PARTITIONS} portfolios on {PARTITIONS} partitions, window {window}\n"
    )
    print(
        "| broker | instances | run | events/s planned | plans/s | per interval, min-max "
        "| per instance, events/s | service CPU, % of a core | broker CPU % | load generator "
        "CPU % | other processes CPU % | machine busy, % of all cores | service CPU ms per event |"
    )
    print("|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|")
    runs: dict[tuple[str, int], int] = {}
    for r in results:
        run = runs[(r.broker, r.instances)] = runs.get((r.broker, r.instances), 0) + 1
        cpu = r.cpu
        service_cpu = sum(cpu.used[name] for name in r.service_names)
        busy = 100 * cpu.used["machine"] / cpu.used["machine total"]
        ours = [*r.service_names, "broker", "load generator"]
        others = max(0.0, 100 * (cpu.used["machine"] - sum(cpu.used[n] for n in ours)) / cpu.wall)
        print(
            f"| {r.broker} | {r.instances} | {run} | **{r.events / r.seconds:,.0f}** "
            f"| {r.plans / r.seconds:,.0f} "
            f"| {min(r.per_interval):,.0f}-{max(r.per_interval):,.0f} "
            f"| {' + '.join(f'{x:,.0f}' for x in r.per_instance)} "
            f"| {' + '.join(f'{cpu.share(n):.0f}' for n in r.service_names)} "
            f"| {cpu.share('broker'):.0f} | {cpu.share('load generator'):.0f} | {others:.0f} "
            f"| {busy:.0f} "
            f"| {1e3 * service_cpu / max(1, r.events):.2f} |"
        )
    print()
    groups: dict[tuple[str, int], list[float]] = {}
    for r in results:
        groups.setdefault((r.broker, r.instances), []).append(r.events / r.seconds)
    print("| broker | instances | median events/s | min-max over runs |")
    print("|---|---:|---:|---|")
    for (name, instances), rates in groups.items():
        print(
            f"| {name} | {instances} | **{statistics.median(rates):,.0f}** "
            f"| {min(rates):,.0f}-{max(rates):,.0f} |"
        )
    print()


def plan_of_runs(runs: int, instance_counts: list[int]) -> Iterator[int]:
    """Instance counts alternated run by run (1, 2, 1, 2, ...), so drift hits both alike."""
    for _ in range(runs):
        yield from instance_counts


async def main(args: argparse.Namespace) -> None:
    print_machine()
    instance_counts = [int(x) for x in args.instances.split(",")]
    results: list[Result] = []
    warmup = 3.0 if args.quick else args.warmup
    seconds = 5.0 if args.quick else args.seconds
    runs = 1 if args.quick else args.runs
    try:
        for kind in brokers_of(args.broker):
            with running_broker(kind, args.kafka_set) as broker:
                note(f"{broker.description} at {broker.servers}")
                print(f"- {broker.name}: {broker.description}")
                trips = await warm_up(broker.servers, 3 if args.quick else WARM_UP_S)
                note(f"broker warm-up: {trips} round trips")
                for instances in plan_of_runs(runs, instance_counts):
                    results.append(
                        await measure(
                            broker, instances, window=args.window, warmup=warmup, seconds=seconds
                        )
                    )
                    r = results[-1]
                    note(f"{r.broker}, {instances}: {r.events / r.seconds:,.0f} events/s")
    finally:
        print()
        if results:
            print_results(results, args.window)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    add_broker_argument(parser)
    parser.add_argument("--instances", default="1,2", help="instance counts to measure (1,2)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each instance count")
    parser.add_argument("--window", type=int, default=48, help="events in flight at most")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds, not counted")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds measured")
    asyncio.run(main(parser.parse_args()))
