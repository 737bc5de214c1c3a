"""The cost gate of live policy corrections through the engine, without Kafka: a correction
whose cost is above its share of the expected benefit is skipped (its record says so, with
both figures, and publishes nothing), one within it is planned with its figures, and a
skipped one is decided the same way again after a crash."""

from __future__ import annotations

import orjson
import pytest

from service.engine import RebalanceEngine
from service.engine.notices import of_work
from service.messages import PlanRecord
from service.planner import PlannerOptions
from service.policies.costs import CostGate, CostModel
from service.policies.gate import CorrectionGate
from tests.engine.test_engine import Harness, event
from tests.engine.test_policy_engine import T0, drift_to, policy, snap

VOL = 0.5


def gated(fixed_per_trade: float, **gates: float) -> Harness:
    """World a at 0.2 of 1,000 equity holding 2 X at 100 (on target), the rest world
    ``reserve``'s 800 in cash (so the measured equity is 1,000 at 100), lots of 0.001, policy
    ``keep`` gated: 10 bps fee, ``fixed_per_trade``, X assumed to move 50% a year."""
    gate = CorrectionGate(
        costs=CostModel(fee_bps=10.0, fixed_per_trade=fixed_per_trade),
        gate=CostGate(max_cost_to_benefit=gates.get("ratio", 1.0)),
        volatility=VOL,
    )
    h = Harness(planner=PlannerOptions(lot_size_by_symbol={"X": 0.001}), cost_gates={"keep": gate})
    h.snapshots.apply(snap("s1", [("X", 1.5, 100.0)], as_of=T0 - 5))
    h.snapshots.apply(snap("s2", [("X", 0.5, 100.0)], as_of=T0 - 5))
    h.snapshots.apply(snap("cash", [], as_of=T0 - 5, world="reserve", cash=800.0))
    allocs = {"a": 0.2, "reserve": 0.8}
    h.send(
        event(world_alloc_before=allocs, world_alloc_after=allocs, total_equity=1_000.0),
        T0 - 1,
    )
    drift_to(h, 130.0)  # 2 x 130 = 260 of a measured 1,060: 0.2453 against 0.2
    return h


# The equity the gate weighs with is the measured one, 1,060 (260 in X, 800 in cash).
# Selling 0.369 X at 130 (47.97): before 260 / 1,060 = 0.2453 of equity in X, target 0.2,
# after 1.631 x 130 / 1,060 = 0.20003; with X at 50% a year, the tracking error goes from
# 0.5 x 0.0453 to 0.5 x 0.00003.
EQUITY = 1_060.0
TE_BEFORE = VOL * (260 / EQUITY - 0.2)
TE_AFTER = VOL * (1.631 * 130 / EQUITY - 0.2)
NOTIONAL = 0.369 * 130


def test_a_correction_within_its_benefit_is_planned_with_both_figures() -> None:
    h = gated(fixed_per_trade=1.0)
    work = h.send(policy(), T0 + 20)
    (record,) = work.records
    assert record["status"] == "planned"
    assert len(work.intents) == 1
    figures = record["cost_gate"]
    assert figures["go"] is True
    assert figures["cost"] == pytest.approx(NOTIONAL * 0.001 + 1.0)
    assert figures["cost_share"] == pytest.approx((NOTIONAL * 0.001 + 1.0) / EQUITY)
    assert figures["tracking_error_before"] == pytest.approx(TE_BEFORE)
    assert figures["tracking_error_after"] == pytest.approx(TE_AFTER, abs=1e-12)
    assert figures["benefit_share"] == pytest.approx(TE_BEFORE - TE_AFTER)
    assert figures["equity"] == EQUITY
    PlanRecord.model_validate_json(orjson.dumps(record))
    assert h.state.world("default", "a").in_flight is not None


def test_a_correction_costing_more_than_its_benefit_is_skipped_and_frees_its_world() -> None:
    h = gated(fixed_per_trade=50.0)  # 50.05 of 1,060 = 0.047 against a benefit of 0.023
    work = h.send(policy(), T0 + 20)
    assert work.intents == []
    assert not work.has_intents
    (record,) = work.records
    assert record["status"] == "skipped_by_cost_gate"
    assert record["intent_ids"] == []
    figures = record["cost_gate"]
    assert figures["go"] is False
    assert figures["cost"] == pytest.approx(NOTIONAL * 0.001 + 50.0)
    assert figures["benefit_share"] == pytest.approx(TE_BEFORE - TE_AFTER)
    assert figures["cost_share"] > figures["benefit_share"]
    # what it would have traded is kept for the audit, without legs
    (delta,) = record["per_world"]["a"]["deltas"]
    assert delta["delta_qty"] == -0.369
    assert delta["legs"] == []
    assert record["policy"]["policy"] == "keep"
    PlanRecord.model_validate_json(orjson.dumps(record))
    # nothing in flight, nothing held: the world is free; the trigger still counts (cooldown)
    world = h.state.world("default", "a")
    assert world.in_flight is None
    assert world.held is None
    assert world.policy_triggers == [T0 + 10]
    assert world.alloc == 0.2
    assert h.state.was_applied("default", "policy:keep:a:t1")
    assert h.state.pending == {}
    assert not h.engine.busy(world, T0 + 21)
    (note,) = of_work(work)
    assert note.kind == "skipped_by_cost_gate"
    assert note.trigger == "policy"
    assert note.intents == 0
    assert note.reason is not None
    assert "above 1 x expected benefit" in note.reason
    assert "cost 50.05" in note.text


def test_a_ratio_above_one_lets_a_costlier_correction_go() -> None:
    work = gated(fixed_per_trade=50.0, ratio=3.0).send(policy(), T0 + 20)
    (record,) = work.records
    assert record["status"] == "planned"
    assert record["cost_gate"]["go"] is True
    assert record["cost_gate"]["max_cost_to_benefit"] == 3.0


def test_a_skipped_correction_is_the_same_after_a_crash() -> None:
    h = gated(fixed_per_trade=50.0)
    work = h.engine.on_event(policy(), T0 + 20)
    assert work.pending is not None
    h.state.apply(*work.pending)  # the write-ahead landed, then the process died
    resumed = RebalanceEngine.resume(h.state.pending_plan("default"))
    assert orjson.dumps(resumed.records) == orjson.dumps(work.records)
    assert resumed.intents == []
    # had it died before the write-ahead: the same plan, decision and figures (only the
    # time it was made differs, as for any plan made again)
    other = gated(fixed_per_trade=50.0)
    again = other.engine.on_event(policy(), T0 + 99)

    def timeless(record: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in record.items() if k not in ("created_at", "expires_at")}

    assert orjson.dumps([timeless(r) for r in again.records]) == orjson.dumps(
        [timeless(r) for r in work.records]
    )


def test_an_operators_rebalance_and_an_ungated_policy_are_not_gated() -> None:
    work = gated(fixed_per_trade=50.0).send(policy(trigger="command"), T0 + 20)
    (record,) = work.records
    assert record["status"] == "planned"
    assert "cost_gate" not in record
    other = gated(fixed_per_trade=50.0).send(
        policy(event_id="policy:other:a:t1", policy="other"), T0 + 20
    )
    assert other.records[0]["status"] == "planned"
    assert "cost_gate" not in other.records[0]


def test_an_allocation_change_is_never_gated() -> None:
    h = gated(fixed_per_trade=1e6)
    work = h.send(
        event(
            event_id="e2",
            world_alloc_before={"a": 0.2},
            world_alloc_after={"a": 0.1},
            total_equity=1_000.0,
        ),
        T0 + 20,
    )
    (record,) = work.records
    assert record["status"] == "planned"
    assert work.intents
    assert "cost_gate" not in record
