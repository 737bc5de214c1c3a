"""Volatility regimes: realized volatility picks how often to look and how wide the band is.

The source document's table: low, medium, high and extreme volatility at 15, 25, 40 and 60 %
annualized, rebalanced monthly, bi-weekly, weekly and daily. It does not say whether a
threshold is where a regime starts or ends. Here a regime starts at its threshold:
volatility >= 60 % is extreme, >= 40 % high, >= 25 % medium, anything lower low (so 15 % is
low's nominal level, not a boundary). The bands are not in the document; the defaults
widen with volatility (5, 7, 10, 15 % relative) because weights drift faster when prices
move more, and were fixed before any backtest was run.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from .calendar import Cadence, cadence, period_starts
from .errors import PolicyError
from .inputs import FloatArray, finite_vector
from .triggers import BandMode, Market, Schedule

REGIMES = ("low", "medium", "high", "extreme")


@dataclass(frozen=True)
class Regime:
    """One volatility regime: where it starts, how often to look, how wide the band is."""

    name: str
    from_volatility: float
    cadence: Cadence
    band: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "cadence", cadence(self.cadence))
        for what, v in (("from_volatility", self.from_volatility), ("band", self.band)):
            if not math.isfinite(v) or v < 0:
                raise PolicyError(f"regime {self.name}: {what} {v!r} is not a number >= 0")


DEFAULT_REGIMES: tuple[Regime, ...] = (
    Regime("low", 0.15, "monthly", 0.05),
    Regime("medium", 0.25, "biweekly", 0.07),
    Regime("high", 0.40, "weekly", 0.10),
    Regime("extreme", 0.60, "daily", 0.15),
)


def realized_volatility(
    returns: npt.ArrayLike, window: int, periods_per_year: float = 252.0
) -> FloatArray:
    """Annualized volatility of simple returns over a trailing window, for every position.

    Position ``t`` uses returns ``t - window + 1 .. t`` (sample standard deviation); before a
    full window it uses what there is, and is NaN with fewer than two returns.
    """
    r = finite_vector("returns", returns)
    if window < 2:
        raise PolicyError(f"window: {window} returns are too few for a volatility (need >= 2)")
    n = r.shape[0]
    out = np.full(n, np.nan)
    if n >= window:
        out[window - 1 :] = sliding_window_view(r, window).std(axis=1, ddof=1)
    for t in range(1, min(window - 1, n)):  # the warm-up: an expanding window
        out[t] = r[: t + 1].std(ddof=1)
    return out * math.sqrt(periods_per_year)


@dataclass(frozen=True)
class VolatilityRegimes:
    """The regime table and how volatility is measured.

    Volatility is that of a basket of the assets (``basket`` weights; equal weights when
    None): the market the policy trades, not the portfolio's own path. ``window`` is in
    observations; a date with too little history counts as ``regimes[0]``.
    """

    regimes: tuple[Regime, ...] = DEFAULT_REGIMES
    window: int = 63
    periods_per_year: float = 252.0
    mode: BandMode = "relative"
    basket: Sequence[float] | None = field(default=None)
    name: str = "volatility regime"

    def __post_init__(self) -> None:
        if not self.regimes:
            raise PolicyError("regimes: at least one regime is needed")
        starts = [r.from_volatility for r in self.regimes]
        if any(b <= a for a, b in itertools.pairwise(starts)):
            raise PolicyError(f"regimes: thresholds must increase, got {starts}")
        if self.window < 2:
            raise PolicyError(f"window: {self.window} is too short (need >= 2)")

    @property
    def label(self) -> str:
        return self.name

    def classify(self, volatility: float) -> Regime:
        """The regime of one annualized volatility (NaN: the first regime)."""
        return self.regimes[int(self.classify_many(np.array([volatility]))[0])]

    def classify_many(self, volatility: FloatArray) -> npt.NDArray[np.int64]:
        """Regime index per volatility: the last regime whose threshold it reaches."""
        starts = np.array([r.from_volatility for r in self.regimes[1:]])
        v = np.where(np.isnan(volatility), -np.inf, volatility)
        return np.searchsorted(starts, v, side="right").astype(np.int64)

    def current(self, returns: npt.ArrayLike) -> Regime:
        """Live: the regime given the market's recent simple returns, oldest first."""
        r = finite_vector("returns", returns)
        if r.shape[0] < 2:
            return self.regimes[0]
        tail = r[-self.window :]
        return self.classify(float(tail.std(ddof=1)) * math.sqrt(self.periods_per_year))

    def basket_returns(self, market: Market) -> FloatArray:
        n = len(market.assets)
        if self.basket is None:
            w = np.full(n, 1.0 / n)
        else:
            w = finite_vector("basket", self.basket)
            if w.shape[0] != n:
                raise PolicyError(f"basket: {w.shape[0]} weights for {n} assets")
        out: FloatArray = market.returns @ w
        return out

    def schedule(self, market: Market) -> Schedule:
        """Each date's regime from volatility up to and including that date; look on the
        first date of each period of that regime's cadence."""
        r = self.basket_returns(market)
        vol = realized_volatility(r[1:], self.window, self.periods_per_year)
        vol = np.concatenate([[np.nan], vol])  # date 0 has no return
        index = self.classify_many(vol)
        by_cadence = {
            c: period_starts(market.dates, c) for c in {reg.cadence for reg in self.regimes}
        }
        checks = np.zeros(len(market.dates), np.bool_)
        bands = np.empty(len(market.dates))
        for k, reg in enumerate(self.regimes):
            at = index == k
            checks[at] = by_cadence[reg.cadence][at]
            bands[at] = reg.band
        n_assets = len(market.assets)
        return Schedule(
            checks=checks,
            thresholds=np.broadcast_to(bands[:, None], (bands.shape[0], n_assets)),
            mode=self.mode,
            labels=tuple(r.name for r in self.regimes),
            label_index=index,
        )
