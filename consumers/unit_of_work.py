"""The order of work, in one place: what the service writes for a piece of work, in which order.

Each step is acknowledged by the broker before the next starts:

1. the write-ahead of the plan to the changelog (``pending|{portfolio}``),
2. the intents,
3. the plan record (and held records), then their notifications (``engine.notices``),
4. the new state, which clears the write-ahead,
5. the offset of the event, when the work came from one (``Consumed``).

A crash between any two steps leaves what a restart needs: a write-ahead found on restart is
republished as it was (``RebalanceEngine.resume`` rebuilds the same intents and record from
it); an event found applied is skipped; otherwise the event is read again and planned on
unchanged state with the same ids. Tests kill the process at each step through ``FaultHook``,
which the entry point passes in.

That is the at-least-once guarantee: a crash may publish a plan's intents twice (the same
ids and bytes). ``transactions.TransactionalUnitOfWork`` does the same work as one Kafka
transaction instead (exactly-once); both answer to ``Unit``.

A write-ahead the broker refuses as too large raises ``PlanTooLarge`` before anything else is
written: the caller dead-letters the event (or keeps a held change held) and goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError

from service.engine import Work, notices
from service.state.allocations import AllocationState

from .producer import TOO_LARGE, Outgoing, OutputProducer

log = logging.getLogger("rebalancer")

SENDER_STEPS = 6
"""Event-loop steps granted to aiokafka's sender after a write-ahead is handed over, so its
request is on the wire while the plan's intents are put into batches."""


class Step(StrEnum):
    """The points between the steps of the order of work (where a crash test kills)."""

    AFTER_PENDING = "after_pending"
    AFTER_INTENTS = "after_intents"
    AFTER_RECORDS = "after_records"
    AFTER_STATE = "after_state"
    BEFORE_COMMIT = "before_commit"
    COMMAND_READ = "command_read"
    """An operator's command read from the topic and decided in memory, nothing of it written
    yet (not a step of the order of work: a point between the API's 202 and the command's
    application)."""


ORDER_OF_WORK = (
    Step.AFTER_PENDING,
    Step.AFTER_INTENTS,
    Step.AFTER_RECORDS,
    Step.AFTER_STATE,
    Step.BEFORE_COMMIT,
)
"""The steps of the order of work, in order."""


FaultHook = Callable[[Step], None]
"""Called at every ``Step``; the crash tests' hook kills the process at one of them."""


def no_faults(step: Step) -> None:
    """The hook of a service that is not under a crash test."""


class PlanTooLarge(Exception):  # noqa: N818 (it names what happened, as InputError does)
    """The broker refused a plan's write-ahead as larger than the state topic takes. It is
    the first write of the plan, so nothing of the plan was published: the event it came
    from can be dead-lettered (a held change stays held), and the service goes on."""

    def __init__(self, pending: bytes | None, topic: str, refusal: BaseException) -> None:
        size = len(pending or b"")
        super().__init__(
            f"its plan's write-ahead ({size:,} bytes before compression) is larger than the "
            f"state topic {topic} takes (its max.message.bytes; the broker answered "
            f"{type(refusal).__name__}); nothing of the plan was published"
        )


@dataclass(frozen=True)
class Consumed:
    """The event a piece of work came from: its offset is committed with the work."""

    consumer: AIOKafkaConsumer
    tp: TopicPartition
    offset: int

    @property
    def next_offsets(self) -> dict[TopicPartition, int]:
        """What to commit: the offset of the next event to read."""
        return {self.tp: self.offset + 1}


@dataclass(frozen=True)
class Published:
    """What carrying out one piece of work put on the topics."""

    intents: int
    record_statuses: tuple[str, ...]


class Unit(Protocol):
    """Carries out the engine's ``Work`` and commits the offsets of the events it came from."""

    async def carry_out(self, work: Work, consumed: Consumed | None = None) -> Published:
        """Write what ``work`` says and, when it came from an event, commit its offset."""
        ...

    async def commit(self, consumed: Consumed) -> None:
        """Commit the offset of an event that needed no work (a duplicate, a dead letter)."""
        ...

    async def take_over(self, partitions: set[int]) -> None:
        """Called when the assigned allocation partitions change, before the changelog is
        read: whatever the previous owner of a partition left unfinished must be settled."""
        ...

    @property
    def fault(self) -> FaultHook:
        """The crash tests' hook (``no_faults`` otherwise)."""
        ...


class UnitOfWork:
    """Carries out the engine's ``Work`` in the order above, and commits event offsets."""

    def __init__(
        self, producer: OutputProducer, state: AllocationState, fault: FaultHook = no_faults
    ) -> None:
        self.producer = producer
        self.state = state
        self.fault = fault

    async def carry_out(self, work: Work, consumed: Consumed | None = None) -> Published:
        """Write-ahead, intents, records, state, then the event's offset; each acknowledged
        before the next."""
        producer = self.producer
        intents: Outgoing | None = None
        if work.pending is not None:
            try:
                written = await producer.send(await producer.changelog([work.pending]))
                if work.has_intents:
                    for _ in range(SENDER_STEPS):  # the producer's sender writes the request
                        await asyncio.sleep(0)
                    intents = await producer.intents(work.intents)  # while it is in flight
                await written
            except TOO_LARGE as exc:
                await producer.renew()
                raise PlanTooLarge(work.pending[1], producer.topics.changelog, exc) from None
            self.state.apply(*work.pending)
            self.fault(Step.AFTER_PENDING)
        published = 0
        if work.has_intents:
            intents = intents or await producer.intents(work.intents)
            published = await producer.publish(intents)
            self.fault(Step.AFTER_INTENTS)
        if work.records:
            await producer.publish_records(work.records)
            self.fault(Step.AFTER_RECORDS)
        notifications = notices.of_work(work)
        if notifications:
            await producer.publish_notifications(notifications)
        await producer.write_changelog(work.state)
        self.state.apply_all(work.state)
        self.fault(Step.AFTER_STATE)
        if consumed is not None:
            await self.commit(consumed)
        return Published(published, statuses_of(work))

    async def commit(self, consumed: Consumed) -> None:
        """Commit an event's offset once its work is carried out. A failed commit (the
        partition moved in a rebalance) only means the next owner reads the event again and
        finds it applied."""
        try:
            self.fault(Step.BEFORE_COMMIT)
            await consumed.consumer.commit(consumed.next_offsets)
        except CommitFailedError as exc:
            log.warning("commit failed (partition moved?): %s", exc)

    async def take_over(self, partitions: set[int]) -> None:
        """Nothing to settle: a plan the previous owner left half written is finished from
        its write-ahead, which the sync that follows reads."""


def statuses_of(work: Work) -> tuple[str, ...]:
    """The statuses of the records a piece of work publishes, for the metrics."""
    return tuple(str(r.get("status", "planned")) for r in work.records)
