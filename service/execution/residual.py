"""The next order for one key: always the residual ``target - position``, never a delta.

An execution node does not replay the deltas it was sent; it looks at what the venue holds
and orders what is still missing. Re-delivered intents, restarts and partial fills therefore
all converge on the target without ever trading twice. A reduction is sent reduce-only and
never crosses zero; crossing zero in one order happens only for an ``adjust`` leg on a venue
that allows it. A residual the venue cannot trade (less than a lot, or under its minimum
notional) means the leg is done, not retried forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..planner.lots import lot_fraction, round_qty_to_lots


@dataclass(frozen=True)
class VenueRules:
    """What a venue accepts for one symbol."""

    lot_size: float | None = None
    min_notional: float = 0.0
    direct_flip: bool = False
    qty_decimals: int = 12


@dataclass(frozen=True)
class OrderRequest:
    """A signed order quantity (positive buys) and whether it must only reduce."""

    qty: float
    reduce_only: bool


def to_lots(qty: float, rules: VenueRules) -> float:
    """``qty`` rounded toward zero to whole lots as SPEC 3.2 rounds (``planner.lots``: float
    noise just below a whole number of lots counts as it, never more than 1e-6 of a lot), or to
    ``qty_decimals`` without a lot."""
    if rules.lot_size is None:
        return round(qty, rules.qty_decimals) + 0.0
    return round_qty_to_lots(qty, *lot_fraction(rules.lot_size))


def next_order(
    *,
    target: float,
    position: float,
    mark: float,
    rules: VenueRules,
    exact_close: bool = True,
) -> OrderRequest | None:
    """The order that moves ``position`` toward ``target`` now, or None when the residual is
    not tradable (the leg is then reached, as far as this venue can take it).

    A close to zero (``target == 0``) sends the whole position, lot-aligned or not, when
    ``exact_close`` (venues close a position exactly with a reduce-only order).
    """
    residual = target - position
    if position != 0 and math.copysign(1.0, position) != math.copysign(1.0, target) and target:
        # crossing zero: all of it in one order only where the venue allows; otherwise close
        if not rules.direct_flip:
            return next_order(target=0.0, position=position, mark=mark, rules=rules)
        qty = to_lots(residual, rules)
        reduce_only = False
    elif target == 0 and exact_close:
        qty, reduce_only = -position, True
    else:
        qty = to_lots(residual, rules)
        reduce_only = abs(target) < abs(position)
    if qty == 0 or abs(qty) * mark < rules.min_notional:
        return None
    return OrderRequest(qty=qty, reduce_only=reduce_only)
