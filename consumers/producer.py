"""Publishing what the service produces: intents, plan records, changelog, dead letters.

Every publish waits for the broker's acknowledgement before returning, so the order of work
(write-ahead, intents, records, state, commit) holds on the broker, not only in memory.
The producer is idempotent where the broker keeps producer state (Apache Kafka; see
``clients.BrokerFeatures``), so a retried send is never written twice; the embedded broker
has no idempotent producer, and deterministic ids make re-publishing harmless there too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from consumers.ownership import partition_of
from service.messages import DeadLetter, Notification
from service.settings import Topics
from service.state.allocations import Record

from .clients import KafkaClients, clients_of

MAX_REQUEST_BYTES = 32 * 1024 * 1024
MAX_BATCH_BYTES = 1024 * 1024
"""Large batches: a plan's intents go out in a few requests instead of dozens."""


class CachingPartitioner:
    """Kafka's default key partitioning (``ownership.partition_of``), remembered per key.

    aiokafka hashes keys in pure Python, about 6 us a key; a plan's intents are keyed by
    instrument, and the same instruments recur plan after plan. The answer is the default
    partitioner's, so ordering per key matches every other Kafka client's.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._default = DefaultPartitioner()
        self._cache: dict[tuple[bytes, tuple[int, ...]], int] = {}
        self._limit = limit

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        slot = (key, tuple(all_partitions))
        found = self._cache.get(slot)
        if found is None:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            found = self._cache[slot] = all_partitions[partition_of(key, len(all_partitions))]
        return found


@dataclass(frozen=True)
class Outgoing:
    """Records of one topic in batches per partition, not yet handed to the producer."""

    topic: str
    batches: list[tuple[int, BatchBuilder]]
    count: int


class Delivery:
    """Batches handed to the producer; awaiting it waits for every acknowledgement."""

    def __init__(self, futures: list[asyncio.Future[Any]], count: int) -> None:
        self._futures = futures
        self.count = count

    def __await__(self) -> Generator[Any, None, int]:
        if self._futures:
            yield from asyncio.gather(*self._futures).__await__()
        return self.count


class OutputProducer:
    """One producer for every output topic of the service."""

    def __init__(
        self,
        servers: str | KafkaClients,
        topics: Topics,
        *,
        client_id: str,
        writer_id: str,
        compression: str = "zstd",
        transactional_id: str | None = None,
    ) -> None:
        self.topics = topics
        self.writer = writer_id.encode()
        self._partitioner = CachingPartitioner()
        clients = clients_of(servers)

        def make() -> AIOKafkaProducer:
            return clients.producer(
                client_id=client_id,
                transactional_id=transactional_id,
                acks="all",
                linger_ms=0,
                compression_type=None if compression == "none" else compression,
                max_batch_size=MAX_BATCH_BYTES,
                max_request_size=MAX_REQUEST_BYTES,
                partitioner=self._partitioner,
            )

        self._make = make
        self._producer = make()

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def renew(self) -> None:
        """Go on with a new producer (a new producer id) after the broker refused a batch for
        good (``TOO_LARGE``). An idempotent producer numbers its batches per partition, and
        aiokafka counts the refused batch as sent: the broker would take the partition's next
        batch as out of order, and the producer could not write there again. The new one is
        started before it takes over, so a concurrent send never meets a stopped producer;
        the old one is stopped once what it holds is delivered."""
        fresh = self._make()
        await fresh.start()
        old, self._producer = self._producer, fresh
        await old.stop()

    async def begin_transaction(self) -> None:
        await self._producer.begin_transaction()

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        """Commit ``offsets`` for ``group_id`` with the transaction, not before it."""
        await self._producer.send_offsets_to_transaction(offsets, group_id)

    async def commit_transaction(self) -> None:
        """Flush what the transaction holds and commit it, all or nothing."""
        await self._producer.commit_transaction()

    async def abort_transaction(self) -> None:
        await self._producer.abort_transaction()

    async def batch(
        self,
        topic: str,
        items: Iterable[tuple[bytes | None, bytes | None]],
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Outgoing:
        """Put records into one batch per partition (Kafka's default partitioning of their
        keys), ready to be handed over whole.

        aiokafka's ``send`` costs some 10 us a record in Python (a future, a partition lookup
        and a queue check each), which for a plan's 200 intents was half the time of
        publishing them. Per partition the records keep their order, as with ``send``.
        """
        producer = self._producer
        partitions = sorted(await producer.partitions_for(topic))
        partition_of = self._partitioner
        record_headers = headers or []
        batches: dict[int, list[BatchBuilder]] = {}
        count = 0
        for key, value in items:
            partition = partition_of(key, partitions, partitions)
            chain = batches.get(partition)
            if chain is None:
                chain = batches[partition] = [producer.create_batch()]
            if (
                chain[-1].append(timestamp=None, key=key, value=value, headers=record_headers)
                is None
            ):
                # full: the record opens the next batch, whose first record always fits
                chain.append(producer.create_batch())
                chain[-1].append(timestamp=None, key=key, value=value, headers=record_headers)
            count += 1
        return Outgoing(topic, [(p, b) for p, chain in batches.items() for b in chain], count)

    async def send(self, outgoing: Outgoing) -> Delivery:
        """Hand the batches to the producer; await the result for the acknowledgements."""
        futures = [
            await self._producer.send_batch(batch, outgoing.topic, partition=partition)
            for partition, batch in outgoing.batches
        ]
        return Delivery(futures, outgoing.count)

    async def publish(self, outgoing: Outgoing) -> int:
        """Send and wait until the broker has acknowledged every record; returns how many."""
        return await (await self.send(outgoing))

    async def intents(self, intents: list[dict[str, Any]]) -> Outgoing:
        """Intents keyed ``"{venue}|{symbol}"``, so one instrument's intents stay in order."""
        return await self.batch(
            self.topics.intents,
            ((f"{i['venue'] or ''}|{i['symbol']}".encode(), orjson.dumps(i)) for i in intents),
        )

    async def changelog(self, records: list[Record]) -> Outgoing:
        """State records, tagged with this instance's id so it can skip its own on follow."""
        return await self.batch(self.topics.changelog, records, [("writer", self.writer)])

    async def publish_records(self, records: list[dict[str, Any]]) -> int:
        """Plan (and held) records keyed by portfolio."""
        return await self.publish(
            await self.batch(
                self.topics.plans, ((r["portfolio_id"].encode(), orjson.dumps(r)) for r in records)
            )
        )

    async def publish_notifications(self, notifications: list[Notification]) -> int:
        """Publish notifications keyed by portfolio (one portfolio's stay in order)."""
        return await self.publish(
            await self.batch(
                self.topics.notifications,
                ((n.portfolio_id.encode(), n.model_dump_json().encode()) for n in notifications),
            )
        )

    async def write_changelog(self, records: list[Record]) -> int:
        return await self.publish(await self.changelog(records))

    async def dead_letters(self, letters: list[DeadLetter]) -> int:
        """Publish dead letters as one batch per partition; returns how many. A letter the
        broker refuses as too large is published again with less of the original bytes
        (``DeadLetter.shrunk``); any other failure is the broker's and is raised."""
        try:
            return await self.publish(await self._dead_letter_batch(letters))
        except TOO_LARGE:
            await self.renew()
            if len(letters) > 1:  # find the large one(s) alone
                count = 0
                for letter in letters:
                    count += await self.dead_letters([letter])
                return count
            smaller = shrunk(letters[0])
            if smaller is None:
                raise
            return await self.dead_letters([smaller])

    async def _dead_letter_batch(self, letters: list[DeadLetter]) -> Outgoing:
        return await self.batch(
            self.topics.dead_letters,
            (
                (f"{d.topic}|{d.partition}|{d.offset}".encode(), d.model_dump_json().encode())
                for d in letters
            ),
        )


TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
"""What a broker answers for a message above its size limit."""

DEAD_LETTER_BYTES = 256 * 1024
"""The original bytes a dead letter keeps, at most (key and value each): base64 of 256 KiB is
some 350 KB, so a letter fits Apache Kafka's default 1 MB message size."""

ERROR_MESSAGE_CHARS = 8_000
"""A dead letter's reason is cut after this many characters (10,000 bad rows say as much in
their first lines as in all)."""


def dead_letter_for(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: BaseException,
    message: str,
    now_ms: int,
    *,
    max_bytes: int = DEAD_LETTER_BYTES,
) -> DeadLetter:
    """A dead letter carrying the original bytes (the first ``max_bytes`` of each, with the
    value's size and SHA-256) and why they were refused."""
    if len(message) > ERROR_MESSAGE_CHARS:
        message = f"{message[:ERROR_MESSAGE_CHARS]}... ({len(message)} characters in all)"
    truncated = any(b is not None and len(b) > max_bytes for b in (key, value))
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key_b64=None if key is None else base64.b64encode(key[:max_bytes]).decode(),
        value_b64=None if value is None else base64.b64encode(value[:max_bytes]).decode(),
        value_size=None if value is None else len(value),
        value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        truncated=truncated,
        error_class=type(error).__name__,
        error_message=message,
        failed_at=now_ms,
    )


def shrunk(letter: DeadLetter) -> DeadLetter | None:
    """The letter with an eighth of its original bytes (None when it keeps none already):
    for a broker whose message size is below what ``dead_letter_for`` assumed."""
    kept = [base64.b64decode(b) for b in (letter.key_b64, letter.value_b64) if b is not None]
    longest = max((len(b) for b in kept), default=0)
    if longest == 0:
        return None
    limit = longest // 8

    def cut(b64: str | None) -> str | None:
        return None if b64 is None else base64.b64encode(base64.b64decode(b64)[:limit]).decode()

    return letter.model_copy(
        update={
            "key_b64": cut(letter.key_b64),
            "value_b64": cut(letter.value_b64),
            "truncated": True,
        }
    )
