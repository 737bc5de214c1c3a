"""Risk overlays on target weights: volatility targeting and drawdown protection.

Both scale a set of weights up or down; what is taken out goes to cash, what is added is
borrowed (only volatility targeting adds, up to its leverage cap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import PolicyError
from .inputs import FloatArray, covariance, finite_vector
from .weights import Allocator, estimate


def portfolio_volatility(weights: npt.ArrayLike, cov: npt.ArrayLike) -> float:
    """``sqrt(w' cov w)``, in the covariance's units (annualized in, annualized out)."""
    w = finite_vector("weights", weights)
    sigma = covariance("cov", cov, w.shape[0])
    return math.sqrt(max(float(w @ sigma @ w), 0.0))


def volatility_target(
    weights: npt.ArrayLike, cov: npt.ArrayLike, target: float, max_leverage: float = 1.0
) -> FloatArray:
    """Scale ``weights`` so the portfolio's volatility is ``target``, never to a gross
    exposure above ``max_leverage``. A riskless portfolio is scaled to the cap."""
    w = finite_vector("weights", weights)
    if not math.isfinite(target) or target < 0:
        raise PolicyError(f"target: {target} must be a finite volatility >= 0")
    if not math.isfinite(max_leverage) or max_leverage < 0:
        raise PolicyError(f"max_leverage: {max_leverage} must be a finite number >= 0")
    gross = float(np.abs(w).sum())
    if gross == 0:
        return w.copy()
    unit = w / gross  # weights of gross 1 first: tiny weights would overflow ``cap / gross``
    vol = portfolio_volatility(unit, cov)
    scale = max_leverage if vol == 0 else min(max_leverage, target / vol)
    out: FloatArray = unit * scale
    return out


@dataclass(frozen=True)
class VolatilityTarget:
    """Another allocator's weights scaled to a target volatility, estimated on the trailing
    ``window`` returns (unscaled until two returns exist)."""

    inner: Allocator
    target_volatility: float = 0.10
    max_leverage: float = 1.0
    window: int = 63
    periods_per_year: float = 252.0

    def __post_init__(self) -> None:
        if self.window < 2:
            raise PolicyError(f"window: {self.window} is too short (need >= 2)")

    @property
    def label(self) -> str:
        return f"{self.inner.label}, vol target {self.target_volatility:.0%}"

    @property
    def lookback(self) -> int:
        return max(self.inner.lookback, self.window)

    def target(self, returns: FloatArray) -> FloatArray:
        k = self.inner.lookback
        base = self.inner.target(returns[max(0, returns.shape[0] - k) :] if k else returns[:0])
        if returns.shape[0] < 2:
            return base
        _, cov = estimate(returns[-self.window :], self.periods_per_year)
        return volatility_target(base, cov, self.target_volatility, self.max_leverage)


@dataclass(frozen=True)
class DrawdownState:
    """The deepest drawdown since risk was cut (0 while it is not cut)."""

    trough: float = 0.0


@dataclass(frozen=True)
class DrawdownProtection:
    """Cut exposure to ``floor`` once the drawdown passes ``limit``; then restore it in step
    with the recovery: at the trough ``floor``, back at the peak 1, linear in between
    (``floor + (1 - floor) * (1 - drawdown / trough)``). Deeper losses move the trough."""

    limit: float = 0.20
    floor: float = 0.50

    def __post_init__(self) -> None:
        if not (0 < self.limit < 1):
            raise PolicyError(f"limit: {self.limit} must be a drawdown between 0 and 1")
        if not (0 <= self.floor <= 1):
            raise PolicyError(f"floor: {self.floor} must be an exposure between 0 and 1")

    def step(self, state: DrawdownState, drawdown: float) -> tuple[DrawdownState, float]:
        """The exposure at a drawdown (0 at a peak, 0.3 for 30 % below it) and the new state."""
        if not math.isfinite(drawdown) or drawdown < 0 or drawdown > 1:
            raise PolicyError(f"drawdown: {drawdown} must be between 0 and 1")
        trough = state.trough
        if trough == 0.0 and drawdown <= self.limit:
            return state, 1.0
        trough = max(trough, drawdown)
        if drawdown == 0.0:
            return DrawdownState(), 1.0
        exposure = self.floor + (1.0 - self.floor) * (1.0 - drawdown / trough)
        return DrawdownState(trough), exposure

    def exposures(self, drawdowns: npt.ArrayLike) -> FloatArray:
        """The exposure after each drawdown of a sequence, from an uncut start."""
        d = finite_vector("drawdowns", drawdowns)
        out = np.empty_like(d)
        state = DrawdownState()
        for i, x in enumerate(d.tolist()):
            state, out[i] = self.step(state, x)
        return out


def drawdown(equity: npt.ArrayLike) -> FloatArray:
    """``1 - equity / running peak`` per point (0 at new highs)."""
    e = finite_vector("equity", equity)
    if np.any(e <= 0):
        raise PolicyError("equity: values must be > 0")
    out: FloatArray = 1.0 - e / np.maximum.accumulate(e)
    return out
