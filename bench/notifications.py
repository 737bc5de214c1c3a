"""Benchmark: a slow webhook receiver does not slow planning (issue 15, notifications).

Run from the README's venv:  .venv/bin/python bench/notifications.py [--rounds 3] [--events 100]

The world of ``bench/api.py`` (10,000 positions: 50 strategies x 200 symbols, 200 intents a
plan), the service as its own process on the embedded broker. Each round runs the service
twice on fresh topics, one after the other in the same broker:

- **no webhook**: notifications go to their topic only;
- **slow webhook**: one webhook whose receiver (in this process) answers every request after
  5 s, so its deliverer is always busy and a backlog of notifications waits for it.

In both, allocation events arrive every 100 ms and each one's time from publish to its last
intent read back is measured (3 events of warm-up not counted). Reported per round and over
all rounds: p50, p90, p99 and the ratio slow / none. The webhook's deliverer runs in the
service's process and event loop but in its own task and consumer group, never under the
service's lock, so the ratio should be 1 within noise.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import SYMBOLS, Rig
from bench.stream import (
    WARM_UP_S,
    clients,
    note,
    percentile,
    print_machine,
    produce,
    running_broker,
    snapshot,
    start_service,
    wait_ready,
    warm_up,
)
from consumers.clients import partitions_of
from consumers.topics import ensure_topics
from tests.webhook_receiver import Receiver

SLOW_S = 5.0
SECRET = "bench-secret"


class WebhookRig(Rig):
    """``bench.api.Rig`` whose service has ``webhooks`` (the secret passed as it is, not as
    ``SecretStr`` prints it)."""

    def __init__(self, servers: str, webhooks: list[dict[str, Any]]) -> None:
        super().__init__(servers)
        self.webhooks = webhooks

    async def __aenter__(self) -> WebhookRig:
        t = self.settings.topics
        await ensure_topics(self.settings, self.servers)
        snaps = [
            (f"big|s{i:02d}".encode(), snapshot("big", f"s{i:02d}", SYMBOLS, 1_000))
            for i in range(50)
        ]
        await produce(self.servers, t.snapshots, snaps)
        notify = {"webhooks": self.webhooks, "timeout_ms": int(SLOW_S * 1000) + 5_000}
        self.service = start_service(self.settings, notifications=notify)
        self.consumer, self.producer = await clients(self.servers)
        await wait_ready(self.service, self.settings)
        parts = [
            TopicPartition(t.intents, p) for p in await partitions_of(self.consumer, t.intents)
        ]
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        return self


async def one_run(servers: str, receiver: Receiver | None, events: int) -> list[float]:
    hooks = [] if receiver is None else [{"url": receiver.url(), "secret": SECRET}]
    async with WebhookRig(servers, hooks) as rig:
        for _ in range(3):
            await rig.one_event()  # warm-up, not counted
        samples = await rig.paced_events(events)
    return samples


def stats(samples: list[float]) -> tuple[float, float, float]:
    return (
        statistics.median(samples),
        percentile(samples, 0.9),
        percentile(samples, 0.99),
    )


async def main(rounds: int, events: int, warm_s: float) -> None:
    print_machine()
    receiver = Receiver(delay=SLOW_S)
    await receiver.start()
    none_all: list[float] = []
    slow_all: list[float] = []
    rows = []
    try:
        with running_broker("tansu") as broker:
            await warm_up(broker.servers, warm_s)
            for r in range(rounds):
                note(f"round {r + 1}: no webhook")
                none = await one_run(broker.servers, None, events)
                note(f"round {r + 1}: webhook answering after {SLOW_S:g} s")
                before = len(receiver.requests)
                slow = await one_run(broker.servers, receiver, events)
                reached = len(receiver.requests) - before
                none_all += none
                slow_all += slow
                rows.append((f"round {r + 1}", none, slow, reached))
    finally:
        await receiver.stop()
    rows.append(("all rounds", none_all, slow_all, None))
    print(f"## {broker.name}: {broker.description}\n")
    print(
        "| run | n | none p50 | none p90 | none p99 | slow p50 | slow p90 | slow p99 | "
        "ratio p50 | ratio p90 | requests to the slow receiver |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, none, slow, reached in rows:
        a, b = stats(none), stats(slow)
        print(
            f"| {name} | {len(none)} | {a[0]:.1f} | {a[1]:.1f} | {a[2]:.1f} | {b[0]:.1f} | "
            f"{b[1]:.1f} | {b[2]:.1f} | {b[0] / a[0]:.2f} | {b[1] / a[1]:.2f} | "
            f"{'' if reached is None else reached} |"
        )
    print("\n(ms from an event's publish to its last intent read back; events every 100 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="1 round of 20 events")
    args = parser.parse_args()
    started = time.monotonic()
    if args.quick:
        asyncio.run(main(1, 20, 3))
    else:
        asyncio.run(main(args.rounds, args.events, WARM_UP_S))
    note(f"done in {time.monotonic() - started:.0f} s")
