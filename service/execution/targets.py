"""What an execution node must reach: the newest plan's target per (world, venue, symbol).

Intents arrive at least once, in any order across partitions, and possibly after they
expire. The book keeps, per key, the legs of the newest plan it has seen (by the plan's
``created_at``, then ``plan_id``); an intent of an older plan, a repeated ``intent_id`` and
an expired intent change nothing and are counted by the caller. Legs are reached in order:
a ``close`` leg before the ``open`` leg that depends on it, and the slices of a sliced leg
(``slice_index``) one after the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ..messages import DeltaIntent

KeyId = tuple[str | None, str | None, str]
"""(world_id, venue, symbol); world_id is None in shared-account mode."""


class Offer(Enum):
    """What offering an intent to the book did."""

    ACCEPTED = "accepted"
    SUPERSEDED = "superseded"  # accepted, and it replaced an older plan's target for the key
    DUPLICATE = "duplicate"
    EXPIRED = "expired"
    STALE = "stale"  # its plan is older than the one the key already follows


def plan_order(intent: DeltaIntent) -> tuple[int, str]:
    """Which of two plans is newer: planned later, ties broken by id (deterministic)."""
    return (intent.created_at, intent.plan_id)


Slot = tuple[str, int]
"""Where a leg sits in its key's target: (leg, slice_index), 0 for an unsliced leg."""

LEG_ORDER = ("close", "adjust", "open")
"""The order a key's legs are worked on (an open after the close it depends on)."""


def slot(intent: DeltaIntent) -> Slot:
    return (intent.leg, intent.slice_index or 0)


@dataclass
class KeyTarget:
    """One key's target under one plan: its legs (each maybe in slices), and which are
    reached."""

    plan_id: str
    order: tuple[int, str]
    legs: dict[Slot, DeltaIntent] = field(default_factory=dict)
    reached: set[str] = field(default_factory=set)
    """intent_ids of legs reached (or given up as below the venue's minimums)."""

    def _slices(self, name: str) -> list[DeltaIntent | None]:
        """A leg's slices in order (one for an unsliced leg); None for one not arrived."""
        present = [i for (n, _), i in self.legs.items() if n == name]
        if not present:
            return []
        count = present[0].slice_count or 1
        return [self.legs.get((name, k)) for k in range(count)]

    def active(self) -> DeltaIntent | None:
        """The leg to work on now: an unreached close, else the unreached open/adjust whose
        dependency (if any) is reached; of a sliced leg, its first unreached slice once the
        slice before it is reached. None when every known leg is reached, or when a leg
        waits for one that has not arrived yet (an open for its close, a slice for the
        one before it)."""
        for name in LEG_ORDER:
            for leg in self._slices(name):
                if leg is None:
                    return None
                if leg.intent_id in self.reached:
                    continue
                if leg.depends_on is not None and leg.depends_on not in self.reached:
                    return None
                return leg
        return None

    @property
    def complete(self) -> bool:
        """Whether every slice of every known leg has arrived."""
        return all(leg is not None for name in LEG_ORDER for leg in self._slices(name))

    @property
    def final(self) -> DeltaIntent:
        """The leg whose target is the key's end state (open after close; a sliced leg's
        last slice that arrived)."""
        for name in ("open", "adjust", "close"):
            slices = [leg for leg in self._slices(name) if leg is not None]
            if slices:
                return slices[-1]
        raise LookupError("a key target without legs")

    @property
    def done(self) -> bool:
        return (
            bool(self.legs)
            and self.complete
            and all(i.intent_id in self.reached for i in self.legs.values())
        )


class TargetBook:
    """The newest target per key, with the intent ids already seen."""

    def __init__(self) -> None:
        self.keys: dict[KeyId, KeyTarget] = {}
        self._seen: dict[str, int] = {}  # intent_id -> expires_at (forgotten once expired)

    def offer(self, intent: DeltaIntent, now_ms: int) -> Offer:
        if intent.intent_id in self._seen:
            return Offer.DUPLICATE
        if intent.expires_at <= now_ms:
            return Offer.EXPIRED
        self._seen[intent.intent_id] = intent.expires_at
        key: KeyId = (intent.world_id, intent.venue, intent.symbol)
        order = plan_order(intent)
        held = self.keys.get(key)
        if held is not None and order < held.order:
            return Offer.STALE
        result = Offer.ACCEPTED
        if held is None or order > held.order:
            result = Offer.SUPERSEDED if held is not None and not held.done else Offer.ACCEPTED
            held = self.keys[key] = KeyTarget(plan_id=intent.plan_id, order=order)
        held.legs[slot(intent)] = intent
        return result

    def finished(self, intent: DeltaIntent, now_ms: int) -> bool:
        """Whether nothing more will be done for ``intent``: its key follows another plan (or
        none), its leg is reached, or it expired. Offsets are committed only past finished
        intents, so a restart re-reads exactly what was still in hand."""
        target = self.keys.get((intent.world_id, intent.venue, intent.symbol))
        return (
            target is None
            or target.plan_id != intent.plan_id
            or intent.intent_id in target.reached
            or intent.expires_at <= now_ms
        )

    def forget_expired(self, now_ms: int) -> None:
        """Drop remembered ids of expired intents (a re-delivery of one is expired anyway)."""
        self._seen = {i: e for i, e in self._seen.items() if e > now_ms}

    def plan_keys(self, plan_id: str) -> list[tuple[KeyId, KeyTarget]]:
        """The keys currently following ``plan_id``."""
        return [(k, t) for k, t in self.keys.items() if t.plan_id == plan_id]
