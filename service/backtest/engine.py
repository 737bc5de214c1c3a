"""The backtester: any trigger with any target weights over a price table, with costs.

Trades happen at the close of the date that decides them, with what is known at that close.
Between trades holdings are constant, so the engine only visits the dates a trigger looks at
(every date for a drift band, a dozen a year for a monthly calendar) and fills the equity
curve afterwards in one vectorised product of holdings and prices. Per visited date it does
a handful of numpy operations on vectors of assets.

Costs are paid from the portfolio: after a rebalance the weights are the targets of what is
left once costs are paid (solved by fixed-point iteration; exact when costs are zero).
Weights that sum to less than 1 leave cash (at zero return); more than 1 borrows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..policies.calendar import DateArray, DateLike
from ..policies.costs import CostGate, CostModel
from ..policies.errors import PolicyError
from ..policies.inputs import FloatArray
from ..policies.risk import DrawdownProtection, DrawdownState
from ..policies.triggers import Market, Never, Schedule, Throttle, Trigger, outside_band
from ..policies.weights import Allocator, EqualWeight, estimate
from .metrics import PerformanceMetrics, compute
from .prices import PriceTable, as_table, dates_between


@dataclass(frozen=True)
class Policy:
    """A named combination: when (trigger), to what (weights), and the optional risk
    overlay, throttle and cost gate."""

    name: str
    trigger: Trigger = field(default_factory=Never)
    weights: Allocator = field(default_factory=EqualWeight)
    drawdown: DrawdownProtection | None = None
    throttle: Throttle | None = None
    gate: CostGate | None = None


@dataclass(frozen=True)
class Run:
    """One policy's backtest: its equity curve, its trades and its figures."""

    policy: str
    dates: DateArray
    equity: FloatArray
    trade_dates: DateArray
    """Dates with a trade, the initial allocation first."""
    traded: FloatArray
    """Gross notional traded on each of those dates."""
    costs: FloatArray
    skipped_by_gate: int
    skipped_by_throttle: int
    metrics: PerformanceMetrics
    regime_share: dict[str, float] = field(default_factory=dict)
    """For regime-driven triggers: the share of dates spent in each regime."""

    @property
    def drawdown(self) -> FloatArray:
        out: FloatArray = self.equity / np.maximum.accumulate(self.equity) - 1.0
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "start": str(self.dates[0]),
            "end": str(self.dates[-1]),
            **self.metrics.as_dict(),
            "skipped_by_gate": self.skipped_by_gate,
            "skipped_by_throttle": self.skipped_by_throttle,
            "regime_share": self.regime_share,
        }


@dataclass(frozen=True)
class Backtest:
    """How to run: costs, starting equity, the trading window, annualization."""

    costs: CostModel = field(default_factory=CostModel)
    initial_equity: float = 1_000_000.0
    start: DateLike | None = None
    end: DateLike | None = None
    periods_per_year: float = 252.0
    risk_free: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_equity) and self.initial_equity > 0):
            raise PolicyError(f"initial_equity: {self.initial_equity} must be > 0")
        if not (math.isfinite(self.periods_per_year) and self.periods_per_year > 0):
            raise PolicyError(f"periods_per_year: {self.periods_per_year} must be > 0")

    def run(self, prices: PriceTable | Any, policies: Sequence[Policy]) -> list[Run]:
        """Every policy over the same prices. History before ``start`` feeds estimates and
        regimes; trading runs from ``start`` to ``end``."""
        table = as_table(prices).until(self.end)
        first, last = dates_between(table.dates, self.start, None)
        names = [p.name for p in policies]
        if len(set(names)) != len(names):
            raise PolicyError(f"policies: names must be unique, got {names}")
        market = Market(table.dates, table.assets, table.returns)
        return [self._run(table, market, first, last, p) for p in policies]

    def _run(self, table: PriceTable, market: Market, first: int, last: int, policy: Policy) -> Run:
        schedule = policy.trigger.schedule(market)
        prices, returns = table.prices, table.returns
        n = prices.shape[1]
        lookback = policy.weights.lookback
        static = lookback == 0
        fixed = policy.weights.target(returns[:0]) if static else None

        def target_at(t: int) -> FloatArray:
            if fixed is not None:
                return fixed
            try:
                w = policy.weights.target(returns[max(1, t - lookback + 1) : t + 1])
            except PolicyError as exc:
                raise PolicyError(
                    f"{policy.name}: {policy.weights.label} on {table.dates[t]}: {exc}"
                ) from None
            if w.shape != (n,) or not np.isfinite(w).all():
                raise PolicyError(f"weights: {policy.weights.label} gave {w} on {table.dates[t]}")
            return w

        rate = self.costs.rate
        fixed_cost = self.costs.fixed_per_trade
        free = self.costs.is_free

        def trade(value: float, w: FloatArray, held: FloatArray) -> tuple[float, FloatArray, float]:
            """Post-cost equity, traded notionals, cost, for moving ``held`` values to ``w``."""
            if free:
                return value, w * value - held, 0.0
            after = value
            for _ in range(50):
                flows = w * after - held
                cost = rate * float(np.abs(flows).sum()) + fixed_cost * int(np.count_nonzero(flows))
                nxt = value - cost
                if abs(nxt - after) <= 1e-13 * abs(value):
                    after = nxt
                    break
                after = nxt
            flows = w * after - held
            return after, flows, value - after

        guard = policy.drawdown
        guard_state = DrawdownState()
        throttle = policy.throttle.start() if policy.throttle else None
        gate = policy.gate

        # the initial allocation
        w0 = target_at(first)
        equity0, flows, cost = trade(self.initial_equity, w0, np.zeros(n))
        p = prices[first]
        q = w0 * equity0 / p
        cash = equity0 - float(q @ p)
        trade_idx = [first]
        holdings = [q]
        cashes = [cash]
        traded = [float(np.abs(flows).sum())]
        costs = [cost]
        turnover = 0.0
        skipped_gate = skipped_throttle = 0
        peak = equity0
        last_trade = first
        if throttle is not None:
            throttle = throttle.record(int(table.dates[first].astype(np.int64)))

        checks = np.flatnonzero(schedule.checks[first + 1 : last + 1]) + first + 1
        thresholds = schedule.thresholds
        mode = schedule.mode
        for t in checks.tolist():
            p = prices[t]
            values = q * p
            value = float(values.sum()) + cash
            if value <= 0:
                break  # bankrupt: nothing left to rebalance
            w = target_at(t)
            if guard is not None:
                segment = prices[last_trade + 1 : t + 1] @ q + cash
                peak = max(peak, float(segment.max()))
                guard_state, exposure = guard.step(
                    guard_state, min(max(1.0 - value / peak, 0.0), 1.0)
                )
                w = w * exposure
            if thresholds is not None and not outside_band(values / value, w, thresholds[t], mode):
                continue
            if throttle is not None:
                day = int(table.dates[t].astype(np.int64))
                if not throttle.allows(day):
                    skipped_throttle += 1
                    continue
            after, flows, cost = trade(value, w, values)
            if gate is not None:
                window = returns[max(1, t - gate.window + 1) : t + 1]
                if window.shape[0] >= 2:
                    _, cov = estimate(window, self.periods_per_year)
                    if not gate.decide(cost / value, values / value, w, cov).go:
                        skipped_gate += 1
                        continue
            if throttle is not None:
                throttle = throttle.record(day)
            if guard is not None:
                peak = max(peak, after)
            q = w * after / p
            cash = after - float(q @ p)
            gross = float(np.abs(flows).sum())
            turnover += gross / value
            trade_idx.append(t)
            holdings.append(q)
            cashes.append(cash)
            traded.append(gross)
            costs.append(cost)
            last_trade = t

        equity = _equity(prices[first : last + 1], np.array(trade_idx) - first, holdings, cashes)
        dates = table.dates[first : last + 1]
        metrics = compute(
            dates,
            equity,
            turnover=turnover,
            rebalances=len(trade_idx) - 1,
            total_cost=float(sum(costs)),
            periods_per_year=self.periods_per_year,
            risk_free=self.risk_free,
        )
        return Run(
            policy=policy.name,
            dates=dates,
            equity=equity,
            trade_dates=table.dates[np.array(trade_idx)],
            traded=np.array(traded),
            costs=np.array(costs),
            skipped_by_gate=skipped_gate,
            skipped_by_throttle=skipped_throttle,
            metrics=metrics,
            regime_share=_regime_share(schedule, first, last),
        )


def _equity(
    prices: FloatArray,
    trade_at: npt.NDArray[np.int64],
    holdings: list[FloatArray],
    cashes: list[float],
) -> FloatArray:
    """Equity per date from piecewise-constant holdings: each date uses the holdings of the
    last trade on or before it."""
    segment = np.searchsorted(trade_at, np.arange(prices.shape[0]), "right") - 1
    q = np.stack(holdings)
    out: FloatArray = np.einsum("tn,tn->t", q[segment], prices) + np.asarray(cashes)[segment]
    return out


def _regime_share(schedule: Schedule, first: int, last: int) -> dict[str, float]:
    if schedule.label_index is None or not schedule.labels:
        return {}
    index = schedule.label_index[first : last + 1]
    counts = np.bincount(index, minlength=len(schedule.labels))
    return {
        name: float(c) / index.shape[0]
        for name, c in zip(schedule.labels, counts.tolist(), strict=True)
    }


def backtest(
    prices: PriceTable | Any,
    policies: Sequence[Policy],
    *,
    costs: CostModel | None = None,
    initial_equity: float = 1_000_000.0,
    start: DateLike | None = None,
    end: DateLike | None = None,
    periods_per_year: float = 252.0,
    risk_free: float = 0.0,
) -> list[Run]:
    """Shorthand for ``Backtest(...).run(prices, policies)``."""
    return Backtest(
        costs=costs or CostModel(),
        initial_equity=initial_equity,
        start=start,
        end=end,
        periods_per_year=periods_per_year,
        risk_free=risk_free,
    ).run(prices, policies)
