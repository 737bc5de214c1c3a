"""Cost model, cost/benefit gate, pacing and slicing (SPEC 6)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.messages import DeltaIntent
from service.planner import WorldChange
from service.policies import (
    CostGate,
    CostModel,
    PolicyError,
    front_loaded,
    pace,
    pace_quantity,
    slice_intent,
    slice_quantity,
    tracking_error,
)
from tests.examples import examples
from tests.helpers import plan_rows

SETTINGS = settings(max_examples=examples(200), deadline=None)
LOTS = (0.001, 0.01, 0.1, 0.25, 1.0, 5.0)


def lots_of(x: float, lot: float) -> Fraction:
    """How many lots ``x`` is, exactly (decimal reading of both)."""
    return Fraction(repr(x)) / Fraction(repr(lot))


def test_cost_model_adds_fee_half_spread_and_fixed_cost_per_traded_asset() -> None:
    model = CostModel(fee_bps=10, half_spread_bps=5, fixed_per_trade=1.0)
    assert model.cost([100.0, -50.0, 0.0]) == pytest.approx(150 * 0.0015 + 2.0)
    assert CostModel().is_free
    assert CostModel().cost([1e6]) == 0.0
    with pytest.raises(PolicyError, match="fee_bps"):
        CostModel(fee_bps=-1)
    with pytest.raises(PolicyError, match="traded_notional: nan"):
        model.cost([math.nan])


def test_tracking_error_closed_form() -> None:
    cov = np.diag([0.04, 0.09])
    # d = (0.1, -0.1): sqrt(0.01 * 0.04 + 0.01 * 0.09)
    assert tracking_error([0.6, 0.4], [0.5, 0.5], cov) == pytest.approx(math.sqrt(0.0013))
    with pytest.raises(PolicyError, match="2 assets but 3 targets"):
        tracking_error([0.5, 0.5], [0.3, 0.3, 0.4], cov)


def test_gate_skips_when_cost_exceeds_its_share_of_the_benefit() -> None:
    cov = np.diag([0.04, 0.09])
    benefit = math.sqrt(0.0013)
    gate = CostGate(max_cost_to_benefit=0.5)
    go = gate.decide(0.5 * benefit * 0.99, [0.6, 0.4], [0.5, 0.5], cov)
    assert go.go
    assert go.benefit == pytest.approx(benefit)
    assert not gate.decide(0.5 * benefit * 1.01, [0.6, 0.4], [0.5, 0.5], cov).go
    # a rebalance that only gets half way removes less tracking error
    half = gate.decide(0.001, [0.6, 0.4], [0.5, 0.5], cov, weights_after=[0.55, 0.45])
    assert half.benefit == pytest.approx(benefit / 2)
    assert not gate.decide(0.0001, [0.5, 0.5], [0.5, 0.5], cov).go  # nothing to gain
    with pytest.raises(PolicyError, match="max_cost_to_benefit"):
        CostGate(max_cost_to_benefit=math.inf)


def test_front_loaded_profiles() -> None:
    assert front_loaded(3).tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 6])
    assert front_loaded(3, ratio=0.5).tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert front_loaded(1).tolist() == [1.0]
    with pytest.raises(PolicyError, match="steps"):
        front_loaded(0)
    with pytest.raises(PolicyError, match="ratio"):
        front_loaded(3, ratio=1.5)


def test_pace_ends_exactly_on_the_target() -> None:
    path = pace([0.5, 0.5], [0.2, 0.8], 3)
    assert path[0].tolist() == pytest.approx([0.35, 0.65])
    assert path[-1].tolist() == [0.2, 0.8]


@given(
    delta=st.floats(-1e6, 1e6, allow_nan=False),
    steps=st.integers(1, 12),
    ratio=st.one_of(st.none(), st.floats(0.1, 1.0)),
)
@SETTINGS
def test_paced_steps_sum_to_the_move_front_loaded(
    delta: float, steps: int, ratio: float | None
) -> None:
    parts = pace_quantity(delta, steps, ratio=ratio)
    assert len(parts) == steps
    assert math.fsum(parts) == pytest.approx(delta, abs=1e-9 * max(1.0, abs(delta)))
    assert all(p * delta >= 0 for p in parts)
    mags = [abs(p) for p in parts]
    assert all(b <= a * (1 + 1e-9) + 1e-12 for a, b in itertools.pairwise(mags))


@given(
    lots=st.integers(-5000, 5000),
    lot=st.sampled_from(LOTS),
    steps=st.integers(1, 10),
    ratio=st.one_of(st.none(), st.floats(0.1, 1.0)),
)
@SETTINGS
def test_paced_steps_in_lots_are_whole_lots_summing_exactly(
    lots: int, lot: float, steps: int, ratio: float | None
) -> None:
    delta = float(Fraction(repr(lot)) * lots)
    parts = pace_quantity(delta, steps, lot=lot, ratio=ratio)
    counts = [lots_of(p, lot) for p in parts]
    assert all(c.denominator == 1 for c in counts)
    assert sum(counts) == lots
    mags = [abs(c) for c in counts]
    assert mags == sorted(mags, reverse=True)


def test_pacing_a_quantity_that_is_not_whole_lots_is_refused() -> None:
    with pytest.raises(PolicyError, match="not a whole number of lots"):
        pace_quantity(0.15, 3, lot=0.1)


@given(
    lots=st.integers(-9_000, 9_000).filter(bool),
    lot=st.sampled_from(LOTS),
    mark=st.floats(0.5, 70_000),
    slice_lots=st.integers(1, 500),
)
@SETTINGS
def test_slices_sum_to_the_intent_each_within_max_notional_in_whole_lots(
    lots: int, lot: float, mark: float, slice_lots: int
) -> None:
    qty = float(Fraction(repr(lot)) * lots)
    max_notional = slice_lots * lot * mark * 1.0000001
    pieces = slice_quantity(qty, mark, max_notional, lot=lot)
    counts = [lots_of(p, lot) for p in pieces]
    assert sum(counts) == lots
    assert all(c.denominator == 1 for c in counts)
    assert all(abs(p) * mark <= max_notional * (1 + 1e-9) for p in pieces)
    assert all(p * qty > 0 for p in pieces)
    assert len(pieces) == math.ceil(abs(lots) / slice_lots)


@given(
    qty=st.floats(1e-6, 1e5) | st.floats(-1e5, -1e-6),
    mark=st.floats(0.01, 1e5),
    pieces=st.floats(0.5, 300),
)
@SETTINGS
def test_slices_without_lots(qty: float, mark: float, pieces: float) -> None:
    cap = abs(qty) * mark / pieces
    parts = slice_quantity(qty, mark, cap)
    assert len(parts) == max(1, math.ceil(pieces * (1 - 1e-9)))
    assert math.fsum(parts) == pytest.approx(qty, rel=1e-12)
    assert all(abs(p) * mark <= cap * (1 + 1e-9) for p in parts)
    assert all(p * qty > 0 for p in parts)


def test_slicing_refuses_a_lot_worth_more_than_a_slice() -> None:
    with pytest.raises(PolicyError, match=r"one lot of 1\.0 at 60000\.0 is worth 60000"):
        slice_quantity(3.0, 60_000.0, 10_000.0, lot=1.0)
    assert slice_quantity(0.0, 10.0, 5.0) == []
    with pytest.raises(PolicyError, match="more than 10000 slices"):
        slice_quantity(1e6, 100.0, 1.0)


def test_sliced_intents_are_valid_chained_and_walk_to_the_target() -> None:
    plan = plan_rows(
        [
            ("a", "s1", "binance", "BTC", 0.6, 60_000.0, 0),
            ("a", "s2", "binance", "BTC", 0.9, 60_000.0, 0),
        ],
        [WorldChange("a", 0.3, 0.2, {"s1": 0.15, "s2": 0.15}, {"s1": 0.1, "s2": 0.1})],
        lot_size_by_symbol={"BTC": 0.001},
    )
    (intent,) = plan.intents()  # -0.5 BTC, 30,000 notional
    children = slice_intent(intent, max_notional=8_000.0, lot=0.001)
    models = [DeltaIntent.model_validate(c) for c in children]
    assert [m.delta_qty for m in models] == [-0.125, -0.125, -0.125, -0.125]
    assert models[0].current_qty == 1.5
    assert models[-1].target_qty == intent["target_qty"]
    assert all(a.target_qty == b.current_qty for a, b in itertools.pairwise(models))
    assert models[0].depends_on is None
    assert [m.depends_on for m in models[1:]] == [m.intent_id for m in models[:-1]]
    assert all(m.reduce_only and m.notional <= 8_000.0 for m in models)
    breakdown = [{b.strategy_id: b.delta_qty for b in m.strategy_breakdown} for m in models]
    assert breakdown[0] == pytest.approx({"s1": -0.05, "s2": -0.075})
    assert [c["intent_id"] for c in slice_intent(intent, 8_000.0, 0.001)] == [
        m.intent_id for m in models
    ]
    assert slice_intent(intent, max_notional=50_000.0) == [intent]
