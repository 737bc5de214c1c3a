"""The snapshot table: the newest snapshot of every (world, strategy), the only position truth."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from ..messages import PositionSnapshot
from ..planner import PositionTable
from ..planner.positions import SnapshotColumns


class ApplyResult(Enum):
    """What applying a snapshot (or a tombstone) did to the table."""

    APPLIED = "applied"
    STALE = "stale"
    DELETED = "deleted"


class SnapshotTable:
    """Newest snapshot per ``(world_id, strategy_id)``; older ones (by ``as_of``, then
    ``seq``) are ignored. A tombstone removes the strategy's snapshot."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], PositionSnapshot] = {}
        self._by_world: dict[str, dict[str, PositionSnapshot]] = {}
        self._columns: dict[tuple[str, str], SnapshotColumns] = {}

    def __len__(self) -> int:
        return len(self._latest)

    @property
    def position_count(self) -> int:
        return sum(len(s.positions) for s in self._latest.values())

    def apply(self, snapshot: PositionSnapshot) -> ApplyResult:
        key = (snapshot.world_id, snapshot.strategy_id)
        held = self._latest.get(key)
        if held is not None and snapshot.version < held.version:
            return ApplyResult.STALE
        self._latest[key] = snapshot
        self._columns.pop(key, None)
        self._by_world.setdefault(snapshot.world_id, {})[snapshot.strategy_id] = snapshot
        return ApplyResult.APPLIED

    def delete(self, world_id: str, strategy_id: str) -> ApplyResult:
        self._latest.pop((world_id, strategy_id), None)
        self._columns.pop((world_id, strategy_id), None)
        world = self._by_world.get(world_id)
        if world is not None:
            world.pop(strategy_id, None)
            if not world:
                del self._by_world[world_id]
        return ApplyResult.DELETED

    def get(self, world_id: str, strategy_id: str) -> PositionSnapshot | None:
        return self._latest.get((world_id, strategy_id))

    def world(self, world_id: str) -> dict[str, PositionSnapshot]:
        """The snapshots of one world, by strategy id."""
        return dict(self._by_world.get(world_id, {}))

    @property
    def worlds(self) -> list[str]:
        return sorted(self._by_world)

    def snapshots(self, worlds: Iterable[str] | None = None) -> list[PositionSnapshot]:
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
                cols = self._columns[key] = SnapshotColumns.of(s)
            pieces.append((s, cols))
        return PositionTable.from_pieces(pieces)

    def oldest_as_of(self, world_id: str) -> int | None:
        """The ``as_of`` of the world's least recent snapshot (None if it has none)."""
        snaps = self._by_world.get(world_id)
        return min(s.as_of for s in snaps.values()) if snaps else None
