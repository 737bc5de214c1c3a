"""The output producer's pure part: key partitioning."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from consumers.producer import CachingPartitioner


@given(st.lists(st.tuples(st.binary(max_size=40), st.integers(1, 64)), max_size=60))
def test_caching_partitioner_answers_as_kafkas_default(calls: list[tuple[bytes, int]]) -> None:
    cached, default = CachingPartitioner(limit=8), DefaultPartitioner()
    for key, count in calls + calls:  # every key asked twice: once cold, once cached
        partitions = list(range(count))
        assert cached(key, partitions, partitions) == default(key, partitions, partitions)


def test_a_keyless_record_goes_to_an_available_partition() -> None:
    assert CachingPartitioner()(None, [0, 1, 2], [2]) == 2
