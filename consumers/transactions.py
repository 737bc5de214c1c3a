"""Exactly-once: the order of work as one Kafka transaction per piece of work.

With ``processing_guarantee = "exactly_once"`` a piece of work (its intents, plan and held
records, state, and the offset of the event it came from) is written in one transaction of
the producer of its portfolio's allocation partition, and committed all or nothing. A crash
leaves an open transaction, which the next owner of the partition aborts when its producer
with the same transactional id starts (``PartitionProducers.take_over``); the event is read
again and planned on unchanged state, with the same ids. Consumers that read with
``isolation.level=read_committed`` see each intent once. No write-ahead is needed: nothing a
transaction wrote is visible until all of it is.

Only Apache Kafka has transactions; ``require_transactions`` refuses the embedded broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from service.engine import Work, notices
from service.settings import Settings
from service.state.allocations import AllocationState

from .clients import BrokerFeatures, BrokerUnreachableError, KafkaClients
from .ownership import Ownership
from .producer import OutputProducer
from .unit_of_work import Consumed, FaultHook, Published, Step, no_faults, statuses_of

log = logging.getLogger("rebalancer")

ABORT_TIMEOUT_S = 10.0
"""How long a failed transaction's abort may take before the service gives up on it (the
next owner's producer aborts it anyway)."""


class TransactionsUnsupportedError(BrokerUnreachableError):
    """``exactly_once`` was asked of a broker without transactions: the brokers cannot be
    used with these settings."""


def require_transactions(features: BrokerFeatures, bootstrap_servers: str) -> None:
    """Refuse ``exactly_once`` on a broker that cannot keep it."""
    if not features.transactions:
        raise TransactionsUnsupportedError(
            f"processing_guarantee = 'exactly_once' needs Kafka transactions, which the broker "
            f"at {bootstrap_servers} does not offer (the embedded broker has none); use "
            f"Apache Kafka, or processing_guarantee = 'at_least_once'"
        )


class PartitionProducers:
    """One transactional producer per allocation partition this instance is assigned.

    The transactional id names the partition, not the instance: the next owner of a partition
    starts a producer with the same id, and the broker then fences the previous owner's (its
    next transaction fails, so a stalled instance cannot write for a portfolio it lost) and
    aborts the transaction that owner left open.
    """

    def __init__(self, clients: KafkaClients, settings: Settings, *, writer_id: str) -> None:
        self.clients = clients
        self.settings = settings
        self.writer_id = writer_id
        self._producers: dict[int, OutputProducer] = {}

    def transactional_id(self, partition: int) -> str:
        """The same for every instance of the group: ``{group}.{allocation topic}.{p}``."""
        s = self.settings
        return f"{s.group_id}.{s.topics.allocations}.{partition}"

    async def take_over(self, partitions: set[int]) -> None:
        """A fresh producer for each assigned partition. Starting one fences every earlier
        producer of its partition, and returns once the broker has aborted what that one
        left open. Producers are started anew even for partitions this instance kept: between
        two syncs the partition may have been another instance's, whose producer fenced ours."""
        await self.stop()
        s = self.settings
        for partition in sorted(partitions):
            producer = OutputProducer(
                self.clients,
                s.topics,
                client_id=f"{s.client_id}-txn-{partition}",
                writer_id=self.writer_id,
                compression=s.compression,
                transactional_id=self.transactional_id(partition),
            )
            await producer.start()  # InitProducerId: the fence, and the abort of what is open
            self._producers[partition] = producer
            log.info("took over allocation partition %d (transactions)", partition)

    def of(self, partition: int) -> OutputProducer:
        producer = self._producers.get(partition)
        if producer is None:
            raise RuntimeError(f"no transactional producer for allocation partition {partition}")
        return producer

    async def start(self) -> None:
        """Producers start on assignment (``take_over``)."""

    async def stop(self) -> None:
        for producer in self._producers.values():
            with contextlib.suppress(Exception):
                await producer.stop()
        self._producers.clear()


class TransactionalUnitOfWork:
    """The ``Unit`` of an exactly-once service: each piece of work is one transaction."""

    def __init__(
        self,
        producers: PartitionProducers,
        ownership: Ownership,
        state: AllocationState,
        group_id: str,
        fault: FaultHook = no_faults,
    ) -> None:
        self.producers = producers
        self.ownership = ownership
        self.state = state
        self.group_id = group_id
        self.fault = fault

    def _producer_for(self, portfolio_id: str) -> OutputProducer:
        partition = self.ownership.partition_for(portfolio_id)
        if partition is None:
            raise RuntimeError(f"portfolio {portfolio_id!r}: no allocation partitions known")
        return self.producers.of(partition)

    async def carry_out(self, work: Work, consumed: Consumed | None = None) -> Published:
        """Intents, records, state and the event's offset in one transaction; the state in
        memory changes only once it is committed."""
        if work.portfolio_id is None:
            raise ValueError(f"work {work.outcome.value} names no portfolio to write for")
        producer = self._producer_for(work.portfolio_id)
        published = 0
        await producer.begin_transaction()
        try:
            if work.has_intents:
                published = await producer.publish(await producer.intents(work.intents))
                self.fault(Step.AFTER_INTENTS)
            if work.records:
                await producer.publish_records(work.records)
                self.fault(Step.AFTER_RECORDS)
            notifications = notices.of_work(work)
            if notifications:
                await producer.publish_notifications(notifications)
            await producer.write_changelog(work.state)
            self.fault(Step.AFTER_STATE)
            await self._end(producer, consumed)
        except BaseException:
            await _abort(producer)
            raise
        self.state.apply_all(work.state)
        return Published(published, statuses_of(work))

    async def commit(self, consumed: Consumed) -> None:
        """An event without work: its offset alone, in a transaction of its partition."""
        producer = self.producers.of(consumed.tp.partition)
        await producer.begin_transaction()
        try:
            await self._end(producer, consumed)
        except BaseException:
            await _abort(producer)
            raise

    async def _end(self, producer: OutputProducer, consumed: Consumed | None) -> None:
        if consumed is not None:
            await producer.send_offsets_to_transaction(consumed.next_offsets, self.group_id)
        self.fault(Step.BEFORE_COMMIT)
        await producer.commit_transaction()

    async def take_over(self, partitions: set[int]) -> None:
        await self.producers.take_over(partitions)


async def _abort(producer: OutputProducer) -> None:
    """Abort a failed transaction if the broker still lets this producer (a fenced one is
    refused; its transaction was aborted by the fence)."""
    try:
        await asyncio.wait_for(producer.abort_transaction(), ABORT_TIMEOUT_S)
    except Exception as exc:  # the original failure is what the caller raises
        log.warning("aborting the failed transaction failed too: %r", exc)
