"""What a world holds, valued at its marks: the live side of a drift band.

The runner measures with this to decide whether a policy triggers, and the engine measures
again with the same function when it plans the policy's event, on the snapshots it plans with,
so the plan corrects the drift that is there when it is made. Positions are netted per
``(venue, symbol)`` across the world's strategies, as the planner nets them, and each key is
valued at the mark of its most recent snapshot that has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..planner.netting import exact_sums, group, latest_mark
from ..planner.positions import FloatArray, PositionTable
from ..planner.target_weight import AssetKey

Measure = Literal["gross", "net"]


def label(key: AssetKey) -> str:
    """An asset's label in events and records: ``venue:symbol`` (``:symbol`` without venue)."""
    return f"{key[0] or ''}:{key[1]}"


@dataclass(frozen=True)
class WorldHoldings:
    """One world's keys, sorted, with their net quantity and latest mark (NaN: none)."""

    world_id: str
    keys: tuple[AssetKey, ...]
    qty: FloatArray
    mark: FloatArray

    @property
    def missing_marks(self) -> list[AssetKey]:
        """Keys the world holds (non-zero quantity) that no snapshot gives a mark for."""
        bad = (self.qty != 0) & np.isnan(self.mark)
        return [self.keys[i] for i in np.flatnonzero(bad).tolist()]

    @property
    def values(self) -> FloatArray:
        """Signed value of each key (0 where a key has no mark)."""
        out: FloatArray = np.where(np.isnan(self.mark), 0.0, self.qty * self.mark)
        return out

    def value(self, measure: Measure) -> float:
        """The world's value: ``gross`` (sum of |value| per key) or ``net``."""
        v = self.values
        return math.fsum((np.abs(v) if measure == "gross" else v).tolist())

    def weights(self, base: float) -> dict[AssetKey, float]:
        """Each held key's value over ``base`` (keys of zero quantity are left out)."""
        held = np.flatnonzero(self.qty != 0).tolist()
        v = self.values
        return {self.keys[i]: float(v[i]) / base for i in held}

    def marks(self) -> dict[AssetKey, float]:
        """Every key that has a mark, held or not (a zero position reports a price)."""
        return {k: float(m) for k, m in zip(self.keys, self.mark.tolist(), strict=True) if m == m}


def holdings(table: PositionTable, world_id: str) -> WorldHoldings:
    """The world's holdings from a position table (other worlds' rows are ignored)."""
    empty = WorldHoldings(world_id, (), np.zeros(0), np.zeros(0))
    if world_id not in table.worlds or not len(table):
        return empty
    rows = np.flatnonzero(table.world == table.worlds.index(world_id))
    n_s = len(table.symbols)
    codes, index = group(table.venue[rows] * n_s + table.symbol[rows], len(table.venues) * n_s)
    size = codes.shape[0]
    qty = exact_sums(index, table.qty[rows], size)
    mark = latest_mark(index, size, table.mark[rows], table.recency[rows])
    keys = tuple((table.venues[c // n_s], table.symbols[c % n_s]) for c in codes.tolist())
    return WorldHoldings(world_id, keys, qty, mark)
