"""One rule, offline and live: the same rule configuration over the same prices rebalances on
the same dates, to the same weights, with the same plan ids, in ``rebalancer backtest
--config`` (``service.live.replay``) and in a running service fed those prices as snapshots
at simulated times on a real broker."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.app import RebalancerApp
from service.backtest import PriceTable
from service.live.replay import Book, close_ms, replay
from service.policies import CostModel
from tests.kafka_support import Feed, Tail, fresh_settings
from tests.stream.test_policy_stream import until

pytestmark = pytest.mark.broker

RULE = {
    "name": "half",
    "worlds": ["a"],
    "trigger": {"kind": "hybrid", "every": "weekly", "mode": "absolute", "threshold": 0.01},
    "target": {
        "kind": "weights",
        "base": "holdings",
        "weights": [
            {"venue": "v", "symbol": "X", "weight": 0.5},
            {"venue": "v", "symbol": "Y", "weight": 0.5},
        ],
    },
}
RISK_PARITY = {
    "name": "rp",
    "worlds": ["a"],
    "trigger": {"kind": "calendar", "every": "weekly"},
    "target": {
        "kind": "risk_parity",
        "assets": [{"venue": "v", "symbol": "X"}, {"venue": "v", "symbol": "Y"}],
        "window": 10,
        "sample_ms": 86_400_000,
    },
}
LOTS = {"lot_size_by_symbol": {"X": 1e-6, "Y": 1e-6}}


def prices(n: int = 75) -> PriceTable:
    rng = np.random.default_rng(1)
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + n)
    return PriceTable(
        dates, ("v:X", "v:Y"), 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (n, 2)), 0))
    )


def evaluated(app: RebalancerApp, rule: str, outcome: str | None = None) -> float:
    """Evaluations of the rule so far (with ``outcome``, or any)."""
    total = 0.0
    for metric in app.metrics.registry.collect():
        for sample in metric.samples:
            if (
                sample.name == "rebalancer_policy_evaluations_total"
                and sample.labels.get("policy") == rule
                and outcome in (None, sample.labels.get("outcome"))
            ):
                total += sample.value
    return total


@pytest.mark.parametrize("rule", [RULE, RISK_PARITY], ids=["hybrid-weights", "risk-parity"])
async def test_a_replay_through_the_service_rebalances_as_backtest_config_does(
    bootstrap_servers: str, rule: dict[str, Any]
) -> None:
    table = prices()
    settings = fresh_settings(
        bootstrap_servers,
        planner=LOTS,
        policies={"enabled": True, "check_interval_ms": 3_600_000, "rules": [rule]},
    )
    offline = replay(settings.policies, table, planner=settings.planner)
    assert len(offline.rebalances) >= 2  # the comparison has something to compare

    start = close_ms(table.dates[0])
    now = [start - 1]
    app = RebalancerApp(settings, clock=lambda: now[0])
    await app.start()
    t = settings.topics
    book = Book(table.assets, settings.policies.rules, CostModel())
    book.seed(1_000_000.0, table.prices[0])
    live: list[dict[str, Any]] = []
    try:
        async with (
            Feed(bootstrap_servers) as feed,
            Tail(bootstrap_servers, t.plans) as plans,
            Tail(bootstrap_servers, t.intents) as intents,
        ):
            (allocation,) = book.allocation_events(1_000_000.0, start - 1)
            await feed.event(t.allocations, allocation.model_dump(mode="json"))
            await plans.until(lambda rs: any(r["event_id"] == allocation.event_id for r in rs))
            world = book.worlds[("default", "a")]

            async def look(row: np.ndarray, at: int) -> bool:
                """Publish the world's snapshot, wait until the rule has looked at it, and
                say whether it triggered."""
                name = rule["name"]
                before, triggered = evaluated(app, name), evaluated(app, name, "triggered")
                now[0] = at
                snap = book.snapshot(world, row, at).model_dump(mode="json", exclude_none=True)
                await feed.snapshot(t.snapshots, snap)
                await until(lambda: evaluated(app, name) > before, f"a look at {at}")
                return evaluated(app, name, "triggered") > triggered

            for date, row in zip(table.dates, table.prices, strict=True):
                at = close_ms(date)
                seen = len(plans.records)
                triggered = await look(row, at)
                while triggered:
                    found = await plans.until(
                        lambda rs, seen=seen: any(r.get("policy") for r in rs[seen:])
                    )
                    (record,) = [r for r in found[seen:] if r.get("policy")]
                    seen = len(plans.records)
                    ids = set(record["intent_ids"])
                    if not ids:
                        break
                    mine = await intents.until(
                        lambda rs, ids=ids: ids <= {r["intent_id"] for r in rs}
                    )
                    fill = book.fill([i for i in mine if i["intent_id"] in ids])
                    live.append(
                        {
                            "date": str(date),
                            "plan_id": record["plan_id"],
                            "traded": fill[("default", "a")].traded,
                            "weights": book.weights(world, row),
                        }
                    )
                    at += 1
                    triggered = await look(row, at)
    finally:
        await app.stop()
    assert [(r["date"], r["plan_id"]) for r in live] == [
        (r.date, r.plan_id) for r in offline.rebalances
    ]
    for got, want in zip(live, offline.rebalances, strict=True):
        assert got["weights"] == want.weights
        assert got["traded"] == want.traded
