"""The live cost gate's figures: the backtester's CostGate on a correction's keys."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.policies.costs import CostGate, CostModel
from service.policies.errors import PolicyError
from service.policies.gate import CorrectionGate, KeyMove

qty = st.floats(-100, 100, allow_nan=False)
moves = st.lists(
    st.tuples(st.sampled_from(["X", "Y", "Z"]), st.floats(0.5, 500), qty, qty, qty), max_size=5
)


def gate(fee: float = 10.0, fixed: float = 0.0, ratio: float = 1.0) -> CorrectionGate:
    return CorrectionGate(
        CostModel(fee_bps=fee, fixed_per_trade=fixed),
        CostGate(max_cost_to_benefit=ratio),
        volatility=0.4,
        volatility_by_symbol={"Y": 0.9},
    )


@given(moves, st.floats(1.0, 1e6), st.floats(0.0, 100.0), st.floats(0.0, 5.0))
def test_the_decision_is_cost_against_ratio_times_benefit_whatever_the_equity(
    raw: list[tuple[str, float, float, float, float]], equity: float, fixed: float, ratio: float
) -> None:
    keys = [KeyMove(s, m, c, t, a) for s, m, c, t, a in raw]
    notionals = [abs(k.after - k.current) * k.mark for k in keys]
    g = gate(fixed=fixed, ratio=ratio)
    figures = g.decide(keys, notionals, equity)
    assert figures.go == (figures.cost_share <= ratio * figures.benefit_share)
    assert figures.benefit_share == pytest.approx(
        max(figures.tracking_error_before - figures.tracking_error_after, 0.0), abs=1e-12
    )
    # the equity only sets the units: the decision is the same on ten times the equity
    assert g.decide(keys, notionals, equity * 10).go == figures.go or math.isclose(
        figures.cost_share, ratio * figures.benefit_share, rel_tol=1e-9
    )


@given(moves, st.floats(1.0, 1e6))
def test_a_free_correction_always_goes(
    raw: list[tuple[str, float, float, float, float]], equity: float
) -> None:
    keys = [KeyMove(s, m, c, t, a) for s, m, c, t, a in raw]
    assert gate(fee=0.0).decide(keys, [1.0] * len(keys), equity).go


def test_figures_of_one_key() -> None:
    # 10 Y at 10 (100 of 1,000) aimed at 5, reaching 5: tracking error 0.9 x 0.05 removed
    figures = gate(fixed=2.0).decide([KeyMove("Y", 10.0, 10.0, 5.0, 5.0)], [50.0], 1_000.0)
    assert figures.cost == pytest.approx(50 * 0.001 + 2.0)
    assert figures.tracking_error_before == pytest.approx(0.045)
    assert figures.tracking_error_after == 0.0
    assert figures.benefit_share == pytest.approx(0.045)
    assert figures.go
    assert not gate(fixed=100.0).decide([KeyMove("Y", 10.0, 10.0, 5.0, 5.0)], [50.0], 1e3).go


def test_bad_figures_are_refused() -> None:
    with pytest.raises(PolicyError, match="volatility"):
        CorrectionGate(CostModel(), CostGate(), volatility=0.0)
    with pytest.raises(PolicyError, match="equity"):
        gate().decide([], [], 0.0)
