"""Live risk-based targets against a real broker: snapshots with marks arrive at simulated
times, the service samples them, and once its estimate is ready the policy publishes a weights
target equal to the backtester's function on the same samples, which the service plans.
Before that, the world is never triggered."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from service.app import RebalancerApp
from service.live.sampling import asset_returns
from service.policies.risk import DrawdownProtection, DrawdownState, VolatilityTarget, drawdown
from service.policies.weights import EqualWeight, Kelly, RiskParity
from tests.kafka_support import Feed, Tail, fresh_settings
from tests.stream.test_policy_stream import until
from tests.stream.test_stream_service import snapshot, world_move

DAY = 86_400_000
HOUR = 3_600_000
T0 = int(time.time() * 1000) // DAY * DAY + HOUR  # 01:00 UTC today: every sample in one day
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
LABELS = [f"binance:{s}" for s in SYMBOLS]
WINDOW = 6
PER_YEAR = 365 * 24.0
QTY = (1.0, 10.0, 100.0)


class Clock:
    """The service's clock, moved by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def marks_path(kind: str) -> list[list[float]]:
    """``WINDOW + 1`` hourly marks of the three assets; the drawdown case falls ~25 %."""
    if kind == "drawdown_guard":
        btc = [60_000.0, 63_000.0, 66_000.0, 60_000.0, 54_000.0, 50_000.0, 49_000.0]
        return [[b, 3_000.0 * b / 60_000.0, 150.0 * b / 60_000.0] for b in btc]
    rng = np.random.default_rng(11)
    steps = (
        1
        + np.array([0.004, 0.002, 0.003])
        + np.array([0.02, 0.01, 0.03]) * (rng.standard_normal((WINDOW, 3)))
    )
    start = np.array([60_000.0, 3_000.0, 150.0])
    rows = np.vstack([start, start * np.cumprod(steps, axis=0)])
    return [[float(x) for x in row] for row in rows]


CASES: dict[str, dict[str, Any]] = {
    "kelly": {"kind": "kelly", "risk_tolerance": 0.3, "cap": 0.6},
    "risk_parity": {"kind": "risk_parity"},
    "equal": {"kind": "equal", "vol_target": {"target_volatility": 0.5, "max_leverage": 0.9}},
    "vol_target": {"kind": "kelly", "vol_target": {"target_volatility": 0.4}},
    "drawdown_guard": {"kind": "equal", "drawdown_guard": {"limit": 0.1, "floor": 0.3}},
}


def expected(case: str, marks: list[list[float]]) -> tuple[list[float], float | None]:
    """The backtester's functions on the same samples: weights, and the guard's exposure."""
    samples = [(T0 + i * HOUR, dict(zip(LABELS, m, strict=True))) for i, m in enumerate(marks)]
    r = asset_returns(samples, LABELS)
    assert r.shape == (WINDOW, 3)
    if case == "kelly":
        w = Kelly(WINDOW, risk_tolerance=0.3, cap=0.6, periods_per_year=PER_YEAR).target(r)
    elif case == "risk_parity":
        w = RiskParity(WINDOW, periods_per_year=PER_YEAR).target(r)
    elif case == "equal":
        w = VolatilityTarget(EqualWeight(), 0.5, 0.9, WINDOW, PER_YEAR).target(r)
    elif case == "vol_target":
        w = VolatilityTarget(Kelly(WINDOW, periods_per_year=PER_YEAR), 0.4, 1.0, WINDOW, PER_YEAR)
        w = w.target(r)
    else:
        values = [sum(q * m for q, m in zip(QTY, row, strict=True)) for row in marks]
        dd = float(drawdown(values)[-1])
        _, exposure = DrawdownProtection(0.1, 0.3).step(DrawdownState(), dd)
        return [exposure / 3] * 3, exposure
    return w.tolist(), None


def evaluations(app: RebalancerApp, outcome: str) -> float:
    value = app.metrics.registry.get_sample_value(
        "rebalancer_policy_evaluations_total", {"policy": "risk", "outcome": outcome}
    )
    return value or 0.0


@pytest.mark.parametrize("case", list(CASES))
async def test_a_risk_target_triggers_once_its_estimate_is_ready_with_the_functions_weights(
    bootstrap_servers: str, case: str
) -> None:
    target = {
        **CASES[case],
        "assets": [{"venue": "binance", "symbol": s} for s in SYMBOLS],
        "window": WINDOW,
        "sample_ms": HOUR,
    }
    rule = {
        "name": "risk",
        "worlds": ["a"],
        "trigger": {"kind": "calendar", "every": "daily"},
        "target": target,
    }
    settings = fresh_settings(
        bootstrap_servers,
        policies={
            "enabled": True,
            "check_interval_ms": 100,
            # shorter than a sample's spacing: marks of an hour ago are never sampled as new
            "max_snapshot_age_ms": 60_000,
            "rules": [rule],
        },
    )
    clock = Clock(T0 - 1_000)
    app = RebalancerApp(settings, clock=clock)
    await app.start()
    t = settings.topics
    marks = marks_path(case)

    def positions(row: list[float]) -> list[dict[str, Any]]:
        return [
            {"venue": "binance", "symbol": s, "qty": q, "mark": m}
            for s, q, m in zip(SYMBOLS, QTY, row, strict=True)
        ]

    def sampled() -> int:
        """The samples in the world's policy memory, as written to the changelog."""
        kept = app.policies.runner.engine.state.policy_memory("default", "a").target
        return len(kept.samples.times) if kept is not None else 0

    try:
        async with (
            Feed(bootstrap_servers) as feed,
            Tail(bootstrap_servers, t.plans) as plans,
            Tail(bootstrap_servers, t.allocations) as allocations,
        ):
            await feed.event(t.allocations, world_move("e1", {"a": 0.5}, {"a": 0.5}))
            await plans.count(1)
            for i, row in enumerate(marks):
                clock.now = T0 + i * HOUR
                await feed.snapshot(
                    t.snapshots, snapshot("a", "s1", positions(row), as_of=clock.now)
                )
                await app.snapshot_reader.caught_up()
                if i < len(marks) - 1:
                    estimating = evaluations(app, "estimating")
                    await until(lambda i=i: sampled() == i + 1, f"sample {i + 1}")
                    await until(
                        lambda e=estimating: evaluations(app, "estimating") > e, "estimating"
                    )
                    assert evaluations(app, "triggered") == 0
            # not ready until the last sample: nothing was published before it
            records = await plans.until(lambda rs: any(r.get("policy") for r in rs))
            assert sampled() == WINDOW + 1
            await allocations.until(lambda rs: any(r.get("type") == "policy_rebalance" for r in rs))
            await allocations.quiet(0.3)
            events = [e for e in allocations.records if e.get("type") == "policy_rebalance"]
            (event,) = events
            assert event["occurred_at"] == T0 + WINDOW * HOUR
            (record,) = [r for r in records if r.get("policy")]
            assert record["status"] == "planned"
            assert record["event_id"] == event["event_id"]
            published = record["policy"]
            assert published["target"]["kind"] == "weights"
            assert published["target"]["base"] == "allocation"
            weights = [w["weight"] for w in published["target"]["weights"]]
            want, exposure = expected(case, marks)
            assert weights == pytest.approx(want, abs=1e-12)
            assert [w["symbol"] for w in published["target"]["weights"]] == list(SYMBOLS)
            audit = published["estimate"]
            assert audit["method"] == CASES[case]["kind"]
            assert audit["samples"] == WINDOW + 1
            assert audit["sample_ms"] == HOUR
            assert (audit["first_sample_at"], audit["last_sample_at"]) == (
                T0,
                T0 + WINDOW * HOUR,
            )
            assert f"weights from {WINDOW + 1} mark samples" in published["reason"]
            if case == "drawdown_guard":
                assert audit["overlays"] == ["drawdown_guard"]
                assert audit["exposure"] == pytest.approx(exposure)
                assert 0.3 <= audit["exposure"] < 1
            if case in ("equal", "vol_target"):
                assert audit["overlays"] == ["vol_target"]
                assert sum(weights) <= (0.9 if case == "equal" else 1.0) + 1e-12
            assert evaluations(app, "estimating") >= WINDOW
            assert evaluations(app, "triggered") == 1
    finally:
        await app.stop()
