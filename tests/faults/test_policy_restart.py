"""A hybrid policy's look survives a SIGKILL: the service, run as a process, looks at a world
once this period, is killed, and after a restart does not look again, even though the world
has drifted out of band meanwhile (issue 16, item 6)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import orjson

from tests.kafka_support import Feed, Tail, fresh_settings
from tests.process_support import ServiceProcess, http_get
from tests.stream.test_stream_service import btc, snapshot, world_move

RULE = {
    "name": "keep-a",
    "worlds": ["a"],
    "trigger": {"kind": "hybrid", "every": "yearly", "mode": "absolute", "threshold": 0.02},
    "target": {"kind": "allocation"},
}
POLICIES = {
    "REBALANCER_POLICIES__ENABLED": "true",
    "REBALANCER_POLICIES__CHECK_INTERVAL_MS": "200",
    "REBALANCER_POLICIES__RULES": orjson.dumps([RULE]).decode(),
}
CASH = 940_000.0
"""The rest of the 1,000,000 portfolio, in cash on world a's snapshot."""


async def evaluations(service: ServiceProcess, outcome: str) -> float:
    """The service's count of keep-a's evaluations with ``outcome`` (0 if none yet)."""
    status, text = await http_get(service.port, "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith("rebalancer_policy_evaluations_total{") and (
            'policy="keep-a"' in line and f'outcome="{outcome}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def until_counted(service: ServiceProcess, outcome: str, n: float) -> None:
    deadline = time.monotonic() + 60
    while await evaluations(service, outcome) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {n} {outcome} evaluations:\n{service.output()}")
        await asyncio.sleep(0.1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_a_hybrid_rule_that_looked_this_period_does_not_look_again_after_sigkill(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = fresh_settings(bootstrap_servers, planner={"lot_size_by_symbol": {"BTCUSDT": 0.001}})
    servers, t = bootstrap_servers, settings.topics
    async with Feed(servers) as feed:
        # world a: 1 BTC at 60,000 of a measured 1,000,000, exactly its allocation of 0.06
        await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(1.0)], now_ms(), cash=CASH))
        await feed.event(t.allocations, world_move("e1", {"a": 0.06}, {"a": 0.06}))
    first = ServiceProcess(settings, tmp_path / "first.log", **POLICIES)
    try:
        await first.ready()
        async with Tail(servers, t.changelog) as changelog:
            # this year's look, in band, written to the changelog
            await changelog.until(
                lambda rs: any(
                    k == b"policy|default|a" and r["looked"] is not None
                    for k, r in zip(changelog.keys, rs, strict=True)
                ),
                timeout=60,
            )
        assert await evaluations(first, "in_band") == 1
        assert await evaluations(first, "triggered") == 0
    finally:
        first.proc.kill()  # SIGKILL
        await first.exited()

    # BTC rises to 90,000 while the service is down: 90,000 of 1,030,000, out of the band
    async with Feed(servers) as feed:
        drifted = snapshot("a", "s1", [btc(1.0, mark=90_000.0)], now_ms(), cash=CASH)
        await feed.snapshot(t.snapshots, drifted)
    second = ServiceProcess(settings, tmp_path / "second.log", **POLICIES)
    try:
        await second.ready()
        await until_counted(second, "not_due", 5)  # a second of checks, each one not due
        assert await evaluations(second, "triggered") == 0
        assert await evaluations(second, "in_band") == 0
        async with Tail(servers, t.allocations) as allocations:
            await allocations.quiet(0.5)
            assert [r["type"] for r in allocations.records] == ["world_allocations_changed"]
        assert not re.search(r"policy keep-a triggers", second.output())
    finally:
        second.stop()
