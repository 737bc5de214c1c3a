"""Target weights and risk overlays (SPEC 6), each against a closed form or an independent
computation, plus the degenerate inputs: one asset, zero variance, singular covariance, NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.policies import (
    DrawdownProtection,
    DrawdownState,
    EqualWeight,
    Kelly,
    PolicyError,
    RiskParity,
    VolatilityTarget,
    cap_and_fill,
    drawdown,
    equal_weights,
    estimate,
    kelly_weights,
    portfolio_volatility,
    risk_contributions,
    risk_parity_weights,
    volatility_target,
)
from tests.examples import examples

SETTINGS = settings(max_examples=examples(150), deadline=None)


def random_cov(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.normal(0, 0.2, (n, n))
    vols = rng.uniform(0.1, 0.6, n)
    corr = a @ a.T + np.eye(n) * 0.05
    d = np.sqrt(np.diag(corr))
    corr = corr / np.outer(d, d)
    return corr * np.outer(vols, vols)


# --------------------------------------------------------------------------------------------
# equal and estimates
# --------------------------------------------------------------------------------------------


def test_equal_weights() -> None:
    assert equal_weights(1).tolist() == [1.0]
    assert equal_weights(4).tolist() == [0.25] * 4
    with pytest.raises(PolicyError, match="at least one asset"):
        equal_weights(0)
    assert EqualWeight().target(np.zeros((0, 3))).tolist() == pytest.approx([1 / 3] * 3)


def test_estimate_is_annualized_sample_mean_and_covariance() -> None:
    r = np.array([[0.01, 0.02], [0.03, -0.01], [-0.02, 0.00]])
    mu, cov = estimate(r, periods_per_year=10)
    assert mu.tolist() == pytest.approx([10 * 0.02 / 3, 10 * 0.01 / 3])
    dx = r[:, 0] - r[:, 0].mean()
    dy = r[:, 1] - r[:, 1].mean()
    assert cov[0, 1] == pytest.approx(10 * float(dx @ dy) / 2)
    assert cov[1, 1] == pytest.approx(10 * float(dy @ dy) / 2)
    with pytest.raises(PolicyError, match="too few"):
        estimate(r[:1])
    with pytest.raises(PolicyError, match="row 1, column 0"):
        estimate(np.array([[0.0, 0.0], [math.nan, 0.0]]))


# --------------------------------------------------------------------------------------------
# Kelly
# --------------------------------------------------------------------------------------------


def test_kelly_diagonal_is_excess_return_over_variance() -> None:
    mu = np.array([0.08, 0.10, 0.02])
    vol = np.array([0.2, 0.4, 0.1])
    # raw (mu - rf) / sigma^2 = 1.5, 0.5, 0 -> sum 2 > 1 -> scaled to 1
    w = kelly_weights(mu, np.diag(vol**2), risk_free=0.02)
    assert w.tolist() == pytest.approx([0.75, 0.25, 0.0])


def test_kelly_two_assets_matches_the_closed_form_inverse() -> None:
    s1, s2, rho = 0.2, 0.3, 0.4
    c = rho * s1 * s2
    cov = np.array([[s1**2, c], [c, s2**2]])
    mu = np.array([0.05, 0.04])
    det = s1**2 * s2**2 - c * c
    raw = np.array([s2**2 * mu[0] - c * mu[1], s1**2 * mu[1] - c * mu[0]]) / det
    w = kelly_weights(mu, cov, risk_tolerance=0.1, max_exposure=10.0)
    assert w.tolist() == pytest.approx((0.1 * raw).tolist(), rel=1e-10)


def test_fractional_kelly_below_full_exposure_keeps_cash() -> None:
    w = kelly_weights([0.02], [[0.04]], risk_tolerance=0.5)  # 0.5 * 0.02 / 0.04 = 0.25
    assert w.tolist() == pytest.approx([0.25])


def test_kelly_singular_covariance_splits_duplicated_assets_instead_of_crashing() -> None:
    cov = np.array([[0.04, 0.04], [0.04, 0.04]])  # the same asset twice
    w = kelly_weights([0.1, 0.1], cov)
    assert w.tolist() == pytest.approx([0.5, 0.5])


def test_kelly_zero_variance_asset_does_not_crash() -> None:
    w = kelly_weights([0.1, 0.05], np.diag([0.0, 0.04]))
    assert np.isfinite(w).all()
    assert w.sum() == pytest.approx(1.0)


def test_kelly_without_any_edge_is_all_cash_and_one_asset_is_all_in() -> None:
    assert kelly_weights([-0.1, 0.0], np.diag([0.04, 0.04])).tolist() == [0.0, 0.0]
    assert kelly_weights([0.3], [[0.04]]).tolist() == [1.0]


def test_kelly_caps_each_asset_and_redistributes() -> None:
    w = kelly_weights([0.3, 0.1, 0.1], np.diag([0.04, 0.04, 0.04]), cap=0.4)
    assert w.tolist() == pytest.approx([0.4, 0.3, 0.3])


def test_kelly_rejects_nan_and_mismatched_shapes() -> None:
    with pytest.raises(PolicyError, match="expected_returns: nan at position 1"):
        kelly_weights([0.1, math.nan], np.eye(2))
    with pytest.raises(PolicyError, match="2 assets, expected 3"):
        kelly_weights([0.1, 0.1, 0.1], np.eye(2))
    with pytest.raises(PolicyError, match="symmetric"):
        kelly_weights([0.1, 0.1], [[1.0, 0.5], [0.0, 1.0]])


@given(
    raw=st.lists(st.floats(-1, 5, allow_nan=False), min_size=1, max_size=12),
    cap=st.floats(0.05, 1.0),
    budget=st.floats(0.0, 1.0),
)
@SETTINGS
def test_cap_and_fill_respects_caps_and_fills_what_it_can(
    raw: list[float], cap: float, budget: float
) -> None:
    w = cap_and_fill(raw, cap, budget)
    positive = sum(1 for x in raw if x > 0)
    assert np.all(w >= 0)
    assert np.all(w <= cap * (1 + 1e-12))
    assert np.all(w[np.array(raw) <= 0] == 0)
    assert w.sum() == pytest.approx(min(budget, cap * positive), abs=1e-12)


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 8),
    cap=st.floats(0.2, 1.0),
    tolerance=st.floats(0.1, 5.0),
)
@SETTINGS
def test_kelly_weights_are_long_only_capped_and_sum_to_at_most_one(
    seed: int, n: int, cap: float, tolerance: float
) -> None:
    rng = np.random.default_rng(seed)
    cov = random_cov(rng, n)
    mu = rng.normal(0.05, 0.1, n)
    w = kelly_weights(mu, cov, cap=cap, risk_tolerance=tolerance)
    assert np.all(w >= 0)
    assert np.all(w <= cap * (1 + 1e-12))
    assert w.sum() <= 1 + 1e-12
    raw = np.maximum(np.linalg.solve(cov, mu) * tolerance, 0)
    if raw.sum() >= 1 and cap * np.count_nonzero(raw) >= 1:
        assert w.sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# risk parity
# --------------------------------------------------------------------------------------------


def test_risk_parity_diagonal_is_inverse_volatility() -> None:
    vol = np.array([0.1, 0.2, 0.4, 0.8])
    inv = (1 / vol) / (1 / vol).sum()
    assert risk_parity_weights(np.diag(vol**2)).tolist() == pytest.approx(inv.tolist(), rel=1e-8)


@pytest.mark.parametrize("rho", [-0.9, -0.3, 0.0, 0.5, 0.99, 1.0])
def test_risk_parity_of_two_assets_is_inverse_volatility_whatever_the_correlation(
    rho: float,
) -> None:
    s1, s2 = 0.15, 0.45
    cov = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
    w = risk_parity_weights(cov)
    assert w.tolist() == pytest.approx([s2 / (s1 + s2), s1 / (s1 + s2)], rel=1e-8)


@given(seed=st.integers(0, 10_000), n=st.integers(2, 12))
@SETTINGS
def test_risk_parity_equalises_risk_contributions_to_1e_8(seed: int, n: int) -> None:
    cov = random_cov(np.random.default_rng(seed), n)
    w = risk_parity_weights(cov)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w > 0)
    # independent computation of the risk shares
    total = sum(w[i] * w[j] * cov[i, j] for i in range(n) for j in range(n))
    shares = [w[i] * sum(cov[i, j] * w[j] for j in range(n)) / total for i in range(n)]
    assert max(abs(s - 1 / n) for s in shares) <= 1.5e-8


def test_risk_parity_with_budgets() -> None:
    cov = random_cov(np.random.default_rng(3), 4)
    budgets = [0.4, 0.3, 0.2, 0.1]
    w = risk_parity_weights(cov, budgets)
    assert risk_contributions(w, cov).tolist() == pytest.approx(budgets, abs=1e-8)


def test_risk_parity_degenerate_inputs() -> None:
    assert risk_parity_weights([[0.04]]).tolist() == [1.0]
    with pytest.raises(PolicyError, match="position 1 has zero variance"):
        risk_parity_weights(np.diag([0.04, 0.0]))
    with pytest.raises(PolicyError, match="riskless"):
        risk_parity_weights([[1.0, -1.0], [-1.0, 1.0]])
    with pytest.raises(PolicyError, match="not a finite number"):
        risk_parity_weights([[math.nan, 0.0], [0.0, 1.0]])
    singular = np.array([[0.04, 0.04, 0.0], [0.04, 0.04, 0.0], [0.0, 0.0, 0.09]])
    w = risk_parity_weights(singular)  # two identical assets: still solvable
    assert risk_contributions(w, singular).tolist() == pytest.approx([1 / 3] * 3, abs=1e-8)


def test_risk_parity_allocator_skips_assets_that_did_not_move() -> None:
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, (50, 3))
    r[:, 1] = 0.0
    w = RiskParity(lookback=50).target(r)
    assert w[1] == 0.0
    assert w.sum() == pytest.approx(1.0)
    assert RiskParity().target(r[:3]).tolist() == pytest.approx([1 / 3] * 3)  # 3 returns, 3 assets


def test_kelly_allocator_estimates_from_its_window() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(0.001, 0.01, (100, 3))
    mu, cov = estimate(r)
    assert Kelly(cap=0.5).target(r).tolist() == pytest.approx(
        kelly_weights(mu, cov, cap=0.5).tolist()
    )
    assert Kelly().target(r[:1]).tolist() == pytest.approx([1 / 3] * 3)


# --------------------------------------------------------------------------------------------
# volatility targeting and drawdown protection
# --------------------------------------------------------------------------------------------


def test_volatility_target_closed_forms() -> None:
    assert volatility_target([1.0], [[0.04]], 0.10).tolist() == [0.5]  # 20 % vol to 10 %
    assert volatility_target([1.0], [[0.01]], 0.20, max_leverage=1.5).tolist() == [1.5]
    assert volatility_target([1.0], [[0.01]], 0.20).tolist() == [1.0]  # no leverage allowed
    w = volatility_target([0.5, 0.5], np.diag([0.04, 0.09]), 0.1)
    assert portfolio_volatility(w, np.diag([0.04, 0.09])) == pytest.approx(0.1)
    assert volatility_target([0.5, 0.5], np.zeros((2, 2)), 0.1, 2.0).tolist() == [1.0, 1.0]
    with pytest.raises(PolicyError, match="target"):
        volatility_target([1.0], [[0.04]], math.nan)


def test_volatility_target_allocator_scales_its_inner_weights() -> None:
    rng = np.random.default_rng(5)
    r = rng.normal(0, 0.02, (80, 2))
    alloc = VolatilityTarget(EqualWeight(), target_volatility=0.05, window=40)
    w = alloc.target(r)
    _, cov = estimate(r[-40:])
    assert portfolio_volatility(w, cov) == pytest.approx(0.05)
    assert alloc.lookback == 40
    assert "vol target 5%" in alloc.label


def test_drawdown_protection_cuts_then_restores_with_the_recovery() -> None:
    guard = DrawdownProtection(limit=0.2, floor=0.5)
    path = [0.0, 0.1, 0.2, 0.25, 0.4, 0.2, 0.1, 0.0, 0.15]
    # at 0.25 cut to the floor; the trough moves to 0.4; then 0.5 + 0.5 * (1 - d / 0.4)
    assert guard.exposures(path).tolist() == pytest.approx(
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.75, 0.875, 1.0, 1.0]
    )
    state, exposure = guard.step(DrawdownState(), 0.3)
    assert (state.trough, exposure) == (0.3, 0.5)
    with pytest.raises(PolicyError, match="drawdown"):
        guard.step(state, math.nan)
    with pytest.raises(PolicyError, match="limit"):
        DrawdownProtection(limit=0.0)


def test_drawdown_of_an_equity_curve() -> None:
    assert drawdown([100, 120, 90, 130, 65]).tolist() == pytest.approx([0, 0, 0.25, 0, 0.5])
    with pytest.raises(PolicyError, match="equity"):
        drawdown([100, 0])
