"""Lot rounding (SPEC 3.2): the one rule for every place that rounds a quantity to lots.

Round toward zero to a whole number of lots. A lot count within ``LOT_TOLERANCE`` of the next
whole number away from zero (relative to the count, and never more than ``MAX_LOT_EXCESS`` of a
lot) counts as that number, so 0.3 / 0.1 is 3 lots, not 2: the tolerance absorbs float error
only, and a rounded quantity never exceeds the unrounded one in magnitude by more than
``MAX_LOT_EXCESS`` of a lot, however many lots it holds.

A lot is an exact decimal fraction ``numerator / scale`` (``lot_fraction``), and
``k`` lots are the float ``k * numerator / scale``: the nearest float to the decimal, so 333
lots of 0.001 are 0.333. The rule is applied to those emitted floats: ``k`` lots are taken when
they exceed ``|x|`` by at most the tolerance (``slack`` lots) and ``k + 1`` lots would not. The
quotient ``count = |x| * scale / numerator`` is only an estimate of the count (at 1e12 lots its
float error is about 1e-4 of a lot, far above the cap), so ``floor(count + slack)`` is a
candidate; it is the answer unless ``count + slack`` lies within ``SETTLE_MARGIN`` (relative)
of a whole number, and there the candidate is settled by comparing the emitted floats. The
margin, 64 times the unit roundoff, is over ten times the error of the estimate and of the
comparison, so the shortcut never changes the answer; it only spares the comparison for the
keys far from a whole number. The vectorised and the scalar form make the same float operations
and take the same branches, so they agree exactly. (Beyond 2**53 lots, where a count has no
float, the rule holds to float precision only.)
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

LOT_TOLERANCE = 1e-9
"""Relative slack when counting lots, so that 0.3 / 0.1 is 3 lots and not 2..."""

MAX_LOT_EXCESS = 1e-6
"""...but never more than this fraction of a lot, however many lots there are."""

SETTLE_MARGIN = 2.0**-47
"""A candidate count this close (relative) to a whole number is settled on the emitted floats."""


@functools.lru_cache(maxsize=4096)
def lot_fraction(lot: float) -> tuple[float, float]:
    """A lot size as ``numerator / 10**k`` with an integral numerator, so that multiples of it
    come out as the exact nearest float of the decimal (333 x 0.001 is 0.333, not 0.33300..1)."""
    exponent = Decimal(repr(lot)).normalize().as_tuple().exponent
    if not isinstance(exponent, int) or exponent >= 0 or exponent < -15:
        return lot, 1.0
    scale = 10.0**-exponent
    return float(round(lot * scale)), scale


def whole_lots(x: FloatArray, numerator: FloatArray, scale: FloatArray) -> FloatArray:
    """The whole number of lots of ``numerator / scale`` in each ``|x|`` (as floats; NaN where
    the lot is NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        size = np.abs(x)
        count = size * scale
        count /= numerator
        at_least_one = np.maximum(count, 1.0)
        slack = at_least_one * LOT_TOLERANCE
        np.minimum(slack, MAX_LOT_EXCESS, out=slack)
        count += slack
        k = np.floor(count)
        count -= np.rint(count)
        np.abs(count, out=count)
        at_least_one *= SETTLE_MARGIN
        near = np.flatnonzero(count <= at_least_one)
        if near.shape[0]:
            n, d = numerator[near], scale[near]
            k[near] = _settle(k[near], size[near], n, d, slack[near] * n / d)
        return k


def _settle(
    k: FloatArray, size: FloatArray, numerator: FloatArray, scale: FloatArray, allowed: FloatArray
) -> FloatArray:
    k = np.where(k * numerator / scale - size > allowed, k - 1.0, k)
    return np.where((k + 1.0) * numerator / scale - size <= allowed, k + 1.0, k)


def round_to_lots(x: FloatArray, numerator: FloatArray, scale: FloatArray) -> FloatArray:
    """Each ``x`` rounded toward zero to whole lots of ``numerator / scale`` (exact decimals)."""
    out = whole_lots(x, numerator, scale)
    with np.errstate(invalid="ignore"):
        out *= numerator
        out /= scale
        np.copysign(out, x, out=out)
        out += 0.0  # no -0.0
    return out


def lot_count(qty: float, numerator: float, scale: float) -> int:
    """The whole number of lots of ``numerator / scale`` in ``|qty|`` (scalar ``whole_lots``)."""
    size = abs(qty)
    count = size * scale / numerator
    at_least_one = max(count, 1.0)
    slack = min(at_least_one * LOT_TOLERANCE, MAX_LOT_EXCESS)
    count += slack
    k = float(math.floor(count))
    if abs(count - round(count)) <= at_least_one * SETTLE_MARGIN:
        allowed = slack * numerator / scale
        if k * numerator / scale - size > allowed:
            k -= 1.0
        if (k + 1.0) * numerator / scale - size <= allowed:
            k += 1.0
    return int(k)


def lots_to_qty(count: int, numerator: float, scale: float, sign: float = 1.0) -> float:
    """``count`` lots of ``numerator / scale`` as a quantity with the sign of ``sign``."""
    return math.copysign(float(count) * numerator / scale, sign) + 0.0


def round_qty_to_lots(qty: float, numerator: float, scale: float) -> float:
    """``qty`` rounded toward zero to whole lots of ``numerator / scale`` (scalar
    ``round_to_lots``; equal to it bit for bit)."""
    if qty == 0:
        return 0.0
    return lots_to_qty(lot_count(qty, numerator, scale), numerator, scale, qty)


def is_whole_lots(qty: float, numerator: float, scale: float) -> bool:
    """Whether ``qty`` is a whole number of lots, up to the same tolerance: rounding it to lots
    moves it by at most ``LOT_TOLERANCE`` of the count and never more than ``MAX_LOT_EXCESS``
    of a lot, in either direction."""
    size = abs(qty)
    count = size * scale / numerator
    slack = min(max(count, 1.0) * LOT_TOLERANCE, MAX_LOT_EXCESS)
    return size - abs(round_qty_to_lots(qty, numerator, scale)) <= slack * numerator / scale
