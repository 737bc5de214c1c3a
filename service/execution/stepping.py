"""What a key does next: nothing, give its plan up as expired, or the next order.

One order at a time per key, for the leg the target book says is due (a close before the
open that depends on it). The order is the residual between the leg's target and what the
venue holds (``next_order``), never a delta, so a restart or a re-delivered intent orders
nothing twice. A residual the venue cannot trade means the leg is reached; a leg whose
orders keep being rejected is given up after a bounded number of tries rather than retried
forever; a plan that expires before the key is reached is not traded any further.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..messages import DeltaIntent
from .residual import OrderRequest, VenueRules, next_order
from .targets import KeyTarget


@dataclass(frozen=True)
class Due:
    """The leg a key works on now; ``expired`` when its plan ran out of time first."""

    leg: DeltaIntent
    expired: bool


def due_leg(target: KeyTarget, now_ms: int) -> Due | None:
    """The key's leg to work on at ``now_ms``, or None when no leg can be worked on (all
    reached, or an open leg waits for its close leg). Asked before the venue's position,
    which only a due, live leg needs."""
    leg = target.active()
    if leg is None:
        return None
    return Due(leg, expired=leg.expires_at <= now_ms)


def expire(target: KeyTarget) -> None:
    """Count every leg of an expired plan's key as finished: the plan is not traded any
    further, and its intents' offsets may be committed."""
    for intent in target.legs.values():
        target.reached.add(intent.intent_id)


@dataclass(frozen=True)
class Reached:
    """Nothing tradable remains for the leg: it is done."""


@dataclass(frozen=True)
class GiveUp:
    """The leg's orders were rejected ``attempts`` times: it is done, unreached."""

    attempts: int


@dataclass(frozen=True)
class Place:
    """Send ``request``, the leg's order number ``attempt`` (from 0)."""

    request: OrderRequest
    attempt: int


Step = Reached | GiveUp | Place
"""What a due leg needs."""


def passed(leg: DeltaIntent, position: float) -> bool:
    """Whether ``leg`` is a slice before its leg's last one whose target the venue already
    holds or has gone past, in the leg's direction (after a restart, say): it is reached,
    never traded back to its intermediate target."""
    if leg.slice_index is None or leg.slice_count is None:
        return False
    if leg.slice_index >= leg.slice_count - 1:
        return False
    return position >= leg.target_qty if leg.delta_qty > 0 else position <= leg.target_qty


def next_step(
    leg: DeltaIntent,
    *,
    position: float,
    rules: VenueRules,
    attempts: int,
    max_retries: int,
) -> Step:
    """The step for ``leg`` given the venue's ``position`` and the orders already sent for
    it (``attempts``)."""
    if passed(leg, position):
        return Reached()
    request = next_order(target=leg.target_qty, position=position, mark=leg.mark, rules=rules)
    if request is None:
        return Reached()
    if attempts > max_retries:
        return GiveUp(attempts)
    return Place(request, attempts)
