"""``planner.min_notional_by_venue``: an intent below its venue's minimum is dropped, like
one below ``min_trade_notional``; a configuration without it keeps its plan ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.planner import PlannerOptions, WorldChange
from service.planner.netting import BELOW_MIN_NOTIONAL, TRADE
from tests.helpers import Row, plan_rows, world_deltas, world_dropped

# the world halves: X sells 50 on v1 and 50 on v2, Y sells 5 on v1
ROWS: list[Row] = [
    ("a", "s", "v1", "X", 1.0, 100.0, 0),
    ("a", "s", "v2", "X", 1.0, 100.0, 0),
    ("a", "s", "v1", "Y", 1.0, 10.0, 0),
]
HALF = [WorldChange("a", 0.2, 0.1)]


def test_a_key_below_its_venues_minimum_is_dropped_others_trade() -> None:
    plan = plan_rows(ROWS, HALF, min_notional_by_venue={"v2": 60.0, "v1": 10.0})
    assert world_dropped(plan, "a") == {
        ("v2", "X"): "below_min_notional",
        ("v1", "Y"): ("below_min_notional"),
    }
    assert set(world_deltas(plan, "a")) == {("v1", "X")}
    assert [i["venue"] for i in plan.intents()] == ["v1"]
    record = plan.record()
    assert record["options"]["min_notional_by_venue"] == {"v1": 10.0, "v2": 60.0}
    # the global view applies the same minimums
    assert {(d["venue"], d["symbol"]) for d in record["global_dropped"]} == {
        ("v2", "X"),
        ("v1", "Y"),
    }


def test_the_higher_of_the_venue_and_the_global_minimum_applies() -> None:
    plan = plan_rows(ROWS, HALF, min_trade_notional=20.0, min_notional_by_venue={"v2": 1.0})
    assert set(world_deltas(plan, "a")) == {("v1", "X"), ("v2", "X")}
    assert world_dropped(plan, "a") == {("v1", "Y"): "below_min_notional"}


def test_without_venue_minimums_the_plan_id_and_record_are_unchanged() -> None:
    assert "min_notional_by_venue" not in PlannerOptions().canonical()
    plain = plan_rows(ROWS, HALF)
    empty = plan_rows(ROWS, HALF, min_notional_by_venue={})
    assert plain.plan_id == empty.plan_id
    assert "min_notional_by_venue" not in plain.record()["options"]
    unmet = plan_rows(ROWS, HALF, min_notional_by_venue={"elsewhere": 1e9})
    assert unmet.plan_id != plain.plan_id  # set, it is part of the plan's identity
    assert [i["intent_id"] for i in unmet.intents()] != [i["intent_id"] for i in plain.intents()]


@given(
    st.lists(st.floats(-50, 50).filter(lambda q: abs(q) > 1e-3), min_size=1, max_size=6),
    st.floats(0.0, 0.5),
    st.dictionaries(st.sampled_from(["v0", "v1", "v2"]), st.floats(0, 2_000), max_size=3),
    st.floats(0, 500),
)
def test_every_traded_key_clears_its_venues_minimum(
    qtys: list[float], after: float, minimums: dict[str, float], floor: float
) -> None:
    rows: list[Row] = [
        ("a", f"s{i}", f"v{i % 3}", f"S{i % 4}", q, 10.0 + i, 0) for i, q in enumerate(qtys)
    ]
    plan = plan_rows(
        rows,
        [WorldChange("a", 0.5, after)],
        min_trade_notional=floor,
        min_notional_by_venue=minimums,
    )
    view = plan.per_world
    table = plan.context.positions
    n_s = len(table.symbols)
    for code, status, delta, mark, unrounded in zip(
        view.codes.tolist(),
        view.status.tolist(),
        view.delta.tolist(),
        view.mark.tolist(),
        view.delta_unrounded.tolist(),
        strict=True,
    ):
        venue = table.venues[(code % (len(table.venues) * n_s)) // n_s]
        minimum = max(floor, minimums.get(str(venue), 0.0))
        if status == TRADE:
            assert abs(delta) * mark >= minimum * (1 - 1e-9) or delta == -unrounded
        if status == BELOW_MIN_NOTIONAL:
            assert abs(unrounded) * mark < minimum * (1 + 1e-9) or abs(delta) * mark < minimum
