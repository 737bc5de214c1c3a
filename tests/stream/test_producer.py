"""The output producer: key partitioning, and batches against the broker."""

from __future__ import annotations

import os
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from consumers.clients import KafkaClients, partitions_of
from consumers.producer import CachingPartitioner, OutputProducer
from consumers.topics import ensure_topics, undersized_topics
from tests.kafka_support import fresh_settings


@given(st.lists(st.tuples(st.binary(max_size=40), st.integers(1, 64)), max_size=60))
def test_caching_partitioner_answers_as_kafkas_default(calls: list[tuple[bytes, int]]) -> None:
    cached, default = CachingPartitioner(limit=8), DefaultPartitioner()
    for key, count in calls + calls:  # every key asked twice: once cold, once cached
        partitions = list(range(count))
        assert cached(key, partitions, partitions) == default(key, partitions, partitions)


def test_a_keyless_record_goes_to_an_available_partition() -> None:
    assert CachingPartitioner()(None, [0, 1, 2], [2]) == 2


async def test_records_cross_batches_in_order_with_headers_on_their_default_partitions(
    bootstrap_servers: str,
) -> None:
    """More than a batch's bytes for one key and a few for others: every record arrives once,
    in order per key, on the partition Kafka's default partitioner gives its key."""
    settings = fresh_settings(bootstrap_servers)
    await ensure_topics(settings, bootstrap_servers)
    out = OutputProducer(
        bootstrap_servers, settings.topics, client_id="test", writer_id="w1", compression="zstd"
    )
    filler = b"x" * 200_000  # six records of one key fill more than one 1 MiB batch
    records: list[tuple[bytes | None, bytes | None]] = [
        (b"big", b"%d:" % i + filler) for i in range(6)
    ]
    records += [(f"k{i % 7}".encode(), b"%d" % i) for i in range(40)]
    await out.start()
    try:
        assert await out.write_changelog(records) == len(records)
    finally:
        await out.stop()
    topic = settings.topics.changelog
    default = DefaultPartitioner()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(parts)
        seen: list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        deadline = time.monotonic() + 30
        while len(seen) < len(records):
            assert time.monotonic() < deadline, f"only {len(seen)} of {len(records)} records"
            batch = await consumer.getmany(timeout_ms=200)
            for tp, recs in batch.items():
                seen += [(tp.partition, r.key, r.value, list(r.headers)) for r in recs]
    finally:
        await consumer.stop()
    n = len(parts)
    all_partitions = list(range(n))
    for partition, key, _, headers in seen:
        assert partition == default(key, all_partitions, all_partitions)
        assert headers == [("writer", b"w1")]
    for key in {k for k, _ in records}:
        assert [v for _, k, v, _ in seen if k == key] == [v for k2, v in records if k2 == key]


async def test_the_changelog_and_plan_topics_take_records_over_a_megabyte(
    bootstrap_servers: str,
) -> None:
    """A plan's write-ahead and record over Apache Kafka's default 1 MB, incompressible: the
    topics the service creates take them on either broker."""
    settings = fresh_settings(bootstrap_servers)
    await ensure_topics(settings, bootstrap_servers)
    out = OutputProducer(
        bootstrap_servers, settings.topics, client_id="test", writer_id="w1", compression="zstd"
    )
    big = os.urandom(1_500_000)  # zstd cannot shrink it under the default limit
    await out.start()
    try:
        assert await out.write_changelog([(b"pending|p", big)]) == 1
        assert await out.publish(await out.batch(settings.topics.plans, [(b"p", big)])) == 1
    finally:
        await out.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        for topic in (settings.topics.changelog, settings.topics.plans):
            parts = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            values: list[bytes | None] = []
            deadline = time.monotonic() + 30
            while not values:
                assert time.monotonic() < deadline, f"nothing read back from {topic}"
                batch = await consumer.getmany(timeout_ms=200)
                values += [r.value for recs in batch.values() for r in recs]
            assert values == [big]
    finally:
        await consumer.stop()


async def test_a_plan_topic_made_with_kafkas_default_limit_is_named_at_start(
    bootstrap_servers: str,
) -> None:
    """A plan topic someone else made, with the broker's default record limit: Apache Kafka
    says so (the service logs it at start); the state topic the service made passes. The
    embedded broker has no limit to say anything about."""
    settings = fresh_settings(bootstrap_servers)
    clients = KafkaClients(bootstrap_servers)
    features = await clients.connect()
    admin = clients.admin()
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.topics.plans, 1, 1)])
    finally:
        await admin.close()
    await ensure_topics(settings, clients)
    warnings = await undersized_topics(settings, clients)
    if features.full_kafka:
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(f"topic {settings.topics.plans} takes records up to ")
        assert warnings[0].endswith("set it to 33554432")
    else:
        assert warnings == []
