"""Live weights of a risk-based target: the backtester's allocators and overlays, fed the
returns between a world's mark samples.

Nothing here re-implements a policy: ``allocator`` builds the same ``Kelly``, ``RiskParity``,
``EqualWeight`` and ``VolatilityTarget`` objects the backtester runs, and their ``target``
is called on the last ``lookback`` returns as the backtester calls it; the drawdown guard is
``DrawdownProtection.step`` on the drawdown of ``risk.drawdown``. What is live-specific is the
input: the returns come from the samples, and the drawdown is that of what the world holds
now, valued at each sample's marks (the peak is the highest of those values over the sampled
window, so it is bounded and a trade that scales the holdings does not move it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..policies.errors import PolicyError
from ..policies.inputs import FloatArray
from ..policies.risk import DrawdownProtection, DrawdownState, VolatilityTarget, drawdown
from ..policies.weights import Allocator, EqualWeight, Kelly, RiskParity
from .config import RiskTarget
from .sampling import Sample, asset_returns


def allocator(target: RiskTarget) -> Allocator:
    """The backtester's allocator for ``target``: its method, wrapped in a volatility target
    when the rule has one."""
    per_year = target.annualised_by
    inner: Allocator
    if target.kind == "kelly":
        inner = Kelly(
            lookback=target.window,
            risk_free=target.risk_free,
            risk_tolerance=target.risk_tolerance,
            cap=target.cap,
            max_exposure=target.max_exposure,
            periods_per_year=per_year,
        )
    elif target.kind == "risk_parity":
        inner = RiskParity(lookback=target.window, periods_per_year=per_year)
    else:
        inner = EqualWeight()
    vol = target.vol_target
    if vol is None:
        return inner
    return VolatilityTarget(
        inner,
        target_volatility=vol.target_volatility,
        max_leverage=vol.max_leverage,
        window=vol.window or target.window,
        periods_per_year=per_year,
    )


def returns_needed(target: RiskTarget) -> int:
    """Returns between samples the weights need (0: equal weights alone need none)."""
    lookback = allocator(target).lookback
    if target.drawdown_guard is not None:
        lookback = max(lookback, target.window)
    return lookback


def samples_needed(target: RiskTarget) -> int:
    """Samples before the estimate is ready: one more than its returns (0 when none)."""
    needed = returns_needed(target)
    return needed + 1 if needed else 0


@dataclass(frozen=True)
class Estimating:
    """Not ready: too few samples (or too few complete pairs of them) yet."""

    samples: int
    needed: int

    @property
    def detail(self) -> str:
        return f"{self.samples} of {self.needed} mark samples"


@dataclass(frozen=True)
class RiskWeights:
    """A risk-based target's weights now, and how they were had."""

    weights: FloatArray
    """Per asset of the target, in its order: what the world is brought to."""
    before_overlays: FloatArray
    """The method's weights before the volatility target and drawdown guard scaled them."""
    samples: int
    first_at: int | None
    last_at: int | None
    drawdown: float | None
    exposure: float | None
    guard: DrawdownState


def holdings_drawdown(samples: Sequence[Sample], qty: Mapping[str, float]) -> float:
    """The drawdown of ``qty`` (by asset label) valued at each sample's marks: 1 - its value at
    the last sample / its highest value over the samples. Samples that lack a mark of a held
    asset are left out; 0 when nothing is held or a value is not positive (a net short world
    has no drawdown in this sense)."""
    held = {k: q for k, q in qty.items() if q != 0}
    if not held:
        return 0.0
    values = [
        sum(q * marks[k] for k, q in held.items())
        for _, marks in samples
        if all(k in marks for k in held)
    ]
    if not values or min(values) <= 0:
        return 0.0
    return float(min(max(drawdown(values)[-1], 0.0), 1.0))


def risk_weights(
    target: RiskTarget,
    samples: Sequence[Sample],
    qty: Mapping[str, float],
    guard: DrawdownState,
) -> RiskWeights | Estimating:
    """The target's weights on ``samples`` (oldest first) for a world holding ``qty`` (by
    label), with the drawdown guard's state before; ``Estimating`` until enough samples.

    Raises ``PolicyError`` when the policy function refuses the estimate (a riskless mix for
    risk parity, say)."""
    labels = [f"{a.venue or ''}:{a.symbol}" for a in target.assets]
    need = returns_needed(target)
    returns = asset_returns(samples, labels)
    if returns.shape[0] < need:
        return Estimating(len(samples), need + 1)
    returns = returns[returns.shape[0] - need :] if need else returns[:0]
    rule = allocator(target)
    weights = _clean(rule.target(returns))
    before = weights
    if isinstance(rule, VolatilityTarget):
        inner = rule.inner
        k = inner.lookback
        before = _clean(inner.target(returns[returns.shape[0] - k :] if k else returns[:0]))
    dd = exposure = None
    guard_after = guard
    if target.drawdown_guard is not None:
        protection = DrawdownProtection(target.drawdown_guard.limit, target.drawdown_guard.floor)
        window = samples[len(samples) - (need + 1) :]
        dd = holdings_drawdown(window, qty)
        guard_after, exposure = protection.step(guard, dd)
        weights = _clean(weights * exposure)
    used = samples[len(samples) - (need + 1) :] if need else samples[-1:]
    return RiskWeights(
        weights=weights,
        before_overlays=before,
        samples=len(used),
        first_at=used[0][0] if used else None,
        last_at=used[-1][0] if used else None,
        drawdown=dd,
        exposure=exposure,
        guard=guard_after,
    )


def _clean(weights: FloatArray) -> FloatArray:
    """Long-only weights summing to at most 1, as a weights target takes them: rounding
    noise (a weight of -1e-17, a sum of 1 + 1e-16) is taken out; a weight that is not a
    number is refused, as the backtester refuses it."""
    raw = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(raw).all():
        raise PolicyError(f"weights: the policy function gave {raw.tolist()}")
    w = np.clip(raw, 0.0, 1.0)
    total = float(w.sum())
    out: FloatArray = w / total if total > 1.0 else w
    return out


__all__ = [
    "Estimating",
    "RiskWeights",
    "allocator",
    "holdings_drawdown",
    "returns_needed",
    "risk_weights",
    "samples_needed",
]
