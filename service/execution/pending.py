"""Which intent offsets a node may commit: only past intents that are finished.

A node commits a partition up to its oldest intent still in hand (not yet reached,
superseded or expired), so a restarted node re-reads exactly what it was working on and,
ordering only residuals, trades nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from ..messages import DeltaIntent


class PendingIntents:
    """Intents in hand by partition and offset."""

    def __init__(self) -> None:
        self._by_partition: dict[Hashable, dict[int, DeltaIntent]] = {}

    def add(self, partition: Hashable, offset: int, intent: DeltaIntent) -> None:
        self._by_partition.setdefault(partition, {})[offset] = intent

    def commit_offset(
        self, partition: Hashable, position: int, finished: Callable[[DeltaIntent], bool]
    ) -> int:
        """Forget the finished intents of ``partition``; the offset to commit is the oldest
        one left, or ``position`` (the next to read) when none is."""
        pending = self._by_partition.get(partition, {})
        for offset in [o for o, intent in pending.items() if finished(intent)]:
            del pending[offset]
        return min(pending) if pending else position
