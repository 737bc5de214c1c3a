"""Which portfolios this instance owns, in one place.

Allocation events are keyed by portfolio, so the consumer group's assignment of allocation
partitions decides which instance carries out a portfolio's events, policy events and held
work, writes its state and dead-letters its share of bad snapshots. A portfolio's partition is
Kafka's default partitioning of its key (murmur2), as every producer computes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.partitioner import murmur2


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a keyed record (murmur2 of the key)."""
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


class Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """The allocation partitions this instance is assigned, and what that makes it own.

    It listens to the group's rebalances: a revocation waits for the work in hand (``lock``),
    and any change sets ``needs_sync``, which the work loops honour before the next piece of
    work by catching up with the changelog (the previous owner's writes). ``on_assigned`` is
    called when partitions arrive, to wake whoever waits for them.
    """

    def __init__(self, topic: str, lock: asyncio.Lock, on_assigned: Callable[[], None]) -> None:
        self.topic = topic
        self.lock = lock
        self.on_assigned = on_assigned
        self.needs_sync = True
        self._consumer: AIOKafkaConsumer | None = None

    def bind(self, consumer: AIOKafkaConsumer) -> None:
        """The group consumer whose assignment this reads."""
        self._consumer = consumer

    def assigned(self) -> tuple[set[int], int]:
        """The allocation partitions assigned to this instance, and how many there are."""
        consumer = self._consumer
        if consumer is None:
            return set(), 0
        mine = {tp.partition for tp in consumer.assignment() if tp.topic == self.topic}
        return mine, len(consumer.partitions_for_topic(self.topic) or ())

    def has_partitions(self) -> bool:
        return bool(self.assigned()[0])

    def owns(self, portfolio_id: str) -> bool:
        """Whether this instance carries out the portfolio's events."""
        mine, n = self.assigned()
        return bool(n) and partition_of(portfolio_id.encode(), n) in mine

    def partition_for(self, portfolio_id: str) -> int | None:
        """The allocation partition of a portfolio; None while the partitions are unknown."""
        _, n = self.assigned()
        return partition_of(portfolio_id.encode(), n) if n else None

    def owned(self, portfolio_ids: Iterable[str]) -> set[str]:
        """The portfolios among ``portfolio_ids`` that this instance owns."""
        mine, n = self.assigned()
        if not mine or not n:
            return set()
        return {p for p in portfolio_ids if partition_of(p.encode(), n) in mine}

    def owns_partition_of(self, other_partition: int) -> bool | None:
        """Whether this instance answers for partition ``other_partition`` of another topic
        read by every instance (the snapshot topic): the owner of allocation partition
        ``other_partition mod n`` does. None while nothing is assigned (not yet known)."""
        mine, n = self.assigned()
        if not mine or not n:
            return None
        return other_partition % n in mine

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:  # no work straddles an ownership change
            self.needs_sync = True

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.needs_sync = True
        self.on_assigned()
