"""At start-up, the ledger adopts the snapshots; what the venue holds beyond them waits.

The snapshots say which strategy holds what at this venue, and the ledger starts from their
rows. The venue may hold more (or less): fills made just before a crash, before their
snapshot was published, or fills of an order no current plan explains. No strategy can be
told it owns such a gap by guessing, so it is reported and kept per (account, symbol) until
the next plan that trades that key: the gap is then shared by that plan's breakdown, as the
fills it stands for would have been.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..messages import DeltaIntent
from .ledger import Ledger, Owner, weights
from .snapshot_view import HeldSnapshot

GAP_TOLERANCE = 1e-9
"""A difference between the venue and the ledger smaller than this is float noise."""


@dataclass
class Adopted:
    """What the snapshots gave the ledger: the strategies holding something at this venue,
    and each snapshot's ``as_of`` (the node's next snapshot of a strategy must be newer)."""

    owners: set[Owner] = field(default_factory=set)
    as_of: dict[Owner, int] = field(default_factory=dict)


def adopt(ledger: Ledger, snapshots: Iterable[HeldSnapshot], venue: str) -> Adopted:
    """Seed ``ledger`` with ``venue``'s rows of ``snapshots`` (quantities and marks); other
    venues' rows are their nodes' business."""
    adopted = Adopted()
    for s in snapshots:
        owner = (s.world_id, s.strategy_id)
        adopted.as_of[owner] = s.as_of
        for p in s.positions():
            if p.venue == venue:
                ledger.set(owner, (venue, p.symbol), p.qty)
                if p.mark is not None:
                    ledger.marks[(venue, p.symbol)] = p.mark
                adopted.owners.add(owner)
    return adopted


@dataclass(frozen=True)
class Gap:
    """What the venue holds of ``symbol`` in ``world``'s account beyond what the snapshots
    attribute to the world's strategies (negative: less)."""

    world: str
    symbol: str
    qty: float


def reconcile(ledger: Ledger, world: str, venue: str, held: Mapping[str, float]) -> list[Gap]:
    """Compare what the venue holds for ``world`` (``held``, per symbol) with what the ledger
    attributes to the world's strategies; the gaps, by symbol, are what no strategy owns."""
    symbols = {
        symbol
        for (w, _), held_by in ledger.holdings.items()
        if w == world
        for (_, symbol) in held_by
    }
    gaps = []
    for symbol in sorted(symbols | set(held)):
        gap = held.get(symbol, 0.0) - ledger.total([world], (venue, symbol))
        if abs(gap) > GAP_TOLERANCE:
            gaps.append(Gap(world, symbol, gap))
    return gaps


class Unattributed:
    """Quantities at the venue that no strategy owns yet, per (account, symbol)."""

    def __init__(self) -> None:
        self.gaps: dict[tuple[str, str], float] = {}

    def found(self, gap: Gap) -> None:
        """A gap found at start-up (a world's account is named after the world)."""
        self.gaps[(gap.world, gap.symbol)] = gap.qty

    def add(self, account: str, symbol: str, qty: float) -> None:
        """A fill no plan explains (an order from before a restart whose key follows no plan
        any more): it waits with the gaps."""
        self.gaps[(account, symbol)] = self.gaps.get((account, symbol), 0.0) + qty

    def claim(self, ledger: Ledger, venue: str, account: str, leg: DeltaIntent) -> list[Owner]:
        """Share the gap of ``leg``'s key (if any) among the strategies of its breakdown, as
        its fills are shared, and forget it; returns the owners whose holdings changed."""
        gap = self.gaps.pop((account, leg.symbol), None)
        if not gap:
            return []
        shares = weights(leg.world_id, leg.strategy_breakdown)
        return ledger.attribute((venue, leg.symbol), gap, shares)
