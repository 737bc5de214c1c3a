"""Netting, thresholds, lot rounding and flips, vectorised over keys (SPEC 3.2-3.3), and the
reduce-only trading state's holding of growth (SPEC 7).

Rows are grouped by an integer key code (``(world, venue, symbol)`` for a world's plan,
``(venue, symbol)`` for the global view); every per-key quantity is a ``bincount`` over the
group index. Nothing here loops over rows or keys in Python.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from .lots import round_to_lots
from .positions import FloatArray, IntArray

BoolArray = npt.NDArray[np.bool_]

TRADE, UNCHANGED, MISSING_MARK, BELOW_MIN_NOTIONAL, ROUNDED_TO_ZERO, HELD, COSTLY = range(7)
REASONS = {
    COSTLY: "cost_exceeds_benefit",
    UNCHANGED: "unchanged",
    MISSING_MARK: "missing_mark",
    BELOW_MIN_NOTIONAL: "below_min_notional",
    ROUNDED_TO_ZERO: "rounded_to_zero",
    HELD: "held",
}

FLAT_TOLERANCE = 1e-12
"""A target within this fraction of a key's gross quantity is flat and closed exactly."""

DENSE_SLACK = 1 << 18
"""Key spaces up to 16x the rows plus this are grouped by direct indexing instead of sorting."""

MinimumLookup = Callable[[IntArray], FloatArray]
"""Maps key codes to the minimum notional of their venue (0 where it has none)."""

LotLookup = Callable[[IntArray], tuple[FloatArray, FloatArray]]
"""Maps key codes to a lot size as an exact decimal fraction ``numerator / scale``
(``numerator`` NaN where no lot size is known)."""


@dataclass(frozen=True)
class NettedKeys:
    """Per-key results, sorted by key code, plus the per-strategy breakdown.

    The breakdown is parallel arrays ``pair_*``, sorted by key index then strategy code; it is
    empty when it was not asked for.

    ``delta``/``target`` are what gets executed: rounded, closed exactly where flat. For a flip,
    ``target`` is the opening side's target (the close to zero is implied).
    """

    codes: IntArray
    current: FloatArray
    target_unrounded: FloatArray
    delta_unrounded: FloatArray
    mark: FloatArray
    delta: FloatArray
    target: FloatArray
    status: npt.NDArray[np.uint8]
    flip: BoolArray
    reduce_only: BoolArray
    pair_key: IntArray
    pair_strategy: IntArray
    pair_delta: FloatArray

    def __len__(self) -> int:
        return int(self.codes.shape[0])


def group(codes: IntArray, space: int) -> tuple[IntArray, IntArray]:
    """Sorted distinct codes and each row's index into them."""
    n = codes.shape[0]
    if space <= 16 * n + DENSE_SLACK:
        present = np.zeros(space, np.bool_)
        present[codes] = True
        distinct = np.flatnonzero(present)
        index = np.empty(space, np.int64)
        index[distinct] = np.arange(distinct.shape[0], dtype=np.int64)
        return distinct.astype(np.int64, copy=False), index[codes]
    distinct, inverse = np.unique(codes, return_inverse=True)
    return distinct, inverse.astype(np.int64, copy=False)


def exact_sums(index: IntArray, values: FloatArray, size: int) -> FloatArray:
    """Per-group sums that do not depend on row order.

    Each value is split into a part on a common power-of-two grid, whose sums are exact, and a
    remainder below half a grid step; so permuting rows cannot move a sum by even one ulp in any
    realistic case, and re-planning permuted input yields the same bytes.
    """
    if values.shape[0] == 0:
        return np.zeros(size)
    total = float(np.abs(values).sum())
    if total == 0.0 or not math.isfinite(total):
        return cast(FloatArray, np.bincount(index, values, size))
    step = math.ldexp(1.0, math.frexp(total)[1] - 52)
    if step == 0.0:  # subnormal sums: the grid underflows, and such sums are exact anyway
        return cast(FloatArray, np.bincount(index, values, size))
    high = np.round(values / step) * step
    sums = np.bincount(index, high, size) + np.bincount(index, values - high, size)
    return cast(FloatArray, sums)


def latest_mark(index: IntArray, size: int, mark: FloatArray, recency: IntArray) -> FloatArray:
    """The mark of each key's most recent row that has one (NaN where none has).

    Most recent is the highest ``recency``, then the later row: one scatter-max over the
    composite ``recency << 32 | row``.
    """
    out = np.full(size, np.nan)
    rows = np.flatnonzero(mark > 0)
    if rows.shape[0] == 0:
        return out
    rec = recency[rows]
    low, high = int(rec.min()), int(rec.max())
    if high - low >= 1 << 30:
        rec, low = np.unique(rec, return_inverse=True)[1].astype(np.int64), 0
    composite = ((rec - low) << 32) | rows
    best = np.full(size, -1, np.int64)
    np.maximum.at(best, index[rows], composite)
    found = best >= 0
    out[found] = mark[best[found] & 0xFFFFFFFF]
    return out


@dataclass(frozen=True)
class KeyGrouping:
    """How rows net into keys, and what the keys hold now: the half of netting that does not
    depend on targets. It is fixed for a position table, so planners keep it on the table
    (``PositionTable.memo``) and plan after plan only the targets are netted."""

    codes: IntArray
    index: IntArray
    current_raw: FloatArray
    gross: FloatArray
    mark: FloatArray
    pair_codes: IntArray | None
    pair_index: IntArray | None

    @classmethod
    def of(
        cls,
        key_code: IntArray,
        space: int,
        slot: IntArray | None,
        slots: int,
        qty: FloatArray,
        mark: FloatArray,
        recency: IntArray,
    ) -> KeyGrouping:
        codes, index = group(key_code, space)
        size = codes.shape[0]
        pair_codes = pair_index = None
        if slot is not None:
            pair_codes, pair_index = group(index * slots + slot, size * slots)
        grouping = cls(
            codes=codes,
            index=index,
            current_raw=exact_sums(index, qty, size),
            gross=cast(FloatArray, np.bincount(index, np.abs(qty), size)),
            mark=latest_mark(index, size, mark, recency),
            pair_codes=pair_codes,
            pair_index=pair_index,
        )
        for array in vars(grouping).values():  # shared by every plan on the table
            if array is not None:
                array.flags.writeable = False
        return grouping


def net(
    key_code: IntArray,
    space: int,
    strategy: IntArray,
    slot: IntArray | None,
    slots: int,
    qty: FloatArray,
    target_qty: FloatArray,
    mark: FloatArray,
    recency: IntArray,
    *,
    lots: LotLookup,
    min_trade_notional: float,
    qty_decimals: int,
    grouping: KeyGrouping | None = None,
    venue_minimum: MinimumLookup | None = None,
) -> NettedKeys:
    """Net rows into keys and decide, per key, the executed delta or why there is none.

    ``slot`` numbers the strategies that can meet on one key (``0 <= slot < slots``); the
    per-strategy breakdown groups rows by ``(key, slot)``. ``slot=None`` skips the breakdown.
    ``grouping``, when given, is ``KeyGrouping.of`` these rows (kept from an earlier plan).
    ``venue_minimum``, when given, maps key codes to their venue's minimum notional: a key's
    minimum is the higher of it and ``min_trade_notional``.
    """
    if grouping is None:
        grouping = KeyGrouping.of(key_code, space, slot, slots, qty, mark, recency)
    codes, index = grouping.codes, grouping.index
    minimum: float | FloatArray = min_trade_notional
    if venue_minimum is not None:
        minimum = np.maximum(venue_minimum(codes), min_trade_notional)
    size = codes.shape[0]

    def q(x: FloatArray) -> FloatArray:
        return np.round(x, qty_decimals) + 0.0  # + 0.0 turns -0.0 into 0.0

    current_raw = grouping.current_raw
    target_raw = exact_sums(index, target_qty, size)
    gross = grouping.gross
    delta_raw = target_raw - current_raw
    key_mark = grouping.mark
    current = q(current_raw)

    flat = np.abs(target_raw) <= FLAT_TOLERANCE * gross
    status = np.full(size, TRADE, np.uint8)
    unchanged = (delta_raw == 0) | (flat & (current == 0))
    status[unchanged] = UNCHANGED
    missing = ~unchanged & ~(key_mark > 0)
    status[missing] = MISSING_MARK
    with np.errstate(invalid="ignore"):
        small = (status == TRADE) & (np.abs(delta_raw) * key_mark < minimum)
    status[small] = BELOW_MIN_NOTIONAL
    live = status == TRADE
    flat &= live
    flip = live & ~flat & (current * target_raw < 0)

    numerator, scale = lots(codes)
    has_lot = np.isfinite(numerator)
    to_round = np.where(flip, target_raw, delta_raw) if flip.any() else delta_raw
    if has_lot.all():
        rounded = round_to_lots(to_round, numerator, scale)
    elif not has_lot.any():
        rounded = q(to_round)
    else:
        rounded = q(to_round)
        rounded[has_lot] = round_to_lots(to_round[has_lot], numerator[has_lot], scale[has_lot])

    target = q(current + rounded)
    delta = rounded
    if flip.any():  # the opening side is what was rounded: target first, then the delta
        target[flip] = rounded[flip]
        delta = rounded.copy()
        delta[flip] = q(rounded[flip] - current[flip])
    # A flip whose opening side rounds away, or is too small to trade, is a plain close.
    with np.errstate(invalid="ignore"):
        open_too_small = flip & (np.abs(rounded) * key_mark < minimum)
    close = flat | (flip & ((rounded == 0) | open_too_small))
    flip &= ~close
    if close.any():
        target = np.where(close, 0.0, target)
        delta = np.where(close, -current + 0.0, delta)  # current is already quantised

    adjusting = live & ~close & ~flip
    status[adjusting & (delta == 0)] = ROUNDED_TO_ZERO
    with np.errstate(invalid="ignore"):
        post_small = adjusting & (delta != 0) & (np.abs(delta) * key_mark < minimum)
    status[post_small] = BELOW_MIN_NOTIONAL
    traded = status == TRADE
    delta = np.where(traded, delta, 0.0)
    target = np.where(traded, target, current)
    flip &= traded
    reduce_only = (
        traded & (current != 0) & (target * current >= 0) & (np.abs(target) < np.abs(current))
    )

    pair_codes, pair_index = grouping.pair_codes, grouping.pair_index
    if pair_codes is None or pair_index is None:
        pair_key = pair_strategy = np.zeros(0, np.int64)
        pair_delta = np.zeros(0)
    else:
        pair_key = pair_codes // max(slots, 1)
        pair_strategy = np.zeros(pair_codes.shape[0], np.int64)
        pair_strategy[pair_index] = strategy
        pair_delta = q(exact_sums(pair_index, target_qty - qty, pair_codes.shape[0]))
    return NettedKeys(
        codes=codes,
        current=current,
        target_unrounded=q(target_raw),
        delta_unrounded=q(delta_raw),
        mark=key_mark,
        delta=delta,
        target=target,
        status=status,
        flip=flip,
        reduce_only=reduce_only,
        pair_key=pair_key,
        pair_strategy=pair_strategy,
        pair_delta=pair_delta,
    )


def hold_growth(keys: NettedKeys, restricted: BoolArray) -> NettedKeys:
    """The keys with the ``restricted`` ones reduce-only (a world in the ``reduce-only``
    trading state, SPEC 7): of what they trade, only what shrinks exposure goes.

    A traded key that shrinks its position without crossing zero is kept as it is; a flip
    becomes a plain close to zero (``delta = -current``, reduce-only, not a flip); a key that
    opens or grows its position is not traded: ``HELD``, its target its current position.
    Unrounded deltas and breakdowns stay as planned: they are what was asked.
    """
    traded = restricted & (keys.status == TRADE)
    flip = traded & keys.flip
    grows = traded & ~keys.flip & ~keys.reduce_only
    if not (flip.any() or grows.any()):
        return keys
    status = keys.status.copy()
    status[grows] = HELD
    target = np.where(flip, 0.0, keys.target)
    delta = np.where(flip, -keys.current + 0.0, keys.delta)  # current is already quantised
    target = np.where(grows, keys.current, target)
    delta = np.where(grows, 0.0, delta)
    return dataclasses.replace(
        keys,
        status=status,
        target=target,
        delta=delta,
        flip=keys.flip & ~flip,
        reduce_only=keys.reduce_only | flip,
    )
