"""SPEC 3.2's lot rounding, the one rule (``service.planner.lots``) and every place that uses it.

Round toward zero to whole lots; a count within 1e-9 (relative) of the next whole number counts
as it, but never more than 1e-6 of a lot, however many lots. The properties check the emitted
floats against exact rationals over counts from below one lot to 1e12 lots.
"""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consumers.venues import PaperConfig, PaperVenue
from consumers.venues.base import Order, OrderStatus, OrderUpdate
from service.execution import VenueRules, next_order, to_lots
from service.planner import WorldChange
from service.planner.lots import (
    is_whole_lots,
    lot_count,
    lot_fraction,
    lots_to_qty,
    round_qty_to_lots,
    round_to_lots,
)
from service.policies import pace_quantity, slice_quantity
from service.policies.errors import PolicyError
from tests.examples import examples
from tests.helpers import plan_rows, world_deltas

SETTINGS = settings(max_examples=examples(600), deadline=None)

LOTS = [1.0, 0.1, 0.001, 0.25, 1e-8, 5.0, 0.01, 0.5]

EXCESS = Fraction(1, 10**6) * (1 + Fraction(1, 2**40))
"""The cap on rounding up, 1e-6 of a lot, within float representation (the float 1e-6 and
products with it carry relative errors of 1e-16)."""

RELATIVE = Fraction(1, 10**9) * (1 + Fraction(1, 2**40))

# what the properties exercise; the old formula can be swapped in here to see them fail
count_lots = lot_count
round_scalar = round_qty_to_lots
round_vector = round_to_lots


def exact_lot(lot: float) -> tuple[float, float, Fraction]:
    num, scale = lot_fraction(lot)
    return num, scale, Fraction(num) / Fraction(scale)


def bits(x: float) -> str:
    return float.hex(x)


def log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: 10.0**e)


whole_counts = st.one_of(
    st.integers(1, 10**12),
    log_uniform(1, 1e12).map(round),
    st.sampled_from([1, 2, 3, 7, 10**3, 10**6, 47_248_693, 1_500_000_000, 10**9, 10**12]),
)
"""Whole numbers of lots at every scale."""

OFFSETS = [
    Fraction(0),
    Fraction(1),
    Fraction(-1),
    *(s * Fraction(d) for s in (1, -1) for d in ("0.5e-6", "2e-6", "1e-9", "1e-7", "0.5")),
    Fraction(-999_999, 10**6),
    Fraction(999_999, 10**6),
]
"""How far from the whole number, in lots."""


@st.composite
def quantities(draw: st.DrawFn) -> tuple[float, float]:
    """A signed quantity and a lot size: log-uniform counts from 1e-3 to 1e12 lots, and counts
    just below and above whole numbers at every scale (exactly, then moved a few ulps)."""
    lot = draw(st.sampled_from(LOTS))
    _, _, exact = exact_lot(lot)
    if draw(st.booleans()):
        count = Fraction(draw(log_uniform(1e-3, 1e12)))
    else:
        n = draw(whole_counts)
        kind = draw(st.sampled_from(["fixed", "relative", "any"]))
        if kind == "fixed":
            offset = draw(st.sampled_from(OFFSETS))
        elif kind == "relative":  # n +- 1e-10 * n
            offset = draw(st.sampled_from([1, -1])) * Fraction(n, 10**10)
        else:
            offset = draw(st.fractions(-1, 1))
        count = max(Fraction(0), n + offset)
    x = float(count * exact)
    for _ in range(abs(ulps := draw(st.integers(-4, 4)))):
        x = math.nextafter(x, math.copysign(math.inf, ulps))
    sign = draw(st.sampled_from([1.0, -1.0]))
    return sign * max(x, 0.0), lot


def check(x: float, lot: float) -> None:
    num, scale, exact_size = exact_lot(lot)
    rounded = round_scalar(x, num, scale)
    vector = round_vector(np.array([x]), np.array([num]), np.array([scale]))[0]
    assert bits(float(vector)) == bits(rounded)  # scalar and vectorised agree exactly

    k = count_lots(x, num, scale)
    # a whole number of lots: the float nearest to k lots (exact decimals), with x's sign
    assert bits(rounded) == bits(math.copysign(float(k * exact_size), x) + 0.0)
    assert rounded == 0 or (rounded > 0) == (x > 0)

    size = Fraction(abs(x))
    count = size / exact_size
    below = math.floor(count)
    assert k in (below, below + 1)  # the floor, or the tolerated next whole number
    excess = Fraction(abs(rounded)) - size
    assert excess <= EXCESS * exact_size  # never more than 1e-6 of a lot above |x|
    if k == below + 1:
        assert excess <= RELATIVE * max(count, Fraction(1)) * exact_size
    # ...and what is float noise is absorbed: the next whole number is taken when within it
    next_excess = Fraction(float((below + 1) * exact_size)) - size
    limit = min(Fraction(1, 10**9) * max(count, Fraction(1)), Fraction(1, 10**6)) * exact_size
    if next_excess <= limit * (1 - Fraction(1, 10**6)):
        assert k == below + 1


@given(quantities())
@SETTINGS
@example((0.3, 0.1))
@example((-0.3, 0.1))
@example((1_500_000_000.5, 1.0))
@example((47_248_693.955, 1.0))
@example((99_999_999_999.9, 0.1))
@example((0.1 + 0.2, 0.1))
@example((0.0, 0.25))
def test_rounding_is_toward_zero_absorbing_float_noise_only(case: tuple[float, float]) -> None:
    check(*case)


@given(whole_counts, st.sampled_from(LOTS), st.sampled_from([1.0, -1.0]))
@SETTINGS
def test_whole_lots_as_exact_decimals_round_to_themselves(n: int, lot: float, sign: float) -> None:
    num, scale, exact_size = exact_lot(lot)
    x = sign * float(n * exact_size)
    assert round_scalar(x, num, scale) == x
    assert count_lots(x, num, scale) == n
    assert is_whole_lots(x, num, scale)


def test_whole_lots_as_exact_decimals_round_to_themselves_in_bulk() -> None:
    # the count's float estimate is off by an ulp for about 1% of large counts with lots such
    # as 0.01 or 1e-8 (x * 100 is 985085736045.9999 for 9850857360.46): that is no shortfall
    rng = np.random.default_rng(7)
    n = np.floor(10 ** rng.uniform(0, 12, 100_000))
    for lot in [*LOTS, 0.003, 0.07, 1e-12]:
        num, scale, _ = exact_lot(lot)
        x = n * num / scale  # the float nearest to n lots
        for signed in (x, -x):
            out = round_vector(signed, np.full_like(n, num), np.full_like(n, scale))
            assert np.array_equal(out, signed), lot


@given(st.lists(quantities(), min_size=1, max_size=40))
@settings(max_examples=examples(150), deadline=None)
def test_vectorised_form_agrees_with_the_scalar_form_on_mixed_arrays(
    cases: list[tuple[float, float]],
) -> None:
    xs = np.array([x for x, _ in cases])
    fractions = np.array([lot_fraction(lot) for _, lot in cases])
    vector = round_vector(xs, fractions[:, 0], fractions[:, 1])
    scalar = [round_scalar(x, *lot_fraction(lot)) for x, lot in cases]
    assert [bits(float(v)) for v in vector] == [bits(s) for s in scalar]


def test_examples() -> None:
    num, scale, _ = exact_lot(0.1)
    assert 0.3 / 0.1 < 3
    assert round_qty_to_lots(0.3, num, scale) == 0.3  # 3 lots, not 2
    assert lot_count(0.3, num, scale) == 3
    assert round_qty_to_lots(-0.3, num, scale) == -0.3
    assert round_qty_to_lots(0.2999999, num, scale) == 0.2  # a real shortfall is not noise
    assert round_qty_to_lots(1_500_000_000.5, 1.0, 1.0) == 1_500_000_000.0
    assert round_qty_to_lots(-1_500_000_000.5, 1.0, 1.0) == -1_500_000_000.0
    assert round_qty_to_lots(47_248_693.955, 1.0, 1.0) == 47_248_693.0
    assert round_qty_to_lots(1_000_000_000 - 1e-7, 1.0, 1.0) == 1_000_000_000.0  # 1e-7 lot
    assert round_qty_to_lots(1_000_000_000 - 2e-6, 1.0, 1.0) == 999_999_999.0  # 2e-6 lot
    assert round_qty_to_lots(99_999_999_999.9, num, scale) == 99_999_999_999.9
    assert lots_to_qty(333, *lot_fraction(0.001)) == 0.333
    assert not is_whole_lots(1_500_000_000.5, 1.0, 1.0)
    assert is_whole_lots(0.1 + 0.2, num, scale)
    assert not is_whole_lots(0.15, num, scale)


# -- the planner ------------------------------------------------------------------------------


def test_large_delta_rounds_down_not_up_by_whole_lots() -> None:
    plan = plan_rows(
        [("a", "s", None, "X", 3_000_000_001.0, 1.0, 0)],
        [WorldChange("a", 0.5, 0.75)],
        lot_size_by_symbol={"X": 1},
    )
    key = world_deltas(plan, "a")[(None, "X")]
    assert key["delta_qty_unrounded"] == 1_500_000_000.5
    assert key["delta_qty"] == 1_500_000_000.0
    assert key["target_qty"] == 4_500_000_001.0


def test_flip_open_side_rounds_down_not_up() -> None:
    # long 100M (s1, liquidated) and short 47,248,693.955 (s2, kept): the key flips short
    plan = plan_rows(
        [
            ("a", "s1", "v", "X", 100_000_000.0, 1.0, 0),
            ("a", "s2", "v", "X", -47_248_693.955, 1.0, 0),
        ],
        [WorldChange("a", 0.2, 0.1, {"s1": 0.1, "s2": 0.1}, {"s1": 0.0, "s2": 0.1})],
        lot_size_by_symbol={"X": 1},
    )
    key = world_deltas(plan, "a")[("v", "X")]
    assert key["flip"] is True
    close, open_ = plan.intents()
    assert (close["leg"], close["target_qty"], close["delta_qty"]) == (
        "close",
        0.0,
        -52_751_306.045,
    )
    assert (open_["leg"], open_["target_qty"], open_["delta_qty"]) == (
        "open",
        -47_248_693.0,
        -47_248_693.0,
    )


# -- pacing and slicing -----------------------------------------------------------------------


def test_pacing_counts_lots_by_the_rule() -> None:
    assert pace_quantity(0.1 + 0.2, 3, lot=0.1) == [0.2, 0.1, 0.0]
    steps = pace_quantity(99_999_999_999.9, 1, lot=0.1)
    assert steps == [99_999_999_999.9]
    with pytest.raises(PolicyError, match="not a whole number of lots"):
        pace_quantity(1_500_000_000.5, 2, lot=1.0)


def test_slicing_counts_lots_per_slice_by_the_rule() -> None:
    # a cap of 1,000,000,000.5 lots at mark 1 holds 1,000,000,000 lots a slice, not more
    pieces = slice_quantity(2_000_000_001.0, 1.0, 1_000_000_000.5, lot=1.0)
    assert pieces == [666_666_667.0, 666_666_667.0, 666_666_667.0]
    assert all(p <= 1_000_000_000.5 for p in pieces)
    # float noise below a whole number of lots per slice still counts as it
    assert slice_quantity(0.6, 10.0, 3.0 - 1e-15, lot=0.1) == [0.3, 0.3]


# -- execution --------------------------------------------------------------------------------


def test_execution_residual_does_not_round_a_large_count_up_by_a_lot() -> None:
    rules = VenueRules(lot_size=1.0)
    assert to_lots(1_500_000_000.5, rules) == 1_500_000_000.0
    assert to_lots(-47_248_693.955, rules) == -47_248_693.0
    assert to_lots(2_000_000_000.0 + 1e-6 * 2, rules) == 2_000_000_000.0
    order = next_order(target=4_500_000_001.5, position=3_000_000_001.0, mark=1.0, rules=rules)
    assert order is not None
    assert order.qty == 1_500_000_000.0
    # ...nor down by one where the count is whole as a decimal (x / 0.1 is 999999999998.9999)
    assert to_lots(99_999_999_999.9, VenueRules(lot_size=0.1)) == 99_999_999_999.9
    assert to_lots(0.3, VenueRules(lot_size=0.1)) == 0.3


def _run_paper(venue: PaperVenue, order: Order) -> list[OrderUpdate]:
    async def run() -> list[OrderUpdate]:
        await venue.place(order)
        updates: list[OrderUpdate] = []
        while not updates or not updates[-1].final:
            updates.append(await asyncio.wait_for(venue.updates().get(), 5))
        await venue.close()
        return updates

    return asyncio.run(run())


def test_paper_partial_fills_do_not_round_a_large_count_up_by_a_lot() -> None:
    venue = PaperVenue(
        "paper",
        PaperConfig(
            lot_size_by_symbol={"X": 1.0},
            fill_model="partial",
            partial_slices=2,
            fill_interval_ms=0,
        ),
    )
    updates = _run_paper(venue, Order("o1", "acct", "X", 3_000_000_001.0, False, 1.0))
    assert [u.fill_qty for u in updates] == [1_500_000_000.0, 1_500_000_000.0, 1.0]
    assert updates[-1].status is OrderStatus.FILLED
    assert venue.accounts["acct"]["X"] == 3_000_000_001.0


def test_paper_venue_checks_whole_lots_by_the_rule() -> None:
    venue = PaperVenue("paper", PaperConfig(lot_size_by_symbol={"X": 0.1, "Y": 1.0}))
    filled = _run_paper(venue, Order("o1", "acct", "X", 99_999_999_999.9, False, 1.0))
    assert filled[-1].status is OrderStatus.FILLED  # whole lots as a decimal
    noisy = _run_paper(venue, Order("o2", "acct", "X", 0.1 + 0.2, False, 1.0))
    assert noisy[-1].status is OrderStatus.FILLED  # float noise is not a fraction of a lot
    half = _run_paper(venue, Order("o3", "acct", "Y", 1_500_000_000.5, False, 1.0))
    assert half[-1].status is OrderStatus.REJECTED
    assert "not a multiple of the lot size" in (half[-1].reason or "")
