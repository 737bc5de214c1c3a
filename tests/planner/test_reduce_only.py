"""The reduce-only trading state in the planner (SPEC 7, issue 14 item 4): of a reduce-only
world's keys only what shrinks exposure is traded; a flip becomes a close to zero, a key that
opens or grows is held (dropped with reason ``held``) and the record says so."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from service.messages import DeltaIntent, PlanRecord
from service.planner import (
    MultiWorldProportionalRebalancer,
    Plan,
    PlannerOptions,
    PlanningContext,
    PlanningError,
    PositionTable,
    TargetWeightRebalancer,
    WorldChange,
    WorldTargets,
)
from tests.helpers import Row, plan_rows, world_deltas, world_dropped
from tests.planner.test_planner_properties import (
    SETTINGS,
    WORLDS,
    Scenario,
    build_context,
    run,
    scenarios,
)

# world a: s1 holds 2 X (halved: a shrink), s2 holds 1 Y (doubled: a growth)
ROWS: list[Row] = [("a", "s1", "v", "X", 2.0, 10.0, 0), ("a", "s2", "v", "Y", 1.0, 10.0, 0)]
HALVE_S1_DOUBLE_S2 = WorldChange("a", 0.3, 0.3, {"s1": 0.2, "s2": 0.1}, {"s1": 0.1, "s2": 0.2})
# long 3 (s1) and short 1 (s2) of X; s1 liquidated and s2 tripled: X flips from 2 to -3
FLIP_ROWS: list[Row] = [("a", "s1", "v", "X", 3.0, 10.0, 0), ("a", "s2", "v", "X", -1.0, 10.0, 0)]
FLIP = WorldChange("a", 0.4, 0.4, {"s1": 0.3, "s2": 0.1}, {"s1": 0.0, "s2": 0.3})


def valid(plan: Plan) -> None:
    PlanRecord.model_validate(plan.record())
    for intent in plan.intents():
        DeltaIntent.model_validate(intent)


def test_a_shrink_is_kept_and_a_growth_is_held() -> None:
    free = plan_rows(ROWS, [HALVE_S1_DOUBLE_S2])
    assert [(i["symbol"], i["delta_qty"]) for i in free.intents()] == [("X", -1.0), ("Y", 1.0)]
    held = plan_rows(ROWS, [HALVE_S1_DOUBLE_S2], reduce_only_worlds={"a"})
    valid(held)
    # the shrink is published exactly as it would be in an active world
    assert held.intents() == [i for i in free.intents() if i["symbol"] == "X"]
    assert world_deltas(held, "a")[("v", "X")]["reduce_only"] is True
    assert world_dropped(held, "a") == {("v", "Y"): "held"}
    (dropped,) = held.record()["per_world"]["a"]["dropped"]
    assert (dropped["current_qty"], dropped["delta_qty_unrounded"], dropped["notional"]) == (
        1.0,
        1.0,
        10.0,
    )
    record = held.record()
    assert (record["status"], record["held_reason"]) == ("planned", "reduce_only: worlds a")
    assert record["intent_ids"] == [i["intent_id"] for i in held.intents()]
    # one world planned whole: the global view is the world's, held alike
    assert [(d["symbol"], d["reason"]) for d in record["global_dropped"]] == [("Y", "held")]
    assert [d["symbol"] for d in record["global_deltas"]] == ["X"]
    assert free.record()["held_reason"] is None


def test_a_short_that_grows_is_held_and_one_that_is_covered_is_kept() -> None:
    rows: list[Row] = [("a", "s", "v", "X", -2.0, 10.0, 0)]
    grow = plan_rows(rows, [WorldChange("a", 0.1, 0.2)], reduce_only_worlds={"a"})
    assert grow.intents() == []
    assert world_dropped(grow, "a") == {("v", "X"): "held"}
    (cover,) = plan_rows(rows, [WorldChange("a", 0.2, 0.1)], reduce_only_worlds={"a"}).intents()
    assert (cover["delta_qty"], cover["reduce_only"], cover["leg"]) == (1.0, True, "adjust")


def test_a_flip_becomes_a_plain_close_to_zero() -> None:
    free = plan_rows(FLIP_ROWS, [FLIP], lot_size_by_symbol={"X": 0.1})
    assert [i["leg"] for i in free.intents()] == ["close", "open"]
    held = plan_rows(FLIP_ROWS, [FLIP], lot_size_by_symbol={"X": 0.1}, reduce_only_worlds={"a"})
    valid(held)
    key = world_deltas(held, "a")[("v", "X")]
    assert (key["current_qty"], key["target_qty"], key["delta_qty"]) == (2.0, 0.0, -2.0)
    assert (key["flip"], key["reduce_only"], key["notional"]) == (False, True, 20.0)
    assert key["delta_qty_unrounded"] == -5.0  # what was asked
    (close,) = held.intents()
    assert (close["leg"], close["target_qty"], close["delta_qty"], close["reduce_only"]) == (
        "close",
        0.0,
        -2.0,
        True,
    )
    assert close["depends_on"] is None
    # nothing was held: the open side of a flip is not a key of its own
    assert held.record()["held_reason"] is None


def test_a_direct_flip_becomes_a_close_too() -> None:
    options: dict[str, Any] = {"flip_policy": "direct_flip", "direct_flip_venues": ("v",)}
    (adjust,) = plan_rows(FLIP_ROWS, [FLIP], **options).intents()
    assert (adjust["leg"], adjust["delta_qty"], adjust["reduce_only"]) == ("adjust", -5.0, False)
    (close,) = plan_rows(FLIP_ROWS, [FLIP], reduce_only_worlds={"a"}, **options).intents()
    assert (close["leg"], close["delta_qty"], close["reduce_only"]) == ("close", -2.0, True)


def test_other_worlds_of_the_plan_trade_freely() -> None:
    rows = [*ROWS, ("b", "t1", "v", "X", 1.0, 10.0, 0)]
    changes = [HALVE_S1_DOUBLE_S2, WorldChange("b", 0.1, 0.2)]
    free = plan_rows(rows, changes)
    held = plan_rows(rows, changes, reduce_only_worlds={"a"})
    assert held.record()["per_world"]["b"] == free.record()["per_world"]["b"]
    assert [(i["world_id"], i["symbol"]) for i in held.intents()] == [("a", "X"), ("b", "X")]
    assert held.record()["held_reason"] == "reduce_only: worlds a"
    # the global view nets both worlds; with a reduce-only world planned, it grows nothing
    # either (X: -1 in a, +1 in b nets to nothing; Y grows: held)
    global_dropped = {d["symbol"]: d["reason"] for d in held.record()["global_dropped"]}
    assert global_dropped == {"X": "unchanged", "Y": "held"}


def test_a_reduce_only_world_not_planned_changes_nothing() -> None:
    rows = [*ROWS, ("b", "t1", "v", "X", 1.0, 10.0, 0)]
    free = plan_rows(rows, [WorldChange("b", 0.1, 0.2)])
    other = plan_rows(rows, [WorldChange("b", 0.1, 0.2)], reduce_only_worlds={"a", "zz"})
    assert orjson.dumps(other.record()) == orjson.dumps(free.record())
    assert other.plan_id == free.plan_id


def test_a_shared_account_publishes_only_what_shrinks_the_global_net() -> None:
    rows = [*ROWS, ("b", "t1", "v", "Y", 1.0, 10.0, 0), ("b", "t1", "v", "X", 1.0, 10.0, 0)]
    changes = [HALVE_S1_DOUBLE_S2, WorldChange("b", 0.2, 0.1)]
    shared: dict[str, Any] = {"execution_mode": "shared_account", "allow_shared_account": True}
    free = plan_rows(rows, changes, **shared)
    # X: 3 -> 1.5 (a halves its 2, b halves its 1); Y: 2 -> 2.5 (a doubles 1, b halves 1)
    assert [(i["symbol"], i["delta_qty"]) for i in free.intents()] == [("X", -1.5), ("Y", 0.5)]
    held = plan_rows(rows, changes, reduce_only_worlds={"a"}, **shared)
    valid(held)
    (intent,) = held.intents()
    assert (intent["world_id"], intent["symbol"], intent["delta_qty"]) == (None, "X", -1.5)
    assert intent["reduce_only"] is True
    record = held.record()
    assert [(d["symbol"], d["reason"]) for d in record["global_dropped"]] == [("Y", "held")]
    assert record["held_reason"] == "reduce_only: worlds a"
    # the worlds' own views (not published in a shared account) follow their own states
    assert world_dropped(held, "a") == {("v", "Y"): "held"}
    assert world_dropped(held, "b") == {}


def test_the_target_weight_planner_holds_what_a_reduce_only_world_would_open() -> None:
    rows: list[Row] = [("a", "s1", "bin", "BTC", 1.0, 100.0, 0)]
    targets = {
        "a": WorldTargets(
            weights={("bin", "BTC"): 0.5, ("bin", "ETH"): 0.5},
            equity=100.0,
            marks={("bin", "ETH"): 10.0},
        )
    }
    context = PlanningContext(
        event_id="e",
        portfolio_id="p",
        occurred_at=1_000,
        total_equity=100.0,
        changes=(),
        positions=PositionTable.from_rows(rows),
        options=PlannerOptions(),
        reduce_only_worlds=frozenset({"a"}),
    )
    plan = TargetWeightRebalancer(targets).plan(context)
    valid(plan)
    (intent,) = plan.intents()
    assert (intent["symbol"], intent["delta_qty"], intent["reduce_only"]) == ("BTC", -0.5, True)
    assert world_dropped(plan, "a") == {("bin", "ETH"): "held"}
    assert plan.record()["held_reason"] == "reduce_only: worlds a"


# --------------------------------------------------------------------------------------------
# A property, on the random portfolios of the planner's other properties
# --------------------------------------------------------------------------------------------


def keys_of(entries: list[dict[str, Any]]) -> Iterator[tuple[tuple[str | None, str], Any]]:
    for entry in entries:
        yield (entry["venue"], entry["symbol"]), entry


@SETTINGS
@given(scenarios(), st.sets(st.sampled_from(WORLDS)))
def test_reduce_only_publishes_only_what_shrinks(scenario: Scenario, reduce_only: set[str]) -> None:
    """In a reduce-only world every published leg is reduce-only and leaves each key no
    larger and on the same side; everything else of the plan is what it would be: kept
    shrinks, flips closed, growth held, other worlds untouched, the same plan id (the
    service hashes the reduce-only worlds into the trigger)."""
    try:
        free = run(scenario)
    except PlanningError:
        return
    context = build_context(scenario)
    restricted = MultiWorldProportionalRebalancer().plan(
        dataclasses.replace(context, reduce_only_worlds=frozenset(reduce_only))
    )
    valid(restricted)
    assert restricted.plan_id == free.plan_id
    shared = scenario.options.execution_mode == "shared_account"
    planned = {w for w, *_ in scenario.rows} & {c.world_id for c in scenario.changes}
    global_restricted = bool(reduce_only & planned)  # the global view nets a reduce-only world
    for intent in restricted.intents():
        if (intent["world_id"] in reduce_only) if not shared else global_restricted:
            current, target = intent["current_qty"], intent["target_qty"]
            assert intent["reduce_only"] is True, intent
            assert intent["leg"] in ("adjust", "close"), intent
            assert abs(target) <= abs(current), intent
            assert target * current >= 0, intent
    before, after = free.record(), restricted.record()
    views = [(w, w in reduce_only) for w in after["per_world"]]
    held_any = False
    for world_id, is_restricted in [*views, (None, global_restricted)]:
        if world_id is None:
            old = (before["global_deltas"], before["global_dropped"])
            new = (after["global_deltas"], after["global_dropped"])
        else:
            old = (
                before["per_world"][world_id]["deltas"],
                before["per_world"][world_id]["dropped"],
            )
            new = (after["per_world"][world_id]["deltas"], after["per_world"][world_id]["dropped"])
        if not is_restricted:
            assert new == old, world_id
            continue
        traded_now, dropped_now = dict(keys_of(new[0])), dict(keys_of(new[1]))
        assert dict(keys_of(old[1])).items() <= dropped_now.items(), world_id
        for key, was in keys_of(old[0]):
            if was["reduce_only"]:
                assert traded_now[key] == was, (world_id, key)
            elif was["flip"]:
                now = traded_now[key]
                assert (now["target_qty"], now["delta_qty"]) == (0.0, -was["current_qty"] + 0.0)
                assert (now["flip"], now["reduce_only"]) == (False, True), (world_id, key)
                if now["legs"]:
                    (leg,) = now["legs"]
                    assert (leg["leg"], leg["reduce_only"]) == ("close", True), (world_id, key)
            else:
                assert key not in traded_now, (world_id, key)
                assert dropped_now[key]["reason"] == "held", (world_id, key)
                assert dropped_now[key]["current_qty"] == was["current_qty"], (world_id, key)
                published = (world_id is None) == shared
                held_any |= published
    if held_any:
        assert after["held_reason"] is not None
        assert after["held_reason"].startswith("reduce_only: worlds ")
    else:
        assert after["held_reason"] is None
