"""The cost gate live, on a real broker: two worlds drift alike; the rule of one has a strict
gate and its correction is skipped (a record with both figures, no intent, the world left
free), the other's is carried out with its figures."""

from __future__ import annotations

import pytest

from service.app import RebalancerApp
from tests.kafka_support import Feed, Tail, fresh_settings
from tests.stream.test_policy_stream import until
from tests.stream.test_stream_service import btc, snapshot, world_move

BAND = {"kind": "band", "mode": "absolute", "threshold": 0.02}
TARGET = {"kind": "allocation", "measure": "gross"}
CASH = 410_000.0
"""Each world's cash: policies weigh worlds against the equity measured from snapshots."""


def rule(world: str, ratio: float) -> dict[str, object]:
    return {
        "name": f"keep-{world}",
        "worlds": [world],
        "trigger": BAND,
        "target": TARGET,
        "cooldown_ms": 3_600_000,  # one trigger: what follows a skip is throttled, not busy
        "cost_gate": {"max_cost_to_benefit": ratio, "volatility": 0.6},
    }


def sample(app: RebalancerApp, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_correction_above_its_gate_is_skipped_and_one_within_it_is_taken(
    bootstrap_servers: str,
) -> None:
    settings = fresh_settings(
        bootstrap_servers,
        planner={"lot_size_by_symbol": {"BTCUSDT": 0.001}},
        costs={"fee_bps": 10.0, "fixed_per_trade": 5_000.0},
        policies={
            "enabled": True,
            "check_interval_ms": 200,
            "rules": [rule("a", 0.1), rule("b", 1.0)],
        },
    )
    app = RebalancerApp(settings)
    await app.start()
    servers, t = bootstrap_servers, settings.topics
    try:
        async with (
            Feed(servers) as feed,
            Tail(servers, t.plans) as plans,
            Tail(servers, t.intents) as intents,
            Tail(servers, t.notifications) as notifications,
        ):
            # worlds a and b each hold 1 BTC at 60,000 and 410,000 in cash: a measured equity
            # of 940,000, each world at 0.064 against 0.06, in its band
            for w in ("a", "b"):
                await feed.snapshot(
                    t.snapshots, snapshot(w, "s1", [btc(1.0)], as_of=app.clock(), cash=CASH)
                )
            await app.snapshot_reader.caught_up()
            await feed.event(
                t.allocations, world_move("e1", {"a": 0.06, "b": 0.06}, {"a": 0.06, "b": 0.06})
            )
            await plans.count(1)

            # BTC rises to 90,000: the measured equity is 1,000,000, both worlds at 0.09. Each
            # correction sells 0.333 BTC (29,970):
            # cost 29.97 + 5,000 = 0.50% of equity; benefit 0.6 x 0.03 = 1.8% a year
            for w in ("a", "b"):
                await feed.snapshot(
                    t.snapshots,
                    snapshot(w, "s1", [btc(1.0, mark=90_000.0)], as_of=app.clock(), cash=CASH),
                )
            records = await plans.until(lambda rs: len([r for r in rs if r.get("policy")]) >= 2)
            by_world = {r["policy"]["world_id"]: r for r in records if r.get("policy")}

            skipped, taken = by_world["a"], by_world["b"]
            assert skipped["status"] == "skipped_by_cost_gate"
            assert skipped["intent_ids"] == []
            gate = skipped["cost_gate"]
            assert gate["go"] is False
            assert gate["cost"] == pytest.approx(0.333 * 90_000 * 0.001 + 5_000)
            assert gate["cost_share"] == pytest.approx(gate["cost"] / 1_000_000)
            assert gate["tracking_error_before"] == pytest.approx(0.6 * 0.03)
            assert gate["benefit_share"] == pytest.approx(0.6 * 0.03, rel=1e-2)
            assert gate["max_cost_to_benefit"] == 0.1
            assert gate["cost_share"] > 0.1 * gate["benefit_share"]
            (would,) = skipped["per_world"]["a"]["deltas"]
            assert (would["delta_qty"], would["legs"]) == (-0.333, [])

            assert taken["status"] == "planned"
            assert taken["cost_gate"]["go"] is True
            assert taken["cost_gate"]["cost"] == gate["cost"]
            assert taken["cost_gate"]["benefit_share"] == gate["benefit_share"]
            (intent,) = await intents.until(
                lambda rs: any(r["plan_id"] == taken["plan_id"] for r in rs)
            )
            assert (intent["world_id"], intent["delta_qty"]) == ("b", -0.333)

            # counted, notified, and world a is left free: later looks are throttled by the
            # rule's cooldown, never busy; no intent for a ever appears
            await until(
                lambda: sample(app, "rebalancer_policy_cost_gated_total", policy="keep-a") == 1,
                "the skip counted",
            )
            notes = await notifications.until(
                lambda rs: any(n["kind"] == "skipped_by_cost_gate" for n in rs)
            )
            (note,) = [n for n in notes if n["kind"] == "skipped_by_cost_gate"]
            assert note["world_ids"] == ["a"]
            assert note["policy"] == "keep-a"
            assert "above 0.1 x expected benefit" in note["text"]
            labels = {"policy": "keep-a", "outcome": "throttled"}
            throttled = sample(app, "rebalancer_policy_evaluations_total", **labels)
            await until(
                lambda: (
                    sample(app, "rebalancer_policy_evaluations_total", **labels) >= throttled + 3
                ),
                "world a evaluated again, throttled",
            )
            busy = {"policy": "keep-a", "outcome": "busy"}
            assert sample(app, "rebalancer_policy_evaluations_total", **busy) == 0
            await intents.quiet(0.3)
            assert all(i["world_id"] == "b" for i in intents.records)
            assert app.state.world("default", "a").in_flight is None
            assert sample(app, "rebalancer_policy_cost_gated_total", policy="keep-b") == 0
    finally:
        await app.stop()
