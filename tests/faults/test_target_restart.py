"""A risk-based target's mark samples survive a SIGKILL: the service, run as a process,
samples a world's marks for a ``risk_parity`` target (a short window, a sample a second), is
killed before the window is full, and after a restart goes on with it: it triggers on a window
that starts with the first process's samples, with the weights the backtester's function
gives on them (issue 16, item 6)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from service.live.sampling import asset_returns
from service.policies.weights import RiskParity
from tests.kafka_support import Feed, Tail, fresh_settings
from tests.process_support import ServiceProcess
from tests.stream.test_stream_service import snapshot, world_move

SAMPLE_MS = 1_000
WINDOW = 3
"""Returns in the estimate: it triggers on its fourth sample."""
SYMBOLS = ("BTCUSDT", "ETHUSDT")
LABELS = [f"binance:{s}" for s in SYMBOLS]
RULE = {
    "name": "parity",
    "worlds": ["a"],
    "trigger": {"kind": "band", "mode": "absolute", "threshold": 0.001},
    "target": {
        "kind": "risk_parity",
        "assets": [{"venue": "binance", "symbol": s} for s in SYMBOLS],
        "window": WINDOW,
        "sample_ms": SAMPLE_MS,
    },
}
POLICIES = {
    "REBALANCER_POLICIES__ENABLED": "true",
    "REBALANCER_POLICIES__CHECK_INTERVAL_MS": "200",
    "REBALANCER_POLICIES__RULES": orjson.dumps([RULE]).decode(),
}
KEY = b"policy|default|a"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def feed_marks(servers: str, topic: str, stop: asyncio.Event) -> None:
    """World a's snapshot, fresh every 100 ms, its marks a random walk (1 BTC, 10 ETH)."""
    rng = np.random.default_rng(11)
    prices = np.array([60_000.0, 3_000.0])
    async with Feed(servers) as feed:
        while not stop.is_set():
            prices = prices * (1 + np.array([0.01, 0.02]) * rng.standard_normal(2))
            positions = [
                {"venue": "binance", "symbol": s, "qty": q, "mark": float(m)}
                for s, q, m in zip(SYMBOLS, (1.0, 10.0), prices, strict=True)
            ]
            await feed.snapshot(topic, snapshot("a", "s1", positions, now_ms(), cash=90_000.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


def target_times(record: Any) -> list[int]:
    kept = record.get("target") if record else None
    return list(kept["samples"]["times"]) if kept else []


async def test_a_risk_parity_window_goes_on_after_sigkill(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = fresh_settings(bootstrap_servers)
    servers, t = bootstrap_servers, settings.topics
    async with Feed(servers) as feed:
        await feed.event(t.allocations, world_move("e1", {"a": 0.5}, {"a": 0.5}))
    stop = asyncio.Event()
    feeder = asyncio.create_task(feed_marks(servers, t.snapshots, stop))
    try:
        first = ServiceProcess(settings, tmp_path / "first.log", **POLICIES)
        try:
            await first.ready()
            async with Tail(servers, t.changelog) as changelog:
                await changelog.until(
                    lambda rs: any(
                        k == KEY and len(target_times(r)) >= 2
                        for k, r in zip(changelog.keys, rs, strict=True)
                    ),
                    timeout=60,
                )
        finally:
            first.proc.kill()  # SIGKILL, two or three samples into a window of four
            await first.exited()
        async with Tail(servers, t.changelog) as changelog:
            await changelog.quiet(0.5)
            kept = [target_times(r) for k, r in zip(changelog.keys, changelog.records, strict=True)]
            before = [times for times, k in zip(kept, changelog.keys, strict=True) if k == KEY]
        first_samples = before[-1]
        assert 2 <= len(first_samples) < WINDOW + 1
        async with Tail(servers, t.allocations) as allocations:
            await allocations.quiet(0.3)
            assert [r["type"] for r in allocations.records] == ["world_allocations_changed"]

        second = ServiceProcess(settings, tmp_path / "second.log", **POLICIES)
        try:
            await second.ready()
            async with Tail(servers, t.allocations) as allocations:
                records = await allocations.until(
                    lambda rs: any(r["type"] == "policy_rebalance" for r in rs), timeout=90
                )
            (event,) = [r for r in records if r["type"] == "policy_rebalance"]
            estimate = event["estimate"]
            assert estimate["method"] == "risk_parity"
            assert estimate["samples"] == WINDOW + 1
            # the window it triggered on starts with the first process's samples
            assert estimate["first_sample_at"] == first_samples[0]
            # the weights are the function's on those samples, as kept in the changelog
            async with Tail(servers, t.changelog) as changelog:
                await changelog.until(
                    lambda rs: any(
                        k == KEY and target_times(r)[-1:] == [estimate["last_sample_at"]]
                        for k, r in zip(changelog.keys, rs, strict=True)
                    ),
                    timeout=30,
                )
                (memory,) = [
                    r
                    for k, r in zip(changelog.keys, changelog.records, strict=True)
                    if k == KEY and target_times(r)[-1:] == [estimate["last_sample_at"]]
                ][-1:]
        finally:
            second.stop()
    finally:
        stop.set()
        await feeder
    samples = memory["target"]["samples"]
    assert samples["times"][: len(first_samples)] == first_samples
    rows = [
        (time_, dict(zip(samples["labels"], marks, strict=True)))
        for time_, marks in zip(samples["times"], samples["marks"], strict=True)
    ]
    returns = asset_returns(rows, LABELS)
    expected = RiskParity(WINDOW, periods_per_year=365 * 86_400_000 / SAMPLE_MS).target(returns)
    weights = [w["weight"] for w in event["target"]["weights"]]
    assert weights == pytest.approx(expected.tolist(), abs=1e-9)
