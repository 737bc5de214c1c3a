"""Which strategy owns what at a venue: fills attributed by the plan's strategy breakdown.

A venue knows one position per (account, symbol); the rebalancer plans per strategy. A key's
intent says how its netted move splits among strategies (``strategy_breakdown``), so every
fill on that key is shared in the same proportions: strategy ``s`` gets ``fill * b_s / sum
(b)``. Opposite signs net inside the key (one strategy's sale is another's purchase, no
trade needed) and proportions above 1 or below 0 do exactly that. The shares of a fill add
up to the fill exactly (the last strategy takes the rounding), so the strategies of a key
always add up to what the venue holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from ..messages import StrategyDelta

Owner = tuple[str, str]
"""(world_id, strategy_id)."""

Instrument = tuple[str | None, str]
"""(venue, symbol)."""


def weights(world_id: str | None, breakdown: Iterable[StrategyDelta]) -> dict[Owner, float]:
    """Each strategy's share of a key's fills (adding up to 1)."""
    parts: dict[Owner, float] = {}
    for b in breakdown:
        world = b.world_id or world_id
        if world is None:
            continue  # cannot happen for valid intents: a shared key names its worlds
        owner = (world, b.strategy_id)
        parts[owner] = parts.get(owner, 0.0) + b.delta_qty
    total = math.fsum(parts.values())
    if not parts:
        return {}
    if total == 0:  # a pure transfer between strategies: share by size instead
        gross = math.fsum(abs(v) for v in parts.values()) or 1.0
        return {o: abs(v) / gross for o, v in parts.items()}
    return {o: v / total for o, v in parts.items()}


class Ledger:
    """Quantities per strategy and instrument at one venue."""

    def __init__(self) -> None:
        self.holdings: dict[Owner, dict[Instrument, float]] = {}
        self.marks: dict[Instrument, float] = {}

    def set(self, owner: Owner, instrument: Instrument, qty: float) -> None:
        self.holdings.setdefault(owner, {})[instrument] = qty

    def qty(self, owner: Owner, instrument: Instrument) -> float:
        return self.holdings.get(owner, {}).get(instrument, 0.0)

    def total(self, world_ids: Iterable[str], instrument: Instrument) -> float:
        """What the strategies of ``world_ids`` hold of ``instrument`` together."""
        worlds = set(world_ids)
        return math.fsum(
            held.get(instrument, 0.0) for (w, _), held in self.holdings.items() if w in worlds
        )

    def attribute(
        self, instrument: Instrument, fill: float, shares: Mapping[Owner, float]
    ) -> list[Owner]:
        """Share ``fill`` among ``shares``; returns the owners whose holdings changed."""
        if fill == 0 or not shares:
            return []
        owners = sorted(shares)
        given = 0.0
        for owner in owners[:-1]:
            part = fill * shares[owner]
            given += part
            self._add(owner, instrument, part)
        self._add(owners[-1], instrument, fill - given)
        return owners

    def _add(self, owner: Owner, instrument: Instrument, qty: float) -> None:
        held = self.holdings.setdefault(owner, {})
        value = held.get(instrument, 0.0) + qty
        held[instrument] = 0.0 if abs(value) < 1e-12 else value
