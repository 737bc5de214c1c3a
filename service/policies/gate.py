"""The cost gate of live policy corrections: the backtester's ``CostGate``, fed from a plan.

A correction's keys are measured as shares of an equity ``E`` (what the correction divides:
the portfolio's total equity for an allocation target, the target's base for weights):

- weights before: ``current_qty x mark / E``; targets: ``(current_qty + unrounded delta) x
  mark / E``, what the planner aimed at; weights after: ``(current_qty + delta_qty) x mark /
  E``, what the published intents reach (lot rounding, dropped keys and held growth left
  where they are).
- covariance: diagonal, each key's configured annualized volatility squared (the service
  keeps no return history to estimate correlations from; a diagonal is what the backtester
  would estimate for uncorrelated assets).
- expected benefit: the tracking error the correction removes, ``TE(before) - TE(after)``
  (``CostGate.decide``), an annualized share of ``E``.
- cost: ``CostModel.cost`` of the traded notionals (fee and half spread on the gross
  notional, a fixed cost per traded key), over ``E``.

The correction goes when ``cost / E <= max_cost_to_benefit x benefit``. ``E`` cancels out of
that comparison: it only sets the units of the reported figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .costs import CostGate, CostModel, tracking_error
from .errors import PolicyError


@dataclass(frozen=True)
class KeyMove:
    """One key of a correction: what it holds, aims at and reaches (quantities), its mark."""

    symbol: str
    mark: float
    current: float
    target: float
    after: float


@dataclass(frozen=True)
class GateFigures:
    """Both sides of a gate's decision, as the plan record reports them."""

    equity: float
    cost: float
    cost_share: float
    benefit_share: float
    tracking_error_before: float
    tracking_error_after: float
    max_cost_to_benefit: float
    go: bool

    def as_record(self) -> dict[str, float | bool]:
        """The plan record's ``cost_gate`` block (``messages.CostGateFigures``)."""
        return {
            "equity": _r(self.equity),
            "cost": _r(self.cost),
            "cost_share": _r(self.cost_share),
            "benefit_share": _r(self.benefit_share),
            "tracking_error_before": _r(self.tracking_error_before),
            "tracking_error_after": _r(self.tracking_error_after),
            "max_cost_to_benefit": self.max_cost_to_benefit,
            "go": self.go,
        }


def _r(x: float) -> float:
    """Figures rounded to 12 significant digits: the same record on every platform."""
    return float(f"{x:.12g}") + 0.0


@dataclass(frozen=True)
class CorrectionGate:
    """A rule's cost gate: the configured costs, the backtester's gate, and the volatility
    each key is assumed to have (``volatility_by_symbol`` over ``volatility``)."""

    costs: CostModel
    gate: CostGate
    volatility: float
    volatility_by_symbol: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, v in [("volatility", self.volatility), *self.volatility_by_symbol.items()]:
            if not (math.isfinite(v) and v > 0):
                raise PolicyError(f"cost gate: volatility {v!r} of {name} must be > 0")

    def vol(self, symbol: str) -> float:
        return self.volatility_by_symbol.get(symbol, self.volatility)

    def decide(
        self, moves: Sequence[KeyMove], traded_notional: Sequence[float], equity: float
    ) -> GateFigures:
        """Decide a correction: ``moves`` its world's keys, ``traded_notional`` the notional of
        every key it publishes an intent for, ``equity`` the ``E`` it is measured against."""
        if not (math.isfinite(equity) and equity > 0):
            raise PolicyError(f"cost gate: equity {equity!r} must be > 0")
        cost = self.costs.cost(np.asarray(traded_notional, dtype=np.float64))
        marks = np.array([m.mark for m in moves], dtype=np.float64)
        before = np.array([m.current for m in moves], dtype=np.float64) * marks / equity
        target = np.array([m.target for m in moves], dtype=np.float64) * marks / equity
        after = np.array([m.after for m in moves], dtype=np.float64) * marks / equity
        if not moves:  # nothing to move: no benefit
            return GateFigures(equity, cost, cost / equity, 0.0, 0.0, 0.0, self.ratio, cost == 0)
        cov = np.diag([self.vol(m.symbol) ** 2 for m in moves])
        decision = self.gate.decide(cost / equity, before, target, cov, after)
        return GateFigures(
            equity=equity,
            cost=cost,
            cost_share=decision.cost,
            benefit_share=decision.benefit,
            tracking_error_before=tracking_error(before, target, cov),
            tracking_error_after=tracking_error(after, target, cov),
            max_cost_to_benefit=self.ratio,
            go=decision.go,
        )

    @property
    def ratio(self) -> float:
        return self.gate.max_cost_to_benefit
