"""Benchmark: how long a restart takes to become ready with bad snapshots retained on the topic.

Run from the README's venv:  .venv/bin/python bench/restart.py [--bad 4000] [--rounds 5]

Two sets of topics on one embedded broker hold the same good snapshots (1,000 strategies of 5
positions); one of them also holds ``--bad`` bad snapshots (a mix of the kinds the hostile-input
report found: unreadable JSON, numbers beyond the bounds, future dates, keys that do not match,
control characters in ids). Each service is started once (it dead-letters the bad ones), then
restarted ``--rounds`` times, alternating with and without bad snapshots; each restart is timed
from ``rebalancer run`` starting to ``/readyz`` answering 200. The dead-letter topic is counted
after every restart: a restart must not dead-letter again what an earlier run did.

Target (issue 11): a restart with 4,000 bad snapshots is ready within 2 s of one without them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.stream import produce, raw_read, readyz, service_env, settings_for, snapshot
from consumers.embedded_broker import EmbeddedBroker
from consumers.topics import ensure_topics
from service.settings import Settings

GOOD = 1_000


def bad_snapshot(i: int) -> tuple[bytes, bytes]:
    """One bad snapshot of five kinds, in turn."""
    key = f"w|bad{i}".encode()
    body = {"world_id": "w", "strategy_id": f"bad{i}", "as_of": 1_000, "positions": []}
    kind = i % 5
    if kind == 0:
        return key, b'{"world_id": "w", "strategy_id": ' + str(i).encode() + b", NaN}"
    if kind == 1:
        body["positions"] = [{"symbol": "X", "qty": 1e308, "mark": 1.0}]
    elif kind == 2:
        body["as_of"] = 9_000_000_000_000
    elif kind == 3:
        key = b"w|elsewhere"
    else:
        body["strategy_id"] = f"bad\u0085{i}"
    return key, orjson.dumps(body)


async def seed(settings: Settings, bad: int) -> None:
    servers = settings.bootstrap_servers or ""
    await ensure_topics(settings, servers)
    symbols = [f"S{k}" for k in range(5)]
    good = [(f"w|s{i}".encode(), snapshot("w", f"s{i}", symbols, 1_000 + i)) for i in range(GOOD)]
    await produce(servers, settings.topics.snapshots, good + [bad_snapshot(i) for i in range(bad)])


async def ready_after(settings: Settings) -> tuple[float, subprocess.Popen[bytes]]:
    """Start ``rebalancer run``; seconds until /readyz is 200, and the process."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", "--log-level", "error"],
        env=service_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode}")
        if await readyz(settings.http_port):
            return time.monotonic() - started, process
        if time.monotonic() - started > 120:
            raise RuntimeError("service not ready in 120 s")
        await asyncio.sleep(0.02)


async def restart(settings: Settings) -> float:
    seconds, process = await ready_after(settings)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    return seconds


async def main(bad: int, rounds: int) -> None:
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores")
    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        with_bad = settings_for(servers)
        without = settings_for(servers)
        await seed(with_bad, bad)
        await seed(without, 0)
        first = {"with": await restart(with_bad), "without": await restart(without)}
        letters_first = await raw_read(servers, with_bad.topics.dead_letters)
        times: dict[str, list[float]] = {"with": [], "without": []}
        for _ in range(rounds):
            times["with"].append(await restart(with_bad))
            times["without"].append(await restart(without))
        letters_after = await raw_read(servers, with_bad.topics.dead_letters)
    print(f"{GOOD} good snapshots; {bad} bad ones on one set of topics; {rounds} restarts each")
    print(
        f"first start: with bad {first['with']:.2f} s, without {first['without']:.2f} s; "
        f"dead letters after it: {letters_first}"
    )
    for name, values in times.items():
        print(
            f"restart {name:>7} bad: median {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )
    diffs = [a - b for a, b in zip(times["with"], times["without"], strict=True)]
    print(
        f"difference per pair: median {statistics.median(diffs):+.2f} s "
        f"(min {min(diffs):+.2f}, max {max(diffs):+.2f})"
    )
    print(
        f"dead letters after {rounds} more restarts: {letters_after} (first run: {letters_first})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bad", type=int, default=4_000, help="bad snapshots retained")
    parser.add_argument("--rounds", type=int, default=5, help="restarts of each service")
    args = parser.parse_args()
    asyncio.run(main(args.bad, args.rounds))
