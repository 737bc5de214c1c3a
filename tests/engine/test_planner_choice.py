"""Planners chosen per portfolio or world (``[[planners.choice]]``) through the engine."""

from __future__ import annotations

from typing import Any

from service.engine.choice import Chosen, PlannerChoice
from service.planner import MultiWorldProportionalRebalancer
from service.planner.mix import MixRebalancer
from service.policies.cost_aware import CostAwareRebalancer
from service.policies.costs import CostModel
from tests.engine.test_engine import Harness, event, snap
from tests.engine.test_policy_engine import T0, policy
from tests.engine.test_policy_engine import snap as snap_at

MIX = Chosen(MixRebalancer())
BOUNDED = Chosen(MultiWorldProportionalRebalancer(), scale_rule="bounded")


def harness(**choice: Any) -> Harness:
    """Worlds a and b, each holding 1 X at 100 in strategy s; 1,000,000 equity."""
    h = Harness(planners=PlannerChoice(**choice))
    h.snapshots.apply(snap("s", 1.0, world="a"))
    h.snapshots.apply(snap("s", 1.0, world="b"))
    return h


def planner_of(record: dict[str, Any]) -> tuple[str, str]:
    return record["options"]["planner"], record["options"]["scale_rule"]


def test_a_worlds_own_planner_plans_its_moves() -> None:
    h = harness(by_world={("default", "a"): MIX})
    moved = h.send(event(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.1}))
    assert planner_of(moved.records[0]) == ("target_weight", "strategy")
    assert moved.intents[0]["target_qty"] == 0.1 * 1_000_000 / 100.0  # its mix at 0.1
    other = h.send(
        event(event_id="e2", world_alloc_before={"b": 0.2}, world_alloc_after={"b": 0.1})
    )
    assert planner_of(other.records[0]) == ("proportional", "strategy")
    assert other.intents[0]["target_qty"] == 0.5


def test_worlds_that_disagree_take_their_portfolios_planner() -> None:
    h = harness(by_portfolio={"default": BOUNDED}, by_world={("default", "a"): MIX})
    both = h.send(
        event(world_alloc_before={"a": 0.2, "b": 0.2}, world_alloc_after={"a": 0.1, "b": 0.1})
    )
    assert planner_of(both.records[0]) == ("proportional", "bounded")


def test_without_a_choice_the_plan_is_the_one_of_before() -> None:
    ev = event(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.1})
    unchosen = harness().send(ev)
    plain = Harness()
    plain.snapshots.apply(snap("s", 1.0, world="a"))
    plain.snapshots.apply(snap("s", 1.0, world="b"))
    assert unchosen.records[0]["plan_id"] == plain.send(ev).records[0]["plan_id"]
    elsewhere = harness(by_portfolio={"other": MIX}).send(ev)
    assert elsewhere.records[0]["plan_id"] == unchosen.records[0]["plan_id"]


def test_a_policy_correction_is_planned_by_its_worlds_planner() -> None:
    aware = CostAwareRebalancer(
        MultiWorldProportionalRebalancer(), CostModel(fixed_per_trade=1e6), volatility=0.5
    )
    h = Harness(planners=PlannerChoice(by_world={("default", "a"): Chosen(aware)}))
    h.snapshots.apply(snap_at("s1", [("X", 2.0, 100.0)], as_of=T0 - 5))
    h.send(
        event(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.2}, total_equity=1_000.0),
        T0 - 1,
    )
    h.snapshots.apply(snap_at("s1", [("X", 2.0, 130.0)], as_of=T0))
    work = h.send(policy(), T0 + 20)
    (record,) = work.records
    assert record["options"]["planner"] == "cost_aware"
    assert work.intents == []  # a trade costing a million is worth none of its benefit
    (dropped,) = record["per_world"]["a"]["dropped"]
    assert dropped["reason"] == "cost_exceeds_benefit"
    # weights corrections are weighed the same way, over the target-weight planner
    target = {"kind": "weights", "weights": [{"venue": "v", "symbol": "X", "weight": 0.5}]}
    weights = h.send(
        policy(event_id="policy:keep:a:t2", occurred_at=T0 + 30, target=target), T0 + 40
    )
    assert weights.records[0]["options"]["planner"] == "cost_aware"
    assert weights.intents == []
