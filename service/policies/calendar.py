"""Calendar cadences as integer period numbers, so "is a new period due" is one comparison.

A date starts a period when its period number differs from the previous observed date's: the
first trading day of each week, fortnight, month or quarter, whatever the holidays. Dates are
numpy ``datetime64[D]`` (or anything that converts to it: ``datetime.date``, ISO strings).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from .errors import PolicyError

Cadence = Literal["daily", "weekly", "biweekly", "monthly", "quarterly", "yearly"]
CADENCES: tuple[Cadence, ...] = get_args(Cadence)

DateLike = dt.date | np.datetime64 | str
DateArray = npt.NDArray[np.datetime64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_MONDAY_OFFSET = 4
"""1970-01-01 was a Thursday: day 4 is the first Monday, so weeks run Monday to Sunday."""


def cadence(name: str) -> Cadence:
    """Check a cadence name (``bi-weekly`` is accepted for ``biweekly``)."""
    normal = name.strip().lower().replace("-", "").replace("_", "")
    for c in CADENCES:
        if c == normal:
            return c
    raise PolicyError(f"cadence: unknown cadence {name!r}; expected one of {', '.join(CADENCES)}")


def as_dates(values: npt.ArrayLike | DateLike) -> DateArray:
    """Dates as ``datetime64[D]`` (a scalar becomes a one-element array)."""
    try:
        arr = np.atleast_1d(np.asarray(values, dtype="datetime64[D]"))
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"dates: cannot read {values!r} as dates ({exc})") from None
    if np.isnat(arr).any():
        raise PolicyError("dates: a date is missing (NaT)")
    return arr


def period_numbers(dates: npt.ArrayLike, every: Cadence) -> IntArray:
    """Each date's period number under a cadence; equal numbers share a period."""
    days = as_dates(dates).astype(np.int64)
    if every == "daily":
        return days
    if every in ("weekly", "biweekly"):
        weeks = (days - _MONDAY_OFFSET) // 7
        return weeks if every == "weekly" else weeks // 2
    months = as_dates(dates).astype("datetime64[M]").astype(np.int64)
    if every == "monthly":
        return months
    if every == "quarterly":
        return months // 3
    if every == "yearly":
        return months // 12
    raise PolicyError(f"cadence: unknown cadence {every!r}")


def period_starts(dates: npt.ArrayLike, every: Cadence) -> BoolArray:
    """True on the first observed date of each period; the first date always counts."""
    numbers = period_numbers(dates, every)
    out = np.ones(numbers.shape[0], np.bool_)
    out[1:] = numbers[1:] != numbers[:-1]
    return out


def due(last: DateLike | None, now: DateLike, every: Cadence) -> bool:
    """Whether a calendar rebalance is due at ``now`` when the last one was at ``last``."""
    today = as_dates(now)[0]
    if last is None:
        return True
    a, b = period_numbers(np.array([as_dates(last)[0], today]), every)
    if b < a:
        raise PolicyError(f"dates: now ({now}) is before the last rebalance ({last})")
    return bool(b != a)
