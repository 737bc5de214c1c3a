"""The snapshot table: the newest snapshot of every (world, strategy), the only position truth.

Snapshots are held in their stored form (``stored_snapshot``), not as the validated models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Protocol, TypeVar

from pydantic import ValidationError

from ..errors import InputError
from ..messages import PositionSnapshot
from ..planner import PositionTable
from ..planner.positions import SnapshotColumns, Vocabulary
from .stored_snapshot import StoredSnapshot, decode_snapshot_record, plain_values, tombstone_key


class SnapshotRecord(Protocol):
    """A record of the snapshot topic (aiokafka's ``ConsumerRecord`` is one)."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


R = TypeVar("R", bound=SnapshotRecord)


class ApplyResult(Enum):
    """What applying a snapshot (or a tombstone) did to the table."""

    APPLIED = "applied"
    STALE = "stale"
    DELETED = "deleted"


WorldSet = tuple[str, ...] | None
"""Sorted world ids, or None for every world."""

TABLES_KEPT = 16
"""Assembled position tables kept (one per world set planned on, least recently used out)."""


def _check_not_future(as_of: int, record: object, now_ms: int, max_skew_ms: int) -> None:
    published = getattr(record, "timestamp", None)
    reference = (
        now_ms if not isinstance(published, int) or published < 0 else min(published, now_ms)
    )
    if as_of > reference + max_skew_ms:
        raise InputError(
            f"as_of: {as_of} is {as_of - reference} ms after the record was published, "
            f"beyond the allowed clock skew of {max_skew_ms} ms (max_clock_skew_ms)"
        )


class SnapshotTable:
    """Newest snapshot per ``(world_id, strategy_id)``; older ones (by ``as_of``, then
    ``seq``) are ignored. A tombstone removes the strategy's snapshot.

    ``applied``, ``stale`` and ``deleted`` count what happened to every record offered; the
    metrics read them when scraped, so the hot path pays an integer add, not a metric.
    """

    def __init__(self) -> None:
        self._by_world: dict[str, dict[str, StoredSnapshot]] = {}
        self._columns: dict[tuple[str, str], SnapshotColumns] = {}
        self._venues: Vocabulary[str | None] = Vocabulary()
        self._symbols: Vocabulary[str] = Vocabulary()
        self._tables: dict[WorldSet, PositionTable | None] = {}
        self._count = 0
        self.position_count = 0
        self.applied = 0
        self.stale = 0
        self.deleted = 0

    def __len__(self) -> int:
        return self._count

    def ingest(
        self,
        records: Iterable[R],
        reject: Callable[[R, Exception], None],
        *,
        now_ms: int | None = None,
        max_skew_ms: int = 0,
    ) -> int:
        """Apply records of the snapshot topic in order; returns how many snapshots were
        applied. A record that is neither a valid snapshot nor a valid tombstone goes to
        ``reject`` with pydantic's ``ValidationError`` or an ``InputError``.

        With ``now_ms``, a snapshot dated more than ``max_skew_ms`` after its record's
        timestamp (or after ``now_ms``, if earlier) is rejected too: it would make every
        real snapshot of its strategy look stale. The record's own time is the reference,
        so a restore that reads the record again later decides the same.

        This is the restore's hot loop (one pass per record of the topic), so it does what
        ``apply`` does inline, and a batch whose values are all plain (``plain_values``) has
        their names checked in one scan instead of one per record.
        """
        by_world, columns = self._by_world, self._columns
        applied = stale = positions = 0
        touched: set[str] = set()
        # A snapshot no later than both the record's time and now (each plus the skew) passes
        # the check without the call, which only the rare late one needs for its message.
        ceiling = None if now_ms is None else now_ms + max_skew_ms
        batch = list(records)
        plain = plain_values([record.value for record in batch])
        for record in batch:
            try:
                snapshot = decode_snapshot_record(record.key, record.value, plain=plain)
                if snapshot is None:
                    self.delete(*tombstone_key(record.key))
                    continue
                if ceiling is not None:
                    published = getattr(record, "timestamp", None)
                    if (
                        snapshot.as_of > ceiling
                        or type(published) is not int
                        or snapshot.as_of > published + max_skew_ms
                    ):
                        _check_not_future(snapshot.as_of, record, now_ms or 0, max_skew_ms)
            except (ValidationError, InputError) as exc:
                reject(record, exc)
                continue
            world = by_world.get(snapshot.world_id)
            if world is None:
                world = by_world[snapshot.world_id] = {}
            held = world.get(snapshot.strategy_id)
            if held is None:
                self._count += 1
            elif snapshot.as_of <= held.as_of and (
                snapshot.as_of < held.as_of or snapshot.version < held.version
            ):
                stale += 1
                continue
            else:
                positions -= held.position_count
                columns.pop((snapshot.world_id, snapshot.strategy_id), None)
            world[snapshot.strategy_id] = snapshot
            positions += snapshot.position_count
            applied += 1
            touched.add(snapshot.world_id)
        self._changed(touched)
        self.applied += applied
        self.stale += stale
        self.position_count += positions
        return applied

    def apply(self, snapshot: PositionSnapshot | StoredSnapshot) -> ApplyResult:
        if not isinstance(snapshot, StoredSnapshot):
            snapshot = StoredSnapshot.of(snapshot)
        world = self._by_world.get(snapshot.world_id)
        if world is None:
            world = self._by_world[snapshot.world_id] = {}
        held = world.get(snapshot.strategy_id)
        if held is None:
            self._count += 1
        elif snapshot.as_of <= held.as_of and (
            snapshot.as_of < held.as_of or snapshot.version < held.version
        ):
            self.stale += 1
            return ApplyResult.STALE
        else:
            self.position_count -= held.position_count
            self._columns.pop((snapshot.world_id, snapshot.strategy_id), None)
        world[snapshot.strategy_id] = snapshot
        self.position_count += snapshot.position_count
        self.applied += 1
        self._changed((snapshot.world_id,))
        return ApplyResult.APPLIED

    def delete(self, world_id: str, strategy_id: str) -> ApplyResult:
        world = self._by_world.get(world_id)
        held = None if world is None else world.pop(strategy_id, None)
        if held is not None:
            self._count -= 1
            self.position_count -= held.position_count
            self._columns.pop((world_id, strategy_id), None)
            self._changed((world_id,))
        if world is not None and not world:
            del self._by_world[world_id]
        self.deleted += 1
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

        Each snapshot is turned into columns once, when first planned on, and a world set's
        table is kept until one of its snapshots changes; ``warm`` then rebuilds it ahead of
        the next plan. The table is shared: its arrays are read-only.
        """
        key: WorldSet = None if worlds is None else tuple(sorted(set(worlds)))
        tables = self._tables
        table = tables.pop(key, None)  # put back last: the most recently used
        if table is None:
            table = self._assemble(key)
            while len(tables) >= TABLES_KEPT:
                del tables[next(iter(tables))]
        tables[key] = table
        return table

    def warm(self) -> list[PositionTable]:
        """Rebuild the tables of world sets planned on before whose snapshots have changed
        since, so that the next plan finds them ready; returns them. The service calls this
        when it is otherwise idle."""
        stale = [key for key, table in self._tables.items() if table is None]
        rebuilt = []
        for key in stale:
            table = self._tables[key] = self._assemble(key)
            rebuilt.append(table)
        return rebuilt

    def _assemble(self, key: WorldSet) -> PositionTable:
        pieces = []
        for s in self.snapshots(key):
            cols = self._columns.get((s.world_id, s.strategy_id))
            if cols is None:
                cols = SnapshotColumns.of(s.positions(), self._venues, self._symbols)
                self._columns[(s.world_id, s.strategy_id)] = cols
            pieces.append((s, cols))
        table = PositionTable.from_pieces(pieces, self._venues, self._symbols)
        for column in (table.world, table.strategy, table.venue, table.symbol):
            column.flags.writeable = False
        for values in (table.qty, table.mark, table.recency):
            values.flags.writeable = False
        return table

    def _changed(self, worlds: Iterable[str]) -> None:
        """Mark the kept tables that include any of ``worlds`` for rebuilding."""
        tables = self._tables
        if not tables:
            return
        for world in worlds:
            for key, table in tables.items():
                if table is not None and (key is None or world in key):
                    tables[key] = None

    def oldest_as_of(self, world_id: str) -> int | None:
        """The ``as_of`` of the world's least recent snapshot (None if it has none)."""
        snaps = self._by_world.get(world_id)
        return min(s.as_of for s in snaps.values()) if snaps else None
