"""Performance figures of an equity curve, defined once for every policy.

Daily simple returns; annualized with ``periods_per_year`` (252 for trading days). CAGR uses
calendar time between the first and last date (365.25-day years). Sharpe is the annualized
mean excess return over the annualized volatility (sample standard deviation). Max drawdown
is the deepest fall from a running peak, as a negative fraction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..policies.calendar import DateArray
from ..policies.inputs import FloatArray

DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class PerformanceMetrics:
    """What a backtest run achieved: return, risk, turnover, rebalances and costs."""

    total_return: float
    cagr: float
    volatility: float
    sharpe: float
    max_drawdown: float
    turnover: float
    """Traded notional (buys plus sells) over equity at the time, summed, per year; the
    initial allocation is not counted."""
    rebalances: int
    """Rebalances after the initial allocation."""
    total_cost: float
    """Everything paid in costs, the initial allocation included, in currency."""
    years: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def years_between(dates: DateArray) -> float:
    return float((dates[-1] - dates[0]).astype(np.int64)) / DAYS_PER_YEAR


def compute(
    dates: DateArray,
    equity: FloatArray,
    *,
    turnover: float,
    rebalances: int,
    total_cost: float,
    periods_per_year: float = 252.0,
    risk_free: float = 0.0,
) -> PerformanceMetrics:
    """The figures of one equity curve (its first point is the starting equity)."""
    years = years_between(dates)
    growth = float(equity[-1] / equity[0])
    returns = equity[1:] / equity[:-1] - 1.0
    vol = float(returns.std(ddof=1)) * math.sqrt(periods_per_year) if returns.size > 1 else 0.0
    excess = float(returns.mean()) * periods_per_year - risk_free if returns.size else 0.0
    peak = np.maximum.accumulate(equity)
    return PerformanceMetrics(
        total_return=growth - 1.0,
        cagr=growth ** (1.0 / years) - 1.0 if years > 0 and growth > 0 else math.nan,
        volatility=vol,
        sharpe=excess / vol if vol > 0 else math.nan,
        max_drawdown=float((equity / peak - 1.0).min()),
        turnover=turnover / years if years > 0 else math.nan,
        rebalances=rebalances,
        total_cost=total_cost,
        years=years,
    )
