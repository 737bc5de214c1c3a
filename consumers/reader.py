"""Reading every partition of a topic from the start: restore, then follow.

Used for the global tables (snapshots, the changelog). "Caught up" means the position reached
the end offsets on Apache Kafka, and the high watermark that the last fetch reported on the
embedded broker, which reports ``end_offsets`` wrongly after multi-record batches. On Apache
Kafka readers read committed records only, so the end is the last stable offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiokafka import ConsumerRecord, TopicPartition

from .clients import KafkaClients, clients_of, partitions_of

Handler = Callable[[list[ConsumerRecord[bytes, bytes]]], None]
"""Takes the records of one fetched partition batch, in offset order."""


class TopicReader:
    """Reads one topic, all partitions, without a consumer group, calling ``handle`` with
    each fetched batch of a partition's records, in order (a batch keeps the per-record
    overhead of a large restore down to the handler's own loop)."""

    def __init__(
        self, servers: str | KafkaClients, topic: str, handle: Handler, *, client_id: str
    ) -> None:
        self.topic = topic
        self.handle = handle
        self._clients = clients_of(servers)
        self._committed = self._clients.isolation_level == "read_committed"
        self._consumer = self._clients.consumer(
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        self._partitions: list[TopicPartition] = []
        self._rounds = 0
        self._task: asyncio.Task[None] | None = None
        self.records_read = 0

    async def start(self, timeout: float = 30.0) -> None:
        await self._consumer.start()
        parts = await partitions_of(self._consumer, self.topic, timeout)
        self._partitions = [TopicPartition(self.topic, p) for p in parts]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)

    async def _poll(self, timeout_ms: int) -> None:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5_000)
        for records in batch.values():
            self.handle(records)
            self.records_read += len(records)
        self._rounds += 1

    def _end(self, tp: TopicPartition) -> int | None:
        """Where reading ends for now: the high watermark, or under ``read_committed`` the
        last stable offset (a transaction still open stops reading there)."""
        consumer = self._consumer
        end = consumer.last_stable_offset(tp) if self._committed else consumer.highwater(tp)
        return None if end is None else int(end)

    async def _behind(self) -> bool:
        for tp in self._partitions:
            high = self._end(tp)
            if high is None or await self._consumer.position(tp) < high:
                return True
        return False

    async def restore(self) -> None:
        """Read to the end. On Apache Kafka, to the end offsets as they were when restore
        began; on the embedded broker, whose ``end_offsets`` are wrong after multi-record
        batches, until every partition is at the high watermark its last fetch reported."""
        if self._clients.features.exact_end_offsets:
            ends = await self._consumer.end_offsets(self._partitions)
            while any([await self._consumer.position(tp) < end for tp, end in ends.items()]):
                await self._poll(100)
            return
        await self._poll(100)
        while await self._behind():
            await self._poll(100)

    def follow(self) -> None:
        """Keep reading in the background."""
        self._task = asyncio.create_task(self._follow(), name=f"follow-{self.topic}")

    async def _follow(self) -> None:
        while True:
            await self._poll(100)

    async def caught_up(self, timeout: float = 30.0) -> None:
        """Wait until everything written before this call has been read."""
        start = self._rounds
        deadline = time.monotonic() + timeout
        while self._rounds < start + 2 or await self._behind():
            if self._task is None:
                await self._poll(50)
            else:
                await asyncio.sleep(0.005)
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not catch up with {self.topic!r} in {timeout}s")

    async def lag(self) -> dict[int, int]:
        """Records behind the last reported high watermark, per partition."""
        out = {}
        for tp in self._partitions:
            high = self._end(tp)
            if high is not None:
                out[tp.partition] = max(0, high - await self._consumer.position(tp))
        return out

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()
