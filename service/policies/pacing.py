"""Spreading a large move out: pacing over several steps, slicing by notional.

Pacing splits one rebalance into ``steps`` moves, front-loaded (the first step is the
largest), so most of the drift is removed at once and the rest follows as the market absorbs
it. Slicing cuts one intent into child intents of at most ``max_notional`` each. Both keep
quantities in whole lots when a lot size is given, and both add up to exactly the move.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from ..planner.ids import hex_id
from ..planner.lots import is_whole_lots, lot_count, lot_fraction, lots_to_qty
from .errors import PolicyError
from .inputs import FloatArray, finite_vector


def front_loaded(steps: int, ratio: float | None = None) -> FloatArray:
    """Each step's share of a move: non-increasing, summing to 1.

    Linear by default (``steps, steps - 1, ..., 1`` over their sum: for 3 steps 1/2, 1/3,
    1/6); with ``ratio`` in (0, 1], geometric (each step ``ratio`` times the previous; 1 is
    even).
    """
    if steps < 1:
        raise PolicyError(f"steps: {steps} must be >= 1")
    if ratio is None:
        raw = np.arange(steps, 0, -1, dtype=np.float64)
    else:
        if not (math.isfinite(ratio) and 0 < ratio <= 1):
            raise PolicyError(f"ratio: {ratio} must be in (0, 1]")
        raw = ratio ** np.arange(steps, dtype=np.float64)
    out: FloatArray = raw / raw.sum()
    return out


def pace(
    current: npt.ArrayLike, target: npt.ArrayLike, steps: int, ratio: float | None = None
) -> FloatArray:
    """Intermediate targets (one row per step) from ``current`` to ``target``; the last row is
    ``target`` exactly. Works on weights or quantities alike."""
    c = finite_vector("current", current)
    t = finite_vector("target", target)
    if c.shape != t.shape:
        raise PolicyError(f"current: {c.shape[0]} entries but target has {t.shape[0]}")
    cum = np.cumsum(front_loaded(steps, ratio))
    out: FloatArray = c + np.outer(cum, t - c)
    out[-1] = t
    return out


def _lot_count(qty: float, lot: float) -> int:
    """``qty`` in lots, which it must be a whole number of (SPEC 3.2's tolerance)."""
    num, scale = lot_fraction(lot)
    if not is_whole_lots(qty, num, scale):
        raise PolicyError(f"qty: {qty} is not a whole number of lots of {lot}")
    return lot_count(qty, num, scale)


def _lots_to_qty(counts: npt.NDArray[np.int64], lot: float, sign: float) -> list[float]:
    num, scale = lot_fraction(lot)
    return [lots_to_qty(k, num, scale, sign) for k in counts.tolist()]


def _spread_lots(total: int, shares: FloatArray) -> npt.NDArray[np.int64]:
    """Whole lots per step by largest remainders, then ordered largest first."""
    exact = total * shares
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return np.sort(counts)[::-1].copy()


def pace_quantity(
    delta: float, steps: int, lot: float | None = None, ratio: float | None = None
) -> list[float]:
    """One key's delta as per-step deltas, front-loaded, summing to ``delta``.

    With a lot size, every step is a whole number of lots (the delta must be one) and a
    step may be 0 when there are fewer lots than steps.
    """
    if not math.isfinite(delta):
        raise PolicyError(f"delta: {delta} is not finite")
    shares = front_loaded(steps, ratio)
    if lot is None:
        out = (delta * shares).tolist()
        out[-1] = delta - math.fsum(out[:-1])
        return [x + 0.0 for x in out]
    if not (math.isfinite(lot) and lot > 0):
        raise PolicyError(f"lot: {lot} must be > 0")
    counts = _spread_lots(_lot_count(delta, lot), shares)
    return _lots_to_qty(counts, lot, math.copysign(1.0, delta))


NOTIONAL_SLACK = 1e-9
"""Without a lot size, a slice may exceed ``max_notional`` by this relative amount (float
rounding), no more; with one, by what SPEC 3.2's lot rule tolerates (at most 1e-6 of a lot)."""

MAX_SLICES = 10_000
"""More slices than this is a configuration mistake (a cap far too small for the order)."""


def slice_quantity(
    qty: float, mark: float, max_notional: float, lot: float | None = None
) -> list[float]:
    """Cut ``qty`` into as few pieces as keep each at most ``max_notional`` at ``mark``,
    as even as possible (larger ones first), summing to ``qty``; whole lots with a lot."""
    for name, v in (("qty", qty), ("mark", mark), ("max_notional", max_notional)):
        if not math.isfinite(v):
            raise PolicyError(f"{name}: {v} is not finite")
    if mark <= 0 or max_notional <= 0:
        raise PolicyError("mark and max_notional must be > 0")
    if qty == 0:
        return []
    sign = math.copysign(1.0, qty)
    needed = abs(qty) * mark / max_notional
    if needed > MAX_SLICES:
        raise PolicyError(
            f"max_notional: {max_notional:g} would cut a {abs(qty) * mark:g} order into "
            f"more than {MAX_SLICES} slices"
        )
    if lot is None:
        pieces = max(1, math.ceil(needed * (1 - NOTIONAL_SLACK)))
        size = abs(qty) / pieces
        out = [sign * size] * pieces
        out[-1] = qty - math.fsum(out[:-1])
        return out
    if not (math.isfinite(lot) and lot > 0):
        raise PolicyError(f"lot: {lot} must be > 0")
    num, scale = lot_fraction(lot)
    per_slice = lot_count(max_notional / mark, num, scale)
    if per_slice < 1:
        raise PolicyError(
            f"max_notional: one lot of {lot} at {mark} is worth {lot * mark:g}, "
            f"more than the {max_notional:g} allowed per slice"
        )
    total = _lot_count(qty, lot)
    pieces = max(1, math.ceil(total / per_slice))
    counts = np.full(pieces, total // pieces, np.int64)
    counts[: total % pieces] += 1
    return _lots_to_qty(counts, lot, sign)


def _slice_id(parent: str, index: int) -> str:
    return hex_id(orjson.dumps(["slice/v1", parent, index]))


def slice_intent(
    intent: Mapping[str, Any], max_notional: float, lot: float | None = None
) -> list[dict[str, Any]]:
    """A delta intent as child intents of at most ``max_notional`` each.

    Children walk from the parent's ``current_qty`` to its ``target_qty``; each depends on the
    one before (the first on whatever the parent depended on), keeps the parent's leg and
    reduce-only flag (a piece of a move that does not cross zero does not cross it either),
    and carries the parent's per-strategy breakdown scaled to its share. Ids are derived from
    the parent's, so re-slicing the same intent gives the same ids. An intent that fits is
    returned unchanged.
    """
    delta = float(intent["delta_qty"])
    mark = float(intent["mark"])
    pieces = slice_quantity(delta, mark, max_notional, lot)
    if len(pieces) <= 1:
        return [dict(intent)]
    out: list[dict[str, Any]] = []
    current = float(intent["current_qty"])
    depends_on = intent.get("depends_on")
    breakdown = intent.get("strategy_breakdown") or []
    for k, piece in enumerate(pieces):
        last = k == len(pieces) - 1
        target = float(intent["target_qty"]) if last else round(current + piece, 12) + 0.0
        child = dict(intent)
        child_id = _slice_id(str(intent["intent_id"]), k)
        child.update(
            intent_id=child_id,
            current_qty=current,
            target_qty=target,
            delta_qty=piece,
            notional=round(abs(piece) * mark, 8) + 0.0,
            depends_on=depends_on,
            strategy_breakdown=[
                {**b, "delta_qty": float(b["delta_qty"]) * piece / delta} for b in breakdown
            ],
        )
        out.append(child)
        current, depends_on = target, child_id
    return out


def slice_legs(
    legs: list[dict[str, Any]], mark: float, max_notional: float, lot: float | None = None
) -> list[dict[str, Any]]:
    """A traded key's legs (plan record ``legs``) with each leg above ``max_notional`` cut
    into slices (``slice_quantity``), in order.

    A slice walks from the end of the one before it; the first depends on what the leg
    depended on, each next one on the slice before, and a leg that depended on a sliced leg
    (an open after its close) depends on that leg's last slice. Slices carry
    ``slice_index``/``slice_count`` and ids derived from the leg's, so slicing the same plan
    again gives the same slices. A leg that fits, or that cannot be cut as asked (one lot is
    worth more than ``max_notional``, or it is not a whole number of lots), stays whole.
    """
    out: list[dict[str, Any]] = []
    last_slice: dict[str, str] = {}
    for leg in legs:
        depends_on = leg["depends_on"]
        depends_on = last_slice.get(depends_on, depends_on) if depends_on else depends_on
        try:
            pieces = slice_quantity(float(leg["delta_qty"]), mark, max_notional, lot)
        except PolicyError:
            pieces = []
        if len(pieces) <= 1:
            out.append({**leg, "depends_on": depends_on})
            continue
        current = float(leg["current_qty"])
        for k, piece in enumerate(pieces):
            last = k == len(pieces) - 1
            target = float(leg["target_qty"]) if last else round(current + piece, 12) + 0.0
            child_id = _slice_id(str(leg["intent_id"]), k)
            out.append(
                {
                    **leg,
                    "intent_id": child_id,
                    "current_qty": current,
                    "target_qty": target,
                    "delta_qty": piece + 0.0,
                    "depends_on": depends_on,
                    "slice_index": k,
                    "slice_count": len(pieces),
                }
            )
            current, depends_on = target, child_id
        last_slice[str(leg["intent_id"])] = str(depends_on)
    return out
