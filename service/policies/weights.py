"""Target weights: equal, Kelly and risk parity, plus the estimates they are fed.

Pure functions of expected returns and covariances (annualized; the unit only has to be the
same for both), long-only, returning weights as fractions of equity. Whatever is not
allocated is cash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .errors import PolicyError
from .inputs import FloatArray, covariance, finite_matrix, finite_vector

RISK_PARITY_TOLERANCE = 1e-8
"""Risk parity stops when every asset's share of risk is within this of its budget."""


def equal_weights(n: int) -> FloatArray:
    """``1 / n`` each."""
    if n < 1:
        raise PolicyError(f"assets: equal weights need at least one asset, got {n}")
    return np.full(n, 1.0 / n)


def estimate(
    returns: npt.ArrayLike, periods_per_year: float = 252.0
) -> tuple[FloatArray, FloatArray]:
    """Annualized mean and covariance of simple returns (rows: observations, columns: assets)."""
    r = finite_matrix("returns", returns)
    if r.shape[0] < 2:
        raise PolicyError(
            f"returns: {r.shape[0]} observation(s) are too few to estimate (need >= 2)"
        )
    mu = r.mean(axis=0) * periods_per_year
    cov = np.atleast_2d(np.cov(r, rowvar=False, ddof=1)) * periods_per_year
    return mu, cov


def cap_and_fill(raw: npt.ArrayLike, cap: float, budget: float) -> FloatArray:
    """Spread ``budget`` over the positive entries of ``raw`` in proportion to them, no entry
    above ``cap``; what a capped entry cannot take goes to the others (water filling). If the
    positive entries cannot hold the budget (too few of them for the cap), the rest is cash.
    """
    w = finite_vector("weights", raw)
    if not (0 < cap <= 1e12):
        raise PolicyError(f"cap: {cap} must be > 0")
    out = np.zeros_like(w)
    free = w > 0
    remaining = budget
    while free.any() and remaining > 0:
        share = remaining * (w[free] / w[free].sum())  # shares first: exact for subnormals
        over = share > cap
        if not over.any():
            out[free] = share
            break
        idx = np.flatnonzero(free)[over]
        out[idx] = cap
        remaining -= cap * idx.shape[0]
        free[idx] = False
    return out


def kelly_weights(
    expected_returns: npt.ArrayLike,
    cov: npt.ArrayLike,
    *,
    risk_free: float = 0.0,
    risk_tolerance: float = 1.0,
    cap: float = 1.0,
    max_exposure: float = 1.0,
) -> FloatArray:
    """The Kelly portfolio ``inv(cov) @ (mu - rf)`` times ``risk_tolerance``, long-only,
    each asset at most ``cap``, total at most ``max_exposure`` (1: no borrowing).

    A singular covariance (duplicated or perfectly correlated assets) uses the pseudo-inverse:
    the smallest-norm solution, which splits equally between indistinguishable assets instead
    of failing. A total below ``max_exposure`` stays below it (the rest is cash: fractional
    Kelly); above it is scaled down to it. No asset with a positive edge: all cash.
    """
    mu = finite_vector("expected_returns", expected_returns)
    sigma = covariance("cov", cov, mu.shape[0])
    for name, v in (("risk_tolerance", risk_tolerance), ("max_exposure", max_exposure)):
        if not math.isfinite(v) or v < 0:
            raise PolicyError(f"{name}: {v} must be a finite number >= 0")
    if not math.isfinite(risk_free):
        raise PolicyError(f"risk_free: {risk_free} is not finite")
    if mu.shape[0] == 0:
        raise PolicyError("expected_returns: no assets")
    raw = np.linalg.pinv(sigma, rcond=1e-12, hermitian=True) @ (mu - risk_free)
    raw = np.maximum(raw * risk_tolerance, 0.0)
    total = float(raw.sum())
    if total == 0.0:
        return np.zeros_like(raw)
    return cap_and_fill(raw, cap, min(total, max_exposure))


def risk_contributions(weights: npt.ArrayLike, cov: npt.ArrayLike) -> FloatArray:
    """Each asset's share of portfolio variance, ``w_i (cov w)_i / w' cov w`` (sums to 1)."""
    w = finite_vector("weights", weights)
    sigma = covariance("cov", cov, w.shape[0])
    marginal = sigma @ w
    total = float(w @ marginal)
    if total <= 0:
        raise PolicyError("weights: the portfolio has zero variance; risk shares are undefined")
    out: FloatArray = w * marginal / total
    return out


def risk_parity_weights(
    cov: npt.ArrayLike,
    budgets: Sequence[float] | None = None,
    *,
    tolerance: float = RISK_PARITY_TOLERANCE,
    max_iterations: int = 200,
) -> FloatArray:
    """Long-only weights whose risk contributions equal ``budgets`` (equal by default).

    Newton's method on the convex ``1/2 y' cov y - sum(b log y)``, whose minimiser, scaled
    to sum to 1, is the risk-budget portfolio (Spinu 2013); a backtracking line search keeps
    every ``y`` positive. It stops when each risk share is within ``tolerance`` of its
    budget. A zero-variance asset has no finite answer and is refused, as is a covariance
    under which some long-only mix is riskless.
    """
    sigma = covariance("cov", cov)
    n = sigma.shape[0]
    if n == 0:
        raise PolicyError("cov: no assets")
    diag = np.diag(sigma)
    if np.any(diag <= 0):
        raise PolicyError(
            f"cov: asset at position {int(np.flatnonzero(diag <= 0)[0])} has zero variance; "
            "its risk contribution cannot be made equal to the others'"
        )
    if budgets is None:
        b = np.full(n, 1.0 / n)
    else:
        b = finite_vector("budgets", budgets)
        if b.shape[0] != n or np.any(b <= 0):
            raise PolicyError(f"budgets: need {n} budgets, each > 0")
        b = b / b.sum()
    if n == 1:
        return np.ones(1)
    # work on a unit-diagonal (correlation) matrix; weights scale back by 1/vol
    vol = np.sqrt(diag)
    corr = sigma / np.outer(vol, vol)
    y = np.sqrt(b)
    start = float(y @ corr @ y)
    if start <= 1e-14 * float(y @ y):
        raise PolicyError(_RISKLESS)
    y = y / math.sqrt(start)

    def objective(v: FloatArray) -> float:
        return 0.5 * float(v @ corr @ v) - float(b @ np.log(v))

    f = objective(y)
    for _ in range(max_iterations):
        w = y / vol
        w = w / w.sum()
        marginal = sigma @ w
        variance = float(w @ marginal)
        if variance <= 0:
            break
        if np.max(np.abs(w * marginal / variance - b)) <= tolerance:
            result: FloatArray = w
            return result
        grad = corr @ y - b / y
        hess = corr + np.diag(b / (y * y))
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        while True:
            cand = y - t * step
            if np.all(cand > 0):
                fc = objective(cand)
                if fc <= f - 1e-4 * t * float(grad @ step) or t < 1e-12:
                    break
            t *= 0.5
            if t < 1e-12:
                break
        if not np.all(cand > 0) or not math.isfinite(fc):
            break
        y, f = cand, fc
    raise PolicyError(_RISKLESS)


_RISKLESS = (
    "cov: risk parity did not converge (some long-only mix of the assets is riskless, "
    "for instance perfectly negatively correlated assets)"
)


# --------------------------------------------------------------------------------------------
# Allocators: a weight rule plus the history it needs, for the backtester
# --------------------------------------------------------------------------------------------


class Allocator(Protocol):
    """A weight rule for backtests: given the trailing ``lookback`` returns (fewer at the start
    of a history; rows are dates, columns assets), the target weights."""

    @property
    def label(self) -> str: ...

    @property
    def lookback(self) -> int: ...

    def target(self, returns: FloatArray) -> FloatArray: ...


@dataclass(frozen=True)
class EqualWeight:
    """``1 / n`` each, whatever the history."""

    lookback: int = 0
    label: str = "equal"

    def target(self, returns: FloatArray) -> FloatArray:
        return equal_weights(returns.shape[1])


@dataclass(frozen=True)
class Kelly:
    """Kelly weights from the trailing ``lookback`` returns (equal weights until two exist)."""

    lookback: int = 252
    risk_free: float = 0.0
    risk_tolerance: float = 1.0
    cap: float = 1.0
    max_exposure: float = 1.0
    periods_per_year: float = 252.0
    label: str = "kelly"

    def target(self, returns: FloatArray) -> FloatArray:
        if returns.shape[0] < 2:
            return equal_weights(returns.shape[1])
        mu, cov = estimate(returns, self.periods_per_year)
        return kelly_weights(
            mu,
            cov,
            risk_free=self.risk_free,
            risk_tolerance=self.risk_tolerance,
            cap=self.cap,
            max_exposure=self.max_exposure,
        )


@dataclass(frozen=True)
class RiskParity:
    """Equal risk contribution from the trailing ``lookback`` returns.

    Equal weights until there are more returns than assets (with fewer, the estimated
    covariance is singular and some long-only mix looks riskless). An asset whose price did
    not move over the window has no defined risk share; it gets weight 0 for that rebalance
    (``risk_parity_weights`` itself refuses it).
    """

    lookback: int = 252
    periods_per_year: float = 252.0
    label: str = "risk parity"

    def target(self, returns: FloatArray) -> FloatArray:
        n = returns.shape[1]
        if returns.shape[0] <= n:
            return equal_weights(n)
        _, cov = estimate(returns, self.periods_per_year)
        live = np.diag(cov) > 0
        out = np.zeros(n)
        if live.any():
            out[live] = risk_parity_weights(cov[np.ix_(live, live)])
        return out
