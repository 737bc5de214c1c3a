"""The cost-aware planner: never trades a key whose cost is above its share of the benefit,
and trades exactly what its base planner does when trading is free."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.planner import (
    MultiWorldProportionalRebalancer,
    PlanningError,
    Rebalancer,
    WorldChange,
)
from service.planner.mix import MixRebalancer
from service.policies.cost_aware import CostAwareRebalancer
from service.policies.costs import CostModel
from tests.helpers import plan_rows, world_deltas, world_dropped
from tests.planner.test_planner_properties import Scenario, build_context, scenarios

PER_WORLD = {"execution_mode": "per_world", "allow_shared_account": False}
BASES: list[Rebalancer] = [MultiWorldProportionalRebalancer(), MixRebalancer()]
costs = st.builds(
    CostModel,
    fee_bps=st.sampled_from([0.0, 1.0, 10.0, 100.0]),
    half_spread_bps=st.sampled_from([0.0, 5.0]),
    fixed_per_trade=st.sampled_from([0.0, 0.5, 5.0, 500.0]),
)


def keys(record: dict[str, Any]) -> dict[tuple[str, Any, str], dict[str, Any]]:
    """Every world's traded keys, without what depends on the plan id (legs)."""
    return {
        (w, d["venue"], d["symbol"]): {k: v for k, v in d.items() if k != "legs"}
        for w, p in record["per_world"].items()
        for d in p["deltas"]
    }


def figures(d: dict[str, Any], model: CostModel, vol: float) -> tuple[float, float]:
    cost = abs(d["delta_qty"]) * d["mark"] * model.rate + model.fixed_per_trade
    unrounded = d["delta_qty_unrounded"]
    benefit = vol * d["mark"] * (abs(unrounded) - abs(unrounded - d["delta_qty"]))
    return cost, max(benefit, 0.0)


@settings(max_examples=150, deadline=None)
@given(
    scenarios(**PER_WORLD),
    costs,
    st.sampled_from([0.0, 0.1, 1.0, 10.0]),
    st.sampled_from([0.05, 0.6]),
    st.sampled_from(BASES),
)
def test_no_traded_key_costs_more_than_its_benefit(
    scenario: Scenario, model: CostModel, ratio: float, vol: float, base: Rebalancer
) -> None:
    aware = CostAwareRebalancer(base, model, volatility=vol, max_cost_to_benefit=ratio)
    try:
        base_plan = base.plan(build_context(scenario))
    except PlanningError:
        with pytest.raises(PlanningError):
            aware.plan(build_context(scenario))
        return
    plan = aware.plan(build_context(scenario))
    record, before = plan.record(), keys(base_plan.record())
    assert record["options"]["planner"] == "cost_aware"
    traded = keys(record)
    for key, d in traded.items():
        cost, benefit = figures(d, model, vol)
        assert cost <= ratio * benefit * (1 + 1e-9) + 1e-9, (key, cost, benefit)
        assert d == before[key]  # what trades, trades as the base planner planned it
    for w, p in record["per_world"].items():
        for d in p["dropped"]:
            if d["reason"] == "cost_exceeds_benefit":
                cost, benefit = figures(before[(w, d["venue"], d["symbol"])], model, vol)
                assert cost > ratio * benefit
    # every key the base traded either trades or was dropped for its cost
    dropped = {
        (w, d["venue"], d["symbol"])
        for w, p in record["per_world"].items()
        for d in p["dropped"]
        if d["reason"] == "cost_exceeds_benefit"
    }
    assert set(before) == set(traded) | dropped
    assert len(plan.intents()) <= len(base_plan.intents())


@settings(max_examples=150, deadline=None)
@given(scenarios(**PER_WORLD), st.sampled_from([0.0, 1.0]), st.sampled_from(BASES))
def test_free_trading_trades_exactly_what_the_base_planner_does(
    scenario: Scenario, ratio: float, base: Rebalancer
) -> None:
    aware = CostAwareRebalancer(base, CostModel(), volatility=0.3, max_cost_to_benefit=ratio)
    try:
        expected = base.plan(build_context(scenario)).record()
    except PlanningError:
        return
    plan = aware.plan(build_context(scenario))
    assert keys(plan.record()) == keys(expected)
    assert len(plan.intents()) == sum(len(d["legs"]) for d in keys_with_legs(expected))


def keys_with_legs(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for p in record["per_world"].values() for d in p["deltas"]]


def test_a_small_costly_key_is_dropped_and_a_large_one_kept() -> None:
    # halving: X sells 500 of notional, Y sells 5; a fixed cost of 2 per trade, X and Y at
    # 50% a year: X's benefit 0.5 x 500 = 250, Y's 0.5 x 5 = 2.5, with a ratio of 0.5: Y goes
    rows = [("a", "s", "v", "X", 10.0, 100.0, 0), ("a", "s", "v", "Y", 1.0, 10.0, 0)]
    base = plan_rows(rows, [WorldChange("a", 0.2, 0.1)])
    aware = CostAwareRebalancer(
        MultiWorldProportionalRebalancer(),
        CostModel(fixed_per_trade=2.0),
        volatility=0.5,
        max_cost_to_benefit=0.5,
    ).plan(base.context)
    assert set(world_deltas(aware, "a")) == {("v", "X")}
    assert world_dropped(aware, "a") == {("v", "Y"): "cost_exceeds_benefit"}
    assert aware.plan_id != base.plan_id
    (intent,) = aware.intents()
    assert (intent["symbol"], intent["delta_qty"], intent["plan_id"]) == ("X", -5.0, aware.plan_id)


def test_shared_account_is_refused() -> None:
    rows = [("a", "s", "v", "X", 10.0, 100.0, 0)]
    base = plan_rows(rows, [WorldChange("a", 0.2, 0.1)])
    shared = base.context.options.model_copy(
        update={"execution_mode": "shared_account", "allow_shared_account": True}
    )
    context = type(base.context)(**{**vars(base.context), "options": shared})
    aware = CostAwareRebalancer(MultiWorldProportionalRebalancer(), CostModel(), volatility=0.5)
    with pytest.raises(PlanningError, match="per world"):
        aware.plan(context)


def unrounded_by_key(entries: list[dict[str, Any]]) -> dict[tuple[Any, str], float]:
    out: dict[tuple[Any, str], float] = {}
    for d in entries:
        key = (d["venue"], d["symbol"])
        out[key] = out.get(key, 0.0) + d["delta_qty_unrounded"]
    return out


@settings(max_examples=150, deadline=None)
@given(
    scenarios(**PER_WORLD),
    costs,
    st.sampled_from([0.0, 1.0]),
    st.sampled_from(BASES),
    st.booleans(),
)
def test_the_global_view_nets_what_the_worlds_trade(
    scenario: Scenario, model: CostModel, ratio: float, base: Rebalancer, aware: bool
) -> None:
    """SPEC 3.4 for every planner the service runs: the global view of a plan is the net of
    its worlds' moves per (venue, symbol), a key its world does not trade for cost left out."""
    planner = CostAwareRebalancer(base, model, volatility=0.3, max_cost_to_benefit=ratio)
    try:
        record = (planner if aware else base).plan(build_context(scenario)).record()
    except PlanningError:
        return
    worlds = record["per_world"].values()
    if any(d["reason"] == "cost_exceeds_benefit" for d in record["global_dropped"]):
        # one world with positions, planned whole: its view is the global view, entry for entry
        (world,) = [w for w in worlds if w["deltas"] or w["dropped"]]
        assert [d["symbol"] for d in record["global_dropped"]] == [
            d["symbol"] for d in world["dropped"]
        ]
        assert unrounded_by_key(record["global_deltas"]) == unrounded_by_key(world["deltas"])
        return
    asked = [
        d
        for p in worlds
        for d in p["deltas"] + p["dropped"]
        if d.get("reason") != "cost_exceeds_benefit"
    ]
    expected = unrounded_by_key(asked)
    netted = unrounded_by_key(record["global_deltas"] + record["global_dropped"])
    for key in expected.keys() | netted.keys():
        want, got = expected.get(key, 0.0), netted.get(key, 0.0)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (key, want, got)
