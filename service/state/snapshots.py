"""The snapshot table: the newest snapshot of every (world, strategy), the only position truth.

Snapshots are kept as plain tuples of atomic values, not as the validated models: a large
table of models is hundreds of thousands of objects that the cyclic garbage collector would
walk again and again, while tuples of strings and numbers are left alone by it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import NamedTuple

from ..messages import PositionSnapshot
from ..planner import PositionTable
from ..planner.positions import PositionRow, SnapshotColumns


class StoredSnapshot(NamedTuple):
    """A validated snapshot, reduced to what planning and holding need."""

    world_id: str
    strategy_id: str
    as_of: int
    seq: int | None
    converged_plan_id: str | None
    rows: tuple[PositionRow, ...]

    @property
    def version(self) -> tuple[int, int]:
        return (self.as_of, -1 if self.seq is None else self.seq)

    @classmethod
    def of(cls, snapshot: PositionSnapshot) -> StoredSnapshot:
        return cls(
            snapshot.world_id,
            snapshot.strategy_id,
            snapshot.as_of,
            snapshot.seq,
            snapshot.converged_plan_id,
            tuple((p.venue, p.symbol, p.qty, p.mark) for p in snapshot.positions),
        )


class ApplyResult(Enum):
    """What applying a snapshot (or a tombstone) did to the table."""

    APPLIED = "applied"
    STALE = "stale"
    DELETED = "deleted"


class SnapshotTable:
    """Newest snapshot per ``(world_id, strategy_id)``; older ones (by ``as_of``, then
    ``seq``) are ignored. A tombstone removes the strategy's snapshot."""

    def __init__(self) -> None:
        self._by_world: dict[str, dict[str, StoredSnapshot]] = {}
        self._columns: dict[tuple[str, str], SnapshotColumns] = {}
        self._count = 0
        self.position_count = 0

    def __len__(self) -> int:
        return self._count

    def apply(self, snapshot: PositionSnapshot) -> ApplyResult:
        world = self._by_world.setdefault(snapshot.world_id, {})
        held = world.get(snapshot.strategy_id)
        if held is not None and snapshot.version < held.version:
            return ApplyResult.STALE
        stored = StoredSnapshot.of(snapshot)
        world[snapshot.strategy_id] = stored
        if held is None:
            self._count += 1
        else:
            self.position_count -= len(held.rows)
            self._columns.pop((snapshot.world_id, snapshot.strategy_id), None)
        self.position_count += len(stored.rows)
        return ApplyResult.APPLIED

    def delete(self, world_id: str, strategy_id: str) -> ApplyResult:
        world = self._by_world.get(world_id)
        held = None if world is None else world.pop(strategy_id, None)
        if held is not None:
            self._count -= 1
            self.position_count -= len(held.rows)
            self._columns.pop((world_id, strategy_id), None)
        if world is not None and not world:
            del self._by_world[world_id]
        return ApplyResult.DELETED

    def get(self, world_id: str, strategy_id: str) -> StoredSnapshot | None:
        return self._by_world.get(world_id, {}).get(strategy_id)

    @property
    def worlds(self) -> list[str]:
        return sorted(self._by_world)

    def snapshots(self, worlds: Iterable[str] | None = None) -> list[StoredSnapshot]:
        """The snapshots of ``worlds`` (all worlds when None)."""
        names = self._by_world if worlds is None else worlds
        return [s for w in names for s in self._by_world.get(w, {}).values()]

    def positions(self, worlds: Iterable[str] | None = None) -> PositionTable:
        """The positions of ``worlds`` (all when None) as the planner's columnar table.

        Each snapshot is turned into columns once, when first planned on, and reused.
        """
        pieces = []
        for s in self.snapshots(worlds):
            key = (s.world_id, s.strategy_id)
            cols = self._columns.get(key)
            if cols is None:
                cols = self._columns[key] = SnapshotColumns.of(s.rows)
            pieces.append((s, cols))
        return PositionTable.from_pieces(pieces)

    def oldest_as_of(self, world_id: str) -> int | None:
        """The ``as_of`` of the world's least recent snapshot (None if it has none)."""
        snaps = self._by_world.get(world_id)
        return min(s.as_of for s in snaps.values()) if snaps else None
