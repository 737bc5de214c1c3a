"""The target-weight planner of allocation moves: a world keeps its mix, sized to its
allocation of total equity (where the proportional planner keeps its drift)."""

from __future__ import annotations

import pytest

from service.planner import MultiWorldProportionalRebalancer, PlanningError, WorldChange
from service.planner.mix import MixRebalancer
from tests.helpers import plan_rows, world_deltas

# world a: 1 X at 100 and 2 Y at 50 (200, half each) of 1,000 equity, allocated 0.3
ROWS = [("a", "s1", "v", "X", 1.0, 100.0, 0), ("a", "s2", "v", "Y", 2.0, 50.0, 0)]


def test_the_world_is_sized_to_its_allocation_in_its_current_mix() -> None:
    base = plan_rows(ROWS, [WorldChange("a", 0.3, 0.3)], total_equity=1_000.0)
    assert MultiWorldProportionalRebalancer().plan(base.context).intents() == []  # drift kept
    plan = MixRebalancer().plan(base.context)
    assert plan.record()["options"]["planner"] == "target_weight"
    deltas = world_deltas(plan, "a")
    # 300 in the mix of now, half each: 1.5 X and 3 Y
    assert deltas[("v", "X")]["target_qty"] == pytest.approx(1.5)
    assert deltas[("v", "Y")]["target_qty"] == pytest.approx(3.0)
    # a move halves it, whatever it was before
    half = MixRebalancer().plan(
        plan_rows(ROWS, [WorldChange("a", 0.3, 0.1)], total_equity=1_000.0).context
    )
    assert world_deltas(half, "a")[("v", "X")]["target_qty"] == pytest.approx(0.5)
    assert world_deltas(half, "a")[("v", "Y")]["target_qty"] == pytest.approx(1.0)


def test_the_same_input_gives_the_same_plan_id() -> None:
    one = plan_rows(ROWS, [WorldChange("a", 0.3, 0.2)], total_equity=1_000.0).context
    two = plan_rows(list(reversed(ROWS)), [WorldChange("a", 0.3, 0.2)], total_equity=1_000.0)
    assert MixRebalancer().plan(one).plan_id == MixRebalancer().plan(two.context).plan_id


def test_a_world_worth_nothing_net_cannot_be_measured() -> None:
    rows = [("a", "s", "v", "X", 1.0, 100.0, 0), ("a", "s", "v", "Y", -3.0, 50.0, 0)]
    context = plan_rows(rows, [WorldChange("a", 0.3, 0.2)], total_equity=1_000.0).context
    with pytest.raises(PlanningError, match="net value is -50"):
        MixRebalancer().plan(context)
