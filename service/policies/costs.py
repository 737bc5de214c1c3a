"""What a rebalance costs, and whether it is worth it.

Cost: a proportional fee and half the bid-ask spread on traded notional, plus a fixed cost per
traded asset (gas, ticket fees). Benefit: the tracking error the rebalance removes, i.e. the
annualized volatility of the gap between held and target weights, before minus after. The
gate compares the two as shares of equity: skip when cost exceeds ``max_cost_to_benefit``
times the benefit. The unit mismatch (a one-off cost against a yearly volatility) is the
point of the ratio: it says how many years of tracking error one is willing to pay for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import PolicyError
from .inputs import covariance, finite_vector


@dataclass(frozen=True)
class CostModel:
    """Fee and half-spread in basis points of traded notional, fixed cost per traded asset."""

    fee_bps: float = 0.0
    half_spread_bps: float = 0.0
    fixed_per_trade: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fee_bps", "half_spread_bps", "fixed_per_trade"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise PolicyError(f"costs: {name} {v!r} must be a finite number >= 0")

    @property
    def rate(self) -> float:
        """The proportional part, as a fraction of notional."""
        return (self.fee_bps + self.half_spread_bps) / 10_000.0

    @property
    def is_free(self) -> bool:
        return self.rate == 0.0 and self.fixed_per_trade == 0.0

    def cost(self, traded_notional: npt.ArrayLike) -> float:
        """The cost of trading these (signed) notionals, one entry per asset."""
        n = finite_vector("traded_notional", traded_notional)
        gross = float(np.abs(n).sum())
        return gross * self.rate + self.fixed_per_trade * int(np.count_nonzero(n))


def tracking_error(weights: npt.ArrayLike, targets: npt.ArrayLike, cov: npt.ArrayLike) -> float:
    """Volatility of the held-minus-target portfolio, ``sqrt(d' cov d)``."""
    w = finite_vector("weights", weights)
    t = finite_vector("targets", targets)
    if w.shape != t.shape:
        raise PolicyError(f"weights: {w.shape[0]} assets but {t.shape[0]} targets")
    sigma = covariance("cov", cov, w.shape[0])
    d = w - t
    return math.sqrt(max(float(d @ sigma @ d), 0.0))


@dataclass(frozen=True)
class GateDecision:
    """A gate's verdict with its figures (shares of equity)."""

    cost: float
    benefit: float
    go: bool


@dataclass(frozen=True)
class CostGate:
    """Skip rebalances whose cost is above ``max_cost_to_benefit`` x their benefit.

    ``window`` is how many trailing returns estimate the covariance in backtests.
    """

    max_cost_to_benefit: float = 1.0
    window: int = 63

    def __post_init__(self) -> None:
        v = self.max_cost_to_benefit
        if not math.isfinite(v) or v < 0:
            raise PolicyError(f"max_cost_to_benefit: {v} must be a finite number >= 0")
        if self.window < 2:
            raise PolicyError(f"window: {self.window} is too short (need >= 2)")

    def decide(
        self,
        cost_share: float,
        weights_before: npt.ArrayLike,
        targets: npt.ArrayLike,
        cov: npt.ArrayLike,
        weights_after: npt.ArrayLike | None = None,
    ) -> GateDecision:
        """``cost_share`` is the rebalance's cost over equity; ``weights_after`` what the
        rebalance reaches (the targets themselves when omitted)."""
        if not math.isfinite(cost_share) or cost_share < 0:
            raise PolicyError(f"cost_share: {cost_share} must be a finite number >= 0")
        before = tracking_error(weights_before, targets, cov)
        after = 0.0 if weights_after is None else tracking_error(weights_after, targets, cov)
        benefit = max(before - after, 0.0)
        return GateDecision(cost_share, benefit, cost_share <= self.max_cost_to_benefit * benefit)
