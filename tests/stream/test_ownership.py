"""Partition ownership: Kafka's default partitioning of portfolio keys, and what an assignment
makes an instance own (no broker: the consumer's assignment is stubbed)."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from consumers.ownership import Ownership, partition_of
from consumers.producer import CachingPartitioner


@given(st.binary(min_size=0, max_size=64), st.integers(min_value=1, max_value=64))
def test_partition_of_is_kafkas_default_partitioning(key: bytes, n: int) -> None:
    partitions = list(range(n))
    assert partition_of(key, n) == DefaultPartitioner()(key, partitions, partitions)
    assert CachingPartitioner()(key, partitions, partitions) == partition_of(key, n)


class StubConsumer:
    def __init__(self, topic: str, mine: set[int], n: int) -> None:
        self.topic, self.mine, self.n = topic, mine, n

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(self.topic, p) for p in self.mine}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n)) if topic == self.topic else set()


def ownership(mine: set[int], n: int = 3) -> Ownership:
    owner = Ownership("alloc", asyncio.Lock(), lambda: None)
    owner.bind(StubConsumer("alloc", mine, n))  # type: ignore[arg-type]
    return owner


def test_an_instance_owns_the_portfolios_of_its_partitions() -> None:
    names = [f"p{i}" for i in range(30)]
    by_partition = {p: {n for n in names if partition_of(n.encode(), 3) == p} for p in range(3)}
    assert all(by_partition.values())  # every partition has some of the 30
    first, rest = ownership({0}), ownership({1, 2})
    assert first.owned(names) == by_partition[0]
    assert rest.owned(names) == by_partition[1] | by_partition[2]
    assert all(first.owns(n) != rest.owns(n) for n in names)


def test_nothing_is_owned_before_an_assignment() -> None:
    unbound = Ownership("alloc", asyncio.Lock(), lambda: None)
    assert unbound.owned(["default"]) == set()
    assert not unbound.owns("default")
    assert unbound.owns_partition_of(0) is None
    assert ownership(set()).owns_partition_of(0) is None


def test_snapshot_partitions_are_answered_for_by_one_instance() -> None:
    owners = [ownership({0}), ownership({1}), ownership({2})]
    for snapshot_partition in range(12):
        assert [o.owns_partition_of(snapshot_partition) for o in owners].count(True) == 1


async def test_a_revocation_waits_for_the_work_in_hand_and_asks_for_a_sync() -> None:
    lock = asyncio.Lock()
    woken: list[bool] = []
    owner = Ownership("alloc", lock, lambda: woken.append(True))
    owner.needs_sync = False
    async with lock:
        revoking = asyncio.create_task(owner.on_partitions_revoked([]))
        await asyncio.sleep(0)
        assert not revoking.done()
        assert owner.needs_sync is False
    await revoking
    assert owner.needs_sync is True
    owner.needs_sync = False
    await owner.on_partitions_assigned([])
    assert owner.needs_sync is True
    assert woken == [True]
