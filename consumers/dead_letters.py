"""Dead letters: input the service cannot use, published with the reason and moved past.

A bad allocation event is dead-lettered at once, before its offset is committed. A bad
snapshot is found by every instance (each reads the whole snapshot topic, and again on every
restart), so it waits until this instance knows whether it answers for the snapshot's
partition (``Ownership.owns_partition_of``), and the changelog remembers how far each
partition has been dead-lettered: each bad snapshot is dead-lettered once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from service.errors import describe
from service.metrics import Metrics
from service.state.allocations import AllocationState, Record, dead_letters_key

from .ownership import Ownership
from .producer import OutputProducer, dead_letter_for

log = logging.getLogger("rebalancer")

Rejected = tuple[ConsumerRecord[bytes, bytes], Exception, str]
"""A record, what refused it, and the reason to publish."""


class DeadLetters:
    """Publishes dead letters; holds bad snapshots until they can be published once."""

    def __init__(
        self,
        producer: OutputProducer,
        state: AllocationState,
        ownership: Ownership,
        metrics: Metrics,
        *,
        max_bytes: int,
        clock: Callable[[], int],
        on_pending: Callable[[], None],
    ) -> None:
        self.producer = producer
        self.state = state
        self.ownership = ownership
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.clock = clock
        self.on_pending = on_pending
        self.pending: list[Rejected] = []

    def reject_snapshot(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        """A snapshot record the table refused (called while reading the topic)."""
        reason = describe(exc) if isinstance(exc, ValidationError) else str(exc)
        self.pending.append((record, exc, reason))
        self.on_pending()

    async def flush_snapshots(self) -> None:
        """Dead-letter the bad snapshots held so far that this instance answers for and that
        no earlier run dead-lettered, then remember how far each partition has been."""
        if not self.pending or not self.ownership.has_partitions():
            return
        letters, self.pending = self.pending, []
        done = self.state.dead_lettered
        fresh = [
            item
            for item in letters
            if self.ownership.owns_partition_of(item[0].partition)
            and item[0].offset >= done.get((item[0].topic, item[0].partition), 0)
        ]
        if not fresh:
            return
        await self.publish(fresh)
        reached: dict[tuple[str, int], int] = {}
        for record, _, _ in fresh:
            slot = (record.topic, record.partition)
            reached[slot] = max(reached.get(slot, 0), record.offset + 1)
        marks: list[Record] = [
            (dead_letters_key(*slot), orjson.dumps(end)) for slot, end in reached.items()
        ]
        await self.producer.write_changelog(marks)
        self.state.apply_all(marks)

    async def publish(self, items: list[Rejected]) -> None:
        """Publish dead letters in one go. A failure other than a letter's size (which the
        producer handles by keeping fewer of the original bytes) is the broker's: it is
        raised, and the input is read again after the restart, nothing lost."""
        now = self.clock()
        letters = [
            dead_letter_for(
                r.topic,
                r.partition,
                r.offset,
                r.key,
                r.value,
                exc,
                msg,
                now,
                max_bytes=self.max_bytes,
            )
            for r, exc, msg in items
        ]
        try:
            await self.producer.dead_letters(letters)
        except KafkaError as exc:
            log.error(
                "could not publish %d dead letter(s) to %s: %s",
                len(letters),
                self.producer.topics.dead_letters,
                exc,
            )
            raise
        for record, _, message in items:
            self.metrics.events_dead_lettered.labels(record.topic).inc()
            log.warning(
                "dead-lettered %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                message[:2000],
            )
