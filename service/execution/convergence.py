"""When a plan is reached, and which plan a strategy's snapshot may report as converged.

A plan is reached when every key it touches, at every venue, holds the plan's target: this
venue's keys by the target book (every leg reached), other venues' keys by the snapshots of
their world (within a relative tolerance, since another node's fills arrive as floats). A
key that follows a newer plan makes the older plan unreachable as planned, so it is never
reported. A strategy reports the newest plan reached among those it trades in; the
rebalancer waits on that report before it plans from the positions the plan left.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..messages import DeltaIntent
from .ledger import Owner
from .snapshot_view import HeldPosition, PositionsOf
from .targets import KeyId, TargetBook, plan_order

PlanOrder = tuple[int, str]
"""(created_at, plan_id): which of two plans is newer."""


@dataclass
class PlanInfo:
    """What a plan touches: its keys at every venue, and the strategies it moves."""

    order: PlanOrder
    keys: set[KeyId] = field(default_factory=set)
    owners: set[Owner] = field(default_factory=set)


def within_tolerance(held: float, target: float, tolerance: float) -> bool:
    """Whether ``held`` counts as ``target``: a gap relative to the target (absolute below
    1), so float noise from partial fills never keeps a plan from being reported."""
    return abs(held - target) <= tolerance * max(1.0, abs(target))


def held_at(key: KeyId, positions: Iterable[HeldPosition]) -> float:
    """What ``positions`` (those of the key's world) hold at the key's venue and symbol."""
    _, venue, symbol = key
    total = 0.0
    for p in positions:
        if p.venue == venue and p.symbol == symbol:
            total += p.qty
    return total


def reached_elsewhere(
    key: KeyId, target_qty: float, positions: Iterable[HeldPosition], tolerance: float
) -> bool:
    """Whether another venue's key holds its target, by the snapshots of its world: this node
    cannot see that venue, only what its node published."""
    return within_tolerance(held_at(key, positions), target_qty, tolerance)


class Plans:
    """The plans seen on intents, and the newest plan each strategy has been found to reach."""

    def __init__(self, venue: str, tolerance: float) -> None:
        self.venue = venue
        self.tolerance = tolerance
        self.known: dict[str, PlanInfo] = {}
        self.converged: dict[Owner, tuple[PlanOrder, str]] = {}

    def record(self, intent: DeltaIntent) -> None:
        """Note an accepted intent's key and the strategies of its breakdown (at any venue:
        convergence needs every key of the plan, not only this venue's)."""
        info = self.known.setdefault(intent.plan_id, PlanInfo(plan_order(intent)))
        info.keys.add((intent.world_id, intent.venue, intent.symbol))
        for b in intent.strategy_breakdown:
            world = b.world_id or intent.world_id
            if world is not None and b.delta_qty != 0:
                info.owners.add((world, b.strategy_id))

    def owners(self, plan_id: str) -> set[Owner]:
        """The strategies a plan moves (none for a plan not seen or already forgotten)."""
        info = self.known.get(plan_id)
        return set() if info is None else set(info.owners)

    def reached(self, plan_id: str, book: TargetBook, positions_of: PositionsOf) -> bool:
        """Whether every key of ``plan_id`` holds its target: this venue's by the book, other
        venues' by the snapshots; a key following another plan means never."""
        info = self.known[plan_id]
        for key in info.keys:
            target = book.keys.get(key)
            if target is None or target.plan_id != plan_id:
                return False  # superseded: this plan will never be reached as planned
            if key[1] == self.venue:
                if not target.done:
                    return False
            elif not target.complete or not reached_elsewhere(
                key, target.final.target_qty, positions_of(key[0]), self.tolerance
            ):
                return False
        return True

    def converged_for(
        self,
        owner: Owner,
        book: TargetBook,
        positions_of: PositionsOf,
        reported: str | None,
    ) -> str | None:
        """The plan ``owner``'s snapshot reports as converged: the newest plan this node finds
        reached, unless the topic's report (``reported``) is newer (another venue's node
        finished later) or names a plan this node never saw, which it keeps rather than
        regress to nothing."""
        mine = self.converged.get(owner)
        for plan_id, info in self.known.items():
            if owner not in info.owners or (mine is not None and info.order <= mine[0]):
                continue
            if self.reached(plan_id, book, positions_of):
                mine = (info.order, plan_id)
        if mine is not None:
            self.converged[owner] = mine
        if mine is None:
            return reported
        known = None if reported is None else self.known.get(reported)
        if known is not None and known.order > mine[0]:
            return reported
        return mine[1]

    def prune(self, book: TargetBook, now_ms: int) -> list[str]:
        """Forget what can no longer matter, so a long-running node stays small: ids of
        expired intents (a re-delivery is expired anyway), plans no key follows any more
        (superseded everywhere: never reached), and plans no newer than what every one of
        their owners has reached. Returns the plans forgotten."""
        book.forget_expired(now_ms)
        following = {t.plan_id for t in book.keys.values()}
        forgotten = []
        for plan_id, info in list(self.known.items()):
            reached = [self.converged.get(o) for o in info.owners]
            if plan_id not in following or (
                reached and all(r is not None and r[0] >= info.order for r in reached)
            ):
                del self.known[plan_id]
                forgotten.append(plan_id)
        return forgotten
