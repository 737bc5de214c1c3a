"""The target-weight planner (SPEC 6): targets ``weight * equity / mark`` through the planning
core's netting, lots, minimum notional and reduce-only rules."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.messages import DeltaIntent, PlanRecord
from service.planner import (
    Plan,
    PlannerOptions,
    PlanningContext,
    PlanningError,
    PositionTable,
    TargetWeightRebalancer,
    WorldChange,
    WorldTargets,
)
from tests.examples import examples
from tests.helpers import Row, world_deltas, world_dropped


def plan(
    rows: list[Row],
    targets: dict[str, WorldTargets],
    *,
    total_equity: float = 100_000.0,
    changes: tuple[WorldChange, ...] = (),
    **options: object,
) -> Plan:
    context = PlanningContext(
        event_id="e",
        portfolio_id="p",
        occurred_at=1_000,
        total_equity=total_equity,
        changes=changes,
        positions=PositionTable.from_rows(rows),
        options=PlannerOptions(**options),  # type: ignore[arg-type]
    )
    return TargetWeightRebalancer(targets).plan(context)


def valid(p: Plan) -> None:
    PlanRecord.model_validate(p.record())
    for intent in p.intents():
        DeltaIntent.model_validate(intent)


def test_each_asset_goes_to_weight_times_equity_over_mark() -> None:
    rows: list[Row] = [
        ("a", "s1", "bin", "BTC", 0.5, 60_000.0, 0),
        ("a", "s2", "bin", "BTC", 0.3, 60_000.0, 0),
        ("a", "s1", "bin", "XRP", 100.0, 1.0, 0),
    ]
    targets = {
        "a": WorldTargets(
            {("bin", "BTC"): 0.6, ("bin", "ETH"): 0.4}, marks={("bin", "ETH"): 3_000.0}
        )
    }
    p = plan(rows, targets, changes=(WorldChange("a", 0.5, 0.5),))
    valid(p)
    keys = world_deltas(p, "a")
    # world equity 100,000 x 0.5 = 50,000
    assert keys[("bin", "BTC")]["target_qty"] == 0.5  # 30,000 / 60,000
    assert keys[("bin", "BTC")]["reduce_only"] is True
    assert keys[("bin", "ETH")]["target_qty"] == pytest.approx(20_000 / 3_000)
    assert keys[("bin", "XRP")]["target_qty"] == 0.0  # held, no weight: closed
    breakdown = {
        b["strategy_id"]: b["delta_qty"] for b in keys[("bin", "BTC")]["strategy_breakdown"]
    }
    assert breakdown == pytest.approx({"s1": -0.1875, "s2": -0.1125})  # by share of the key
    (eth,) = [i for i in p.intents() if i["symbol"] == "ETH"]
    assert eth["strategy_breakdown"] == [{"strategy_id": "target", "delta_qty": eth["delta_qty"]}]


def test_lots_min_notional_and_flat_closes_are_the_planning_core_rules() -> None:
    rows: list[Row] = [
        ("a", "s", "bin", "BTC", 1.0, 60_000.0, 0),
        ("a", "s", "bin", "DOGE", 10.0, 0.1, 0),
    ]
    targets = {"a": WorldTargets({("bin", "BTC"): 0.5, ("bin", "DOGE"): 0.0001}, equity=100_000.0)}
    p = plan(rows, targets, lot_size_by_symbol={"BTC": 0.001}, min_trade_notional=5.0)
    keys = world_deltas(p, "a")
    # 50,000 / 60,000 = 0.8333.. -> delta -0.1666.. rounds toward zero to -0.166
    assert keys[("bin", "BTC")]["delta_qty"] == -0.166
    assert keys[("bin", "BTC")]["target_qty"] == 0.834
    # DOGE: 10 / 0.1 = 100 target vs 10 held: a 9.0 notional move is kept, >= 5
    assert keys[("bin", "DOGE")]["delta_qty"] == pytest.approx(90.0)
    p2 = plan(
        rows,
        {"a": WorldTargets({("bin", "BTC"): 1.0, ("bin", "DOGE"): 0.00001}, equity=60_001.0)},
        min_trade_notional=5.0,
    )
    assert world_dropped(p2, "a") == {
        ("bin", "BTC"): "below_min_notional",
        ("bin", "DOGE"): "below_min_notional",
    }


def test_a_short_target_flips_with_a_reduce_only_close_first() -> None:
    rows: list[Row] = [("a", "s", "bin", "ETH", 2.0, 1_000.0, 0)]
    p = plan(rows, {"a": WorldTargets({("bin", "ETH"): -0.5}, equity=4_000.0)})
    close, open_ = p.intents()
    assert (close["leg"], close["delta_qty"], close["reduce_only"]) == ("close", -2.0, True)
    assert (open_["leg"], open_["target_qty"], open_["depends_on"]) == (
        "open",
        -2.0,
        close["intent_id"],
    )


def test_given_marks_win_over_snapshot_marks() -> None:
    rows: list[Row] = [("a", "s", "bin", "BTC", 1.0, 50_000.0, 0)]
    p = plan(
        rows,
        {
            "a": WorldTargets(
                {("bin", "BTC"): 1.0}, equity=60_000.0, marks={("bin", "BTC"): 60_000.0}
            )
        },
    )
    assert world_deltas(p, "a") == {}
    assert world_dropped(p, "a") == {("bin", "BTC"): "unchanged"}


def test_other_worlds_are_untouched_and_ids_are_deterministic() -> None:
    rows: list[Row] = [
        ("a", "s", "bin", "BTC", 1.0, 50_000.0, 0),
        ("b", "s", "bin", "BTC", 1.0, 50_000.0, 0),
    ]
    targets = {"a": WorldTargets({("bin", "BTC"): 0.5}, equity=50_000.0)}
    p = plan(rows, targets)
    assert set(p.record()["per_world"]) == {"a"}
    assert [i["world_id"] for i in p.intents()] == ["a"]
    again = plan(list(reversed(rows)), targets)
    assert again.plan_id == p.plan_id
    assert again.intents() == p.intents()
    other = plan(rows, {"a": WorldTargets({("bin", "BTC"): 0.4}, equity=50_000.0)})
    assert other.plan_id != p.plan_id


def test_several_worlds_get_one_global_net_and_an_idle_world_counts_in_it() -> None:
    rows: list[Row] = [
        ("a", "s", "bin", "BTC", 1.0, 50_000.0, 0),
        ("b", "t", "bin", "BTC", 1.0, 50_000.0, 0),
        ("c", "u", "bin", "BTC", 2.0, 50_000.0, 0),
        ("c", "u", "bin", "ETH", 3.0, 2_000.0, 0),
    ]
    targets = {
        "a": WorldTargets({("bin", "BTC"): 0.5}, equity=50_000.0),  # 1 -> 0.5
        "b": WorldTargets({("bin", "BTC"): 1.0}, equity=100_000.0),  # 1 -> 2
    }
    p = plan(rows, targets)
    valid(p)
    (btc,) = p.record()["global_deltas"]
    assert (btc["venue"], btc["symbol"]) == ("bin", "BTC")
    # the net of a's -0.5 and b's +1, over what all three worlds hold (c's 2 BTC included)
    assert (btc["current_qty"], btc["delta_qty"], btc["target_qty"]) == (4.0, 0.5, 4.5)
    assert btc["legs"] == []  # per-world execution: the global view is for reading
    (eth,) = p.record()["global_dropped"]  # c's ETH does not move
    assert (eth["symbol"], eth["reason"], eth["current_qty"]) == ("ETH", "unchanged", 3.0)
    moved = plan([*rows[:3], ("c", "u", "bin", "ETH", 4.0, 2_000.0, 0)], targets)
    assert moved.plan_id != p.plan_id  # the idle world is in the global view, so in the id
    (one,) = plan(rows[:1], {"a": targets["a"]}).record()["global_deltas"]
    assert (one["current_qty"], one["delta_qty"]) == (1.0, -0.5)  # one world: its own view


def test_bad_targets_are_refused_with_the_field() -> None:
    rows: list[Row] = [("a", "s", "bin", "BTC", 1.0, 50_000.0, 0)]
    with pytest.raises(PlanningError, match=r"targets\[a\]\.marks: no mark for bin\|ETH"):
        plan(rows, {"a": WorldTargets({("bin", "ETH"): 0.5}, equity=1.0)})
    with pytest.raises(PlanningError, match=r"targets\[a\]\.weights: nan for bin\|BTC"):
        TargetWeightRebalancer({"a": WorldTargets({("bin", "BTC"): math.nan})})
    with pytest.raises(PlanningError, match=r"marks: -1\.0"):
        TargetWeightRebalancer({"a": WorldTargets({}, marks={("bin", "BTC"): -1.0})})
    with pytest.raises(PlanningError, match="not a \\(venue, symbol\\) pair"):
        TargetWeightRebalancer({"a": WorldTargets({"BTC": 0.5})})  # type: ignore[dict-item]
    with pytest.raises(PlanningError, match=r"targets\[a\]\.equity: not given"):
        plan(rows, {"a": WorldTargets({("bin", "BTC"): 0.5})})
    with pytest.raises(PlanningError, match="plans per world"):
        plan(
            rows,
            {"a": WorldTargets({}, equity=1.0)},
            execution_mode="shared_account",
            allow_shared_account=True,
        )


def test_a_world_that_holds_nothing_opens_with_its_strategy() -> None:
    p = plan(
        [],
        {
            "new": WorldTargets(
                {("bin", "SOL"): 1.0},
                equity=1_000.0,
                marks={("bin", "SOL"): 100.0},
                strategy_id="core",
            )
        },
    )
    valid(p)
    (intent,) = p.intents()
    assert intent["target_qty"] == 10.0
    assert intent["strategy_breakdown"] == [{"strategy_id": "core", "delta_qty": 10.0}]


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------

SYMBOLS = ("BTC", "ETH", "SOL", "XRP")
LOTS = {"BTC": 0.001, "ETH": 0.01, "SOL": 0.1, "XRP": 1.0}
MARKS = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "XRP": 0.5}

rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(("s1", "s2", "s3")),
        st.sampled_from(SYMBOLS),
        st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 3)),
    ),
    max_size=10,
)
weights_strategy = st.dictionaries(
    st.sampled_from(SYMBOLS), st.floats(-0.6, 0.6, allow_nan=False), max_size=4
)


@given(
    held=rows_strategy,
    weights=weights_strategy,
    equity=st.just(0.0) | st.floats(1.0, 1e6),
    min_notional=st.sampled_from([0.0, 10.0, 1_000.0]),
)
@settings(max_examples=examples(200), deadline=None)
def test_targets_lots_and_reduce_only_hold_on_random_portfolios(
    held: list[tuple[str, str, float]],
    weights: dict[str, float],
    equity: float,
    min_notional: float,
) -> None:
    rows: list[Row] = [("w", s, "v", y, q, MARKS[y], 0) for s, y, q in held]
    targets = {
        "w": WorldTargets(
            {("v", y): x for y, x in weights.items()},
            equity=equity,
            marks={("v", y): MARKS[y] for y in SYMBOLS},
        )
    }
    p = plan(rows, targets, lot_size_by_symbol=LOTS, min_trade_notional=min_notional)
    valid(p)
    current: dict[str, float] = {}
    for _, y, q in held:
        current[y] = current.get(y, 0.0) + q
    for (_, symbol), key in world_deltas(p, "w").items():
        want = weights.get(symbol, 0.0) * equity / MARKS[symbol]
        # the traded quantity is whole lots: the delta, or on a flip the opening side; a
        # flat target closes exactly whatever is held
        traded = key["target_qty"] if key["flip"] else key["delta_qty"]
        lots = Fraction(repr(traded)) / Fraction(repr(LOTS[symbol]))
        assert lots.denominator == 1 or key["target_qty"] == 0.0
        # rounding toward zero: never overshoots the wanted target by a lot
        assert abs(key["target_qty"] - want) < LOTS[symbol] * (1 + 1e-9) + 1e-9
        assert (
            abs(key["delta_qty"]) * MARKS[symbol] >= min_notional - 1e-9 or key["target_qty"] == 0.0
        )
    for intent in p.intents():
        if intent["reduce_only"]:
            assert intent["current_qty"] * intent["target_qty"] >= 0
            assert abs(intent["target_qty"]) < abs(intent["current_qty"])
        if intent["leg"] == "open":
            assert intent["depends_on"] is not None
