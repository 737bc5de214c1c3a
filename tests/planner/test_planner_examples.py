"""SPEC 3.5's reference examples, exactly, and the rules of SPEC 3.1-3.4 one by one."""

from __future__ import annotations

import numpy as np
import pytest

from service.planner import PlanningError, WorldChange
from service.planner.netting import round_to_lots
from tests.helpers import Row, plan_rows, world_deltas, world_dropped


def test_world_move_with_same_strategy_share_scales_every_position_to_two_thirds() -> None:
    plan = plan_rows(
        [("a", "b", "binance", "BTC", 1.0, 60_000.0, 0)],
        [WorldChange("a", 0.3, 0.2, {"b": 0.1}, {"b": 0.0667})],
        lot_size_by_symbol={"BTC": 0.001},
    )
    key = world_deltas(plan, "a")[("binance", "BTC")]
    assert key["delta_qty"] == -0.333
    assert key["target_qty"] == 0.667
    assert key["reduce_only"] is True


def test_exact_two_thirds_also_gives_minus_0_333_with_lot_0_001() -> None:
    plan = plan_rows(
        [("a", "b", "binance", "BTC", 1.0, 60_000.0, 0)],
        [WorldChange("a", 0.3, 0.2)],
        lot_size_by_symbol={"BTC": 0.001},
    )
    assert world_deltas(plan, "a")[("binance", "BTC")]["delta_qty"] == -0.333


def test_two_strategies_net_into_one_reduce_only_intent(btc_rows: list[Row]) -> None:
    plan = plan_rows(
        btc_rows, [WorldChange("a", 0.3, 0.2, {"s1": 0.15, "s2": 0.15}, {"s1": 0.1, "s2": 0.1})]
    )
    intents = plan.intents()
    assert len(intents) == 1
    (intent,) = intents
    assert intent["delta_qty"] == -0.5
    assert intent["reduce_only"] is True
    assert intent["leg"] == "adjust"
    breakdown = {b["strategy_id"]: b["delta_qty"] for b in intent["strategy_breakdown"]}
    assert breakdown == {"s1": -0.2, "s2": -0.3}


def test_move_below_min_notional_gives_no_intent() -> None:
    plan = plan_rows(
        [("a", "s", "v", "X", 1.0, 100.0, 0)],
        [WorldChange("a", 0.2, 0.199)],
        min_trade_notional=1.0,
    )
    assert plan.intents() == []
    assert world_dropped(plan, "a") == {("v", "X"): "below_min_notional"}


def test_two_slices_halved_with_lot_quarter_give_one_intent_of_minus_one() -> None:
    plan = plan_rows(
        [("a", "s1", "v", "ETH", 1.0, 100.0, 0), ("a", "s2", "v", "ETH", 1.0, 100.0, 0)],
        [WorldChange("a", 0.4, 0.2)],
        lot_size_by_symbol={"ETH": 0.25},
    )
    (intent,) = plan.intents()
    assert intent["delta_qty"] == -1.0
    assert intent["target_qty"] == 1.0


def test_min_notional_exactly_equal_is_kept() -> None:
    plan = plan_rows(
        [("a", "s", "v", "X", 2.0, 100.0, 0)],
        [WorldChange("a", 0.2, 0.1)],
        min_trade_notional=100.0,
    )
    (intent,) = plan.intents()
    assert intent["notional"] == 100.0


def test_lot_tolerance_counts_0_3_over_0_1_as_three_lots() -> None:
    # halving 0.6 is a delta of -0.3, and 0.3 / 0.1 is 2.9999999999999996 in floats
    assert 0.3 / 0.1 < 3
    plan = plan_rows(
        [("a", "s", "v", "X", 0.6, 10.0, 0)],
        [WorldChange("a", 0.4, 0.2)],
        lot_size_by_symbol={"X": 0.1},
    )
    (intent,) = plan.intents()
    assert intent["delta_qty"] == -0.3
    assert intent["target_qty"] == 0.3


def test_round_to_lots_tolerates_float_noise_but_not_real_shortfalls() -> None:
    x = np.array([0.29999999999999993, -0.29999999999999993, 0.2999999, 0.0999999999999, 1e-12])
    rounded = round_to_lots(x, np.full(5, 1.0), np.full(5, 10.0))
    assert rounded.tolist() == [0.3, -0.3, 0.2, 0.1, 0.0]


def test_lot_rounding_is_toward_zero_for_buys_and_sells() -> None:
    plan = plan_rows(
        [("a", "s", "v", "X", 1.0, 10.0, 0), ("b", "s", "v", "X", -1.0, 10.0, 0)],
        [WorldChange("a", 0.3, 0.4), WorldChange("b", 0.3, 0.4)],
        lot_size_by_symbol={"X": 0.1},
    )
    assert world_deltas(plan, "a")[("v", "X")]["delta_qty"] == 0.3  # +0.333.. -> 0.3
    assert world_deltas(plan, "b")[("v", "X")]["delta_qty"] == -0.3


def test_per_venue_lot_size_wins_over_symbol_lot_size() -> None:
    rows: list[Row] = [("a", "s", "v1", "X", 1.0, 10.0, 0), ("a", "s", "v2", "X", 1.0, 10.0, 0)]
    plan = plan_rows(
        rows,
        [WorldChange("a", 0.3, 0.2)],
        lot_size_by_symbol={"X": 0.1},
        lot_size_by_venue={"v2": {"X": 0.25}},
    )
    deltas = world_deltas(plan, "a")
    assert deltas[("v1", "X")]["delta_qty"] == -0.3
    assert deltas[("v2", "X")]["delta_qty"] == -0.25


def test_key_that_rounds_to_zero_is_dropped_with_that_reason() -> None:
    plan = plan_rows(
        [("a", "s", "v", "X", 1.0, 10.0, 0)],
        [WorldChange("a", 0.3, 0.29)],
        lot_size_by_symbol={"X": 1},
    )
    assert plan.intents() == []
    assert world_dropped(plan, "a") == {("v", "X"): "rounded_to_zero"}


def test_liquidating_a_world_closes_exactly_even_off_lot() -> None:
    plan = plan_rows(
        [("a", "s1", "v", "X", 0.1234567, 10.0, 0), ("a", "s2", "v", "X", 1.0, 10.0, 0)],
        [WorldChange("a", 0.3, 0.0)],
        lot_size_by_symbol={"X": 0.1},
    )
    (intent,) = plan.intents()
    assert intent["leg"] == "close"
    assert intent["target_qty"] == 0.0
    assert intent["delta_qty"] == -1.1234567
    assert intent["reduce_only"] is True


def test_strategy_weight_zero_liquidates_it_under_both_rules() -> None:
    for rule in ("strategy", "bounded"):
        plan = plan_rows(
            [("a", "s1", "v", "X", 2.0, 10.0, 0), ("a", "s2", "v", "Y", 3.0, 10.0, 0)],
            [WorldChange("a", 0.3, 0.4, {"s1": 0.1, "s2": 0.2}, {"s1": 0.0})],
            scale_rule=rule,
        )
        deltas = world_deltas(plan, "a")
        assert deltas[("v", "X")]["target_qty"] == 0.0, rule
        # s2 is not named: it keeps its share of the world (g = gw = 4/3)
        assert deltas[("v", "Y")]["target_qty"] == 4.0, rule


def test_cascade_without_strategy_weights_scales_all_strategies_by_world() -> None:
    plan = plan_rows(
        [("a", "s1", "v", "X", 3.0, 10.0, 0), ("a", "s2", "v", "X", 6.0, 10.0, 0)],
        [WorldChange("a", 0.3, 0.1)],
    )
    world = plan.record()["per_world"]["a"]
    assert world["scale_by_strategy"] == {"s1": pytest.approx(1 / 3), "s2": pytest.approx(1 / 3)}
    assert world_deltas(plan, "a")[("v", "X")]["delta_qty"] == -6.0


def test_bounded_rule_takes_min_when_shrinking_and_max_when_growing() -> None:
    rows: list[Row] = [("a", "s1", "v", "X", 1.0, 10.0, 0), ("a", "s2", "v", "Y", 1.0, 10.0, 0)]
    shrink = plan_rows(
        rows,
        [WorldChange("a", 0.4, 0.2, {"s1": 0.2, "s2": 0.2}, {"s1": 0.15, "s2": 0.05})],
        scale_rule="bounded",
    ).record()["per_world"]["a"]["scale_by_strategy"]
    assert shrink == {"s1": 0.5, "s2": 0.25}  # min(0.5, 0.75), min(0.5, 0.25)
    grow = plan_rows(
        rows,
        [WorldChange("a", 0.2, 0.4, {"s1": 0.1, "s2": 0.1}, {"s1": 0.3, "s2": 0.1})],
        scale_rule="bounded",
    ).record()["per_world"]["a"]["scale_by_strategy"]
    assert grow == {"s1": pytest.approx(3.0), "s2": 2.0}  # max(2, 3), max(2, 1)
    as_given = plan_rows(
        rows, [WorldChange("a", 0.2, 0.4, {"s1": 0.1, "s2": 0.1}, {"s1": 0.3, "s2": 0.1})]
    ).record()["per_world"]["a"]["scale_by_strategy"]
    assert as_given == {"s1": pytest.approx(3.0), "s2": 1.0}


def test_world_scale_from_zero() -> None:
    rows: list[Row] = [("a", "s", "v", "X", 1.0, 10.0, 0)]
    assert (
        plan_rows(rows, [WorldChange("a", 0.0, 0.2)]).record()["per_world"]["a"]["scale_world"]
        == 1.0
    )
    assert (
        plan_rows(rows, [WorldChange("a", 0.0, 0.0)]).record()["per_world"]["a"]["scale_world"]
        == 0.0
    )


def test_strategy_with_zero_before_follows_the_world_when_funded() -> None:
    plan = plan_rows(
        [("a", "new", "v", "X", 1.0, 10.0, 0)],
        [WorldChange("a", 0.2, 0.3, {"old": 0.2}, {"new": 0.1})],
    )
    assert plan.record()["per_world"]["a"]["scale_by_strategy"]["new"] == pytest.approx(1.5)
    defunded = plan_rows(
        [("a", "new", "v", "X", 1.0, 10.0, 0)],
        [WorldChange("a", 0.2, 0.0, {"old": 0.2}, {"new": 0.0})],
    )
    assert defunded.record()["per_world"]["a"]["scale_by_strategy"]["new"] == 0.0


def test_before_weights_come_from_request_then_current_then_snapshots() -> None:
    rows: list[Row] = [("a", "s1", "v", "X", 1.0, 100.0, 0), ("a", "s2", "v", "Y", 3.0, 100.0, 0)]
    after = {"s1": 0.1}
    from_request = plan_rows(rows, [WorldChange("a", 0.2, 0.2, {"s1": 0.05}, after)])
    world = from_request.record()["per_world"]["a"]
    assert world["weights_source"] == "request"
    assert world["scale_by_strategy"]["s1"] == 2.0
    from_current = plan_rows(
        rows, [WorldChange("a", 0.2, 0.2, None, after)], current_weights={"a": {"s1": 0.2}}
    )
    world = from_current.record()["per_world"]["a"]
    assert world["weights_source"] == "current"
    assert world["scale_by_strategy"]["s1"] == 0.5
    # s1 holds 100 of notional in 1,000 of equity: before weight 0.1, so g = 0.1 / 0.1
    from_snapshots = plan_rows(rows, [WorldChange("a", 0.2, 0.2, None, after)], total_equity=1_000)
    world = from_snapshots.record()["per_world"]["a"]
    assert world["weights_source"] == "snapshots"
    assert world["strategy_alloc_before"] == {"s1": 0.1, "s2": 0.3}
    assert world["scale_by_strategy"]["s1"] == pytest.approx(1.0)


def test_derived_weights_with_zero_equity_use_the_world_net_notional() -> None:
    rows: list[Row] = [("a", "s1", "v", "X", 1.0, 100.0, 0), ("a", "s2", "v", "Y", 3.0, 100.0, 0)]
    plan = plan_rows(rows, [WorldChange("a", 0.2, 0.2, None, {"s1": 0.5})], total_equity=0.0)
    world = plan.record()["per_world"]["a"]
    assert world["strategy_alloc_before"] == {"s1": 0.25, "s2": 0.75}
    assert world["scale_by_strategy"]["s1"] == 2.0


def test_missing_venue_is_its_own_key() -> None:
    plan = plan_rows(
        [("a", "s", None, "X", 1.0, 10.0, 0), ("a", "s", "v", "X", 2.0, 10.0, 0)],
        [WorldChange("a", 0.2, 0.1)],
    )
    deltas = world_deltas(plan, "a")
    assert deltas[(None, "X")]["delta_qty"] == -0.5
    assert deltas[("v", "X")]["delta_qty"] == -1.0


def test_key_mark_is_the_most_recent_snapshots() -> None:
    plan = plan_rows(
        [("a", "old", "v", "X", 1.0, 10.0, 5), ("a", "new", "v", "X", 1.0, 12.0, 9)],
        [WorldChange("a", 0.2, 0.1)],
    )
    assert world_deltas(plan, "a")[("v", "X")]["mark"] == 12.0


def test_without_snapshot_times_the_last_row_gives_the_mark() -> None:
    plan = plan_rows(
        [("a", "s1", "v", "X", 1.0, 10.0, 0), ("a", "s2", "v", "X", 1.0, 11.0, 0)],
        [WorldChange("a", 0.2, 0.1)],
    )
    assert world_deltas(plan, "a")[("v", "X")]["mark"] == 11.0


def test_key_without_any_mark_is_held_not_guessed() -> None:
    plan = plan_rows(
        [("a", "s", "v", "X", 1.0, None, 0), ("a", "s", "v", "Y", 1.0, 10.0, 0)],
        [WorldChange("a", 0.2, 0.1)],
    )
    assert world_dropped(plan, "a") == {("v", "X"): "missing_mark"}
    assert [i["symbol"] for i in plan.intents()] == ["Y"]


def test_buy_covering_part_of_a_short_is_reduce_only_and_sell_on_short_is_not() -> None:
    rows: list[Row] = [("a", "s", "v", "X", -2.0, 10.0, 0)]
    (cover,) = plan_rows(rows, [WorldChange("a", 0.2, 0.1)]).intents()
    assert (cover["delta_qty"], cover["reduce_only"]) == (1.0, True)
    (grow,) = plan_rows(rows, [WorldChange("a", 0.1, 0.2)]).intents()
    assert (grow["delta_qty"], grow["reduce_only"]) == (-2.0, False)


def _flip_rows() -> list[Row]:
    # long 1 (s1) and short 3 (s2): liquidating s2 and doubling s1... and the reverse
    return [("a", "s1", "v", "X", 3.0, 10.0, 0), ("a", "s2", "v", "X", -1.0, 10.0, 0)]


def test_flip_flattens_then_opens_by_default() -> None:
    plan = plan_rows(
        _flip_rows(),
        [WorldChange("a", 0.4, 0.4, {"s1": 0.3, "s2": 0.1}, {"s1": 0.0, "s2": 0.3})],
        lot_size_by_symbol={"X": 0.1},
    )
    close, open_ = plan.intents()
    assert (close["leg"], close["current_qty"], close["target_qty"], close["delta_qty"]) == (
        "close",
        2.0,
        0.0,
        -2.0,
    )
    assert close["reduce_only"] is True
    assert close["depends_on"] is None
    assert (open_["leg"], open_["current_qty"], open_["target_qty"], open_["delta_qty"]) == (
        "open",
        0.0,
        -3.0,
        -3.0,
    )
    assert open_["reduce_only"] is False
    assert open_["depends_on"] == close["intent_id"]


def test_direct_flip_only_where_the_venue_supports_it() -> None:
    changes = [WorldChange("a", 0.4, 0.4, {"s1": 0.3, "s2": 0.1}, {"s1": 0.0, "s2": 0.3})]
    allowed = plan_rows(
        _flip_rows(), changes, flip_policy="direct_flip", direct_flip_venues=("v",)
    ).intents()
    assert [(i["leg"], i["delta_qty"], i["reduce_only"]) for i in allowed] == [
        ("adjust", -5.0, False)
    ]
    refused = plan_rows(_flip_rows(), changes, flip_policy="direct_flip").intents()
    assert [i["leg"] for i in refused] == ["close", "open"]


def test_flip_whose_open_side_is_too_small_just_closes() -> None:
    plan = plan_rows(
        _flip_rows(),
        [WorldChange("a", 0.4, 0.4, {"s1": 0.3, "s2": 0.1}, {"s1": 0.0, "s2": 0.101})],
        min_trade_notional=15.0,
    )
    (close,) = plan.intents()
    assert (close["leg"], close["target_qty"]) == ("close", 0.0)


def test_several_worlds_are_netted_globally_once() -> None:
    plan = plan_rows(
        [("a", "s", "v", "X", 1.0, 10.0, 0), ("b", "t", "v", "X", 1.0, 10.0, 0)],
        [WorldChange("a", 0.2, 0.1), WorldChange("b", 0.2, 0.3)],
        lot_size_by_symbol={"X": 0.1},
    )
    record = plan.record()
    assert world_deltas(plan, "a")[("v", "X")]["delta_qty"] == -0.5
    assert world_deltas(plan, "b")[("v", "X")]["delta_qty"] == 0.5
    # the worlds' moves cancel: the global net is float noise, which rounds to nothing
    assert record["global_deltas"] == []
    assert [d["reason"] for d in record["global_dropped"]] == ["rounded_to_zero"]
    assert abs(record["global_dropped"][0]["delta_qty_unrounded"]) < 1e-12


def test_global_view_counts_worlds_that_do_not_move_in_current() -> None:
    plan = plan_rows(
        [("a", "s", "v", "X", 1.0, 10.0, 0), ("b", "t", "v", "X", 5.0, 10.0, 0)],
        [WorldChange("a", 0.2, 0.1)],
    )
    (net,) = plan.record()["global_deltas"]
    assert (net["current_qty"], net["delta_qty"], net["target_qty"]) == (6.0, -0.5, 5.5)
    assert list(plan.record()["per_world"]) == ["a"]


def test_shared_account_mode_is_refused_unless_enabled() -> None:
    rows: list[Row] = [("a", "s", "v", "X", 1.0, 10.0, 0), ("b", "t", "v", "X", 1.0, 10.0, 0)]
    changes = [WorldChange("a", 0.2, 0.1), WorldChange("b", 0.2, 0.1)]
    with pytest.raises(PlanningError, match="allow_shared_account"):
        plan_rows(rows, changes, execution_mode="shared_account")
    plan = plan_rows(rows, changes, execution_mode="shared_account", allow_shared_account=True)
    (intent,) = plan.intents()
    assert intent["world_id"] is None
    assert intent["delta_qty"] == -1.0
    assert {(b["world_id"], b["strategy_id"]) for b in intent["strategy_breakdown"]} == {
        ("a", "s"),
        ("b", "t"),
    }


def test_worlds_not_named_are_untouched() -> None:
    plan = plan_rows(
        [("a", "s", "v", "X", 1.0, 10.0, 0), ("b", "t", "v", "Y", 1.0, 10.0, 0)],
        [WorldChange("a", 0.2, 0.1)],
    )
    assert [i["world_id"] for i in plan.intents()] == ["a"]


def test_intent_ids_depend_on_plan_world_key_and_leg() -> None:
    plan = plan_rows(
        [("a", "s", "v", "X", 1.0, 10.0, 0), ("a", "s", "v", "Y", 1.0, 10.0, 0)],
        [WorldChange("a", 0.2, 0.1)],
    )
    ids = [i["intent_id"] for i in plan.intents()]
    assert len(set(ids)) == 2
    assert all(i["plan_id"] == plan.plan_id for i in plan.intents())
    other = plan_rows(
        [("a", "s", "v", "X", 1.0, 10.0, 0), ("a", "s", "v", "Y", 1.0, 10.0, 0)],
        [WorldChange("a", 0.2, 0.15)],
    )
    assert other.plan_id != plan.plan_id
    assert not set(ids) & {i["intent_id"] for i in other.intents()}


def test_a_world_named_twice_is_refused() -> None:
    with pytest.raises(PlanningError, match="named twice"):
        plan_rows([], [WorldChange("a", 0.2, 0.1), WorldChange("a", 0.2, 0.3)])


def test_empty_portfolio_plans_nothing() -> None:
    plan = plan_rows([], [WorldChange("a", 0.2, 0.1)])
    assert plan.intents() == []
    assert plan.record()["per_world"]["a"]["deltas"] == []
