"""A price table for backtests: dates by assets, validated once so the engine never checks.

Accepted from a pandas DataFrame (dates as index, one column per asset), a CSV file of the
same shape (first column the dates) or plain arrays. NaN, infinite or non-positive prices,
duplicated or unordered dates and duplicated assets are refused with the asset and the date.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..policies.calendar import DateArray, DateLike, as_dates
from ..policies.errors import PolicyError
from ..policies.inputs import FloatArray


@dataclass(frozen=True)
class PriceTable:
    """Close prices, one row per date (strictly increasing), one column per asset."""

    dates: DateArray
    assets: tuple[str, ...]
    prices: FloatArray

    def __post_init__(self) -> None:
        dates = as_dates(self.dates)
        prices = np.asarray(self.prices, dtype=np.float64)
        object.__setattr__(self, "dates", dates)
        object.__setattr__(self, "prices", prices)
        object.__setattr__(self, "assets", tuple(str(a) for a in self.assets))
        if prices.ndim != 2:
            raise PolicyError(f"prices: expected dates by assets, got shape {prices.shape}")
        n_dates, n_assets = prices.shape
        if n_assets < 1:
            raise PolicyError("prices: no assets")
        if n_dates < 2:
            raise PolicyError(f"prices: {n_dates} date(s); a backtest needs at least 2")
        if len(self.assets) != n_assets:
            raise PolicyError(f"prices: {len(self.assets)} asset names for {n_assets} columns")
        if len(set(self.assets)) != n_assets:
            dup = sorted({a for a in self.assets if self.assets.count(a) > 1})
            raise PolicyError(f"prices: duplicated asset(s) {', '.join(dup)}")
        if dates.shape[0] != n_dates:
            raise PolicyError(f"prices: {dates.shape[0]} dates for {n_dates} rows")
        steps = np.diff(dates.astype(np.int64))
        if np.any(steps <= 0):
            i = int(np.flatnonzero(steps <= 0)[0]) + 1
            raise PolicyError(
                f"prices: dates must be strictly increasing; {dates[i]} follows {dates[i - 1]}"
            )
        bad = ~np.isfinite(prices) | (prices <= 0)
        if bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            what = "missing (NaN)" if np.isnan(prices[i, j]) else f"{prices[i, j]}, not > 0"
            raise PolicyError(
                f"prices: {self.assets[j]} on {dates[i]} is {what}; fill or drop it first "
                f"({int(bad.sum())} bad value(s) in all)"
            )

    def __len__(self) -> int:
        return int(self.prices.shape[0])

    @cached_property
    def returns(self) -> FloatArray:
        """Simple returns per date; the first row is 0 (nothing is known before it)."""
        out = np.zeros_like(self.prices)
        out[1:] = self.prices[1:] / self.prices[:-1] - 1.0
        return out

    @classmethod
    def from_frame(cls, frame: Any) -> PriceTable:
        """From a pandas DataFrame: a date index, one column per asset."""
        try:
            dates = np.asarray(frame.index.to_numpy(), dtype="datetime64[D]")
            values = frame.to_numpy(dtype=np.float64)
            names = [str(c) for c in frame.columns]
        except (AttributeError, TypeError, ValueError) as exc:
            raise PolicyError(f"prices: not a table of dates by assets ({exc})") from None
        return cls(dates, tuple(names), values)

    @classmethod
    def read_csv(cls, path: str | Path) -> PriceTable:
        """From a CSV file: a header row, dates in the first column, one column per asset."""
        import pandas as pd  # only the backtester needs pandas; imported when used

        p = Path(path)
        if not p.is_file():
            raise PolicyError(f"{path}: no such file")
        try:
            frame = pd.read_csv(p, index_col=0)
            frame.index = pd.to_datetime(frame.index)
        except (ValueError, TypeError, pd.errors.ParserError) as exc:
            raise PolicyError(f"{path}: cannot read a price table ({exc})") from None
        non_numeric = [str(c) for c, t in frame.dtypes.items() if t.kind not in "fiu"]
        if non_numeric:
            raise PolicyError(f"{path}: column(s) {', '.join(non_numeric)} are not numbers")
        return cls.from_frame(frame)

    def index_of(self, date: DateLike, *, side: str = "left") -> int:
        """The position of the first date on or after ``date`` (``side="right"``: the last on
        or before it)."""
        d = as_dates(date)[0]
        if side == "left":
            return int(np.searchsorted(self.dates, d, "left"))
        return int(np.searchsorted(self.dates, d, "right")) - 1

    def select(self, assets: Sequence[str]) -> PriceTable:
        """Only these assets, in this order."""
        index = {a: i for i, a in enumerate(self.assets)}
        unknown = [a for a in assets if a not in index]
        if unknown:
            raise PolicyError(f"assets: unknown asset(s) {', '.join(unknown)}")
        cols = [index[a] for a in assets]
        return PriceTable(self.dates, tuple(assets), self.prices[:, cols])

    def until(self, end: DateLike | None) -> PriceTable:
        """The rows up to and including ``end``."""
        if end is None:
            return self
        stop = self.index_of(end, side="right") + 1
        if stop < 2:
            raise PolicyError(f"end: {end} leaves fewer than two dates")
        return PriceTable(self.dates[:stop], self.assets, self.prices[:stop])


def as_table(prices: PriceTable | Any) -> PriceTable:
    """A ``PriceTable`` as is, anything DataFrame-like converted."""
    return prices if isinstance(prices, PriceTable) else PriceTable.from_frame(prices)


def dates_between(
    dates: DateArray, start: DateLike | None, end: DateLike | None
) -> tuple[int, int]:
    """Positions ``[first, last]`` of the dates within ``start..end`` (both optional)."""
    first = 0 if start is None else int(np.searchsorted(dates, as_dates(start)[0], "left"))
    last = (
        len(dates) - 1
        if end is None
        else int(np.searchsorted(dates, as_dates(end)[0], "right")) - 1
    )
    if last - first < 1:
        raise PolicyError(
            f"period: {start or 'the first date'} to {end or 'the last date'} holds fewer "
            "than two dates of the table"
        )
    return first, last
