"""The allocation consumer: each event of the allocation topic decided, carried out, committed.

Per record, under the service's lock: decode, check the key, let the engine decide; input it
refuses (or cannot decide: a poison message is our bug, never a stopped service) is
dead-lettered; otherwise its work is carried out in the order of work, with the offset (in
the same transaction under exactly-once); an event without work has its offset committed
alone. An event whose plan the broker refuses as too large (its write-ahead, the first write)
is dead-lettered too. Only failures of the broker or of the service's own state stop the loop.
"""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from pydantic import ValidationError

from service.engine import RebalanceEngine, Work
from service.errors import InputError, describe
from service.messages.cloudevents import decode_topic_event
from service.messages.command import OperatorCommand
from service.messages.topic import TopicEvent
from service.metrics import Metrics

from .dead_letters import DeadLetters
from .unit_of_work import Consumed, PlanTooLarge, Step
from .worker import LoopControls, Worker

log = logging.getLogger("rebalancer")


def check_key(key: bytes | None, portfolio_id: str) -> None:
    """An allocation event's Kafka key must be its portfolio: consumption follows the key and
    ownership the portfolio, so a mismatch would let two instances write one portfolio."""
    if key != portfolio_id.encode():
        shown = "no key" if key is None else f"key {key.decode(errors='replace')!r}"
        raise InputError(
            f"portfolio_id: the record has {shown}, but allocation events must be keyed by "
            f"their portfolio_id {portfolio_id!r}"
        )


class AllocationConsumer:
    """Consumes the allocation topic as a member of the service's consumer group."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        worker: Worker,
        dead_letters: DeadLetters,
        controls: LoopControls,
    ) -> None:
        self.consumer = consumer
        self.worker = worker
        self.engine: RebalanceEngine = worker.engine
        self.metrics: Metrics = worker.metrics
        self.dead_letters = dead_letters
        self.lock = controls.lock
        self.stopping = controls.stopping
        self.clock = controls.clock

    async def run(self) -> None:
        """Until ``stopping``: every record decided, carried out and committed, in order."""
        while not self.stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=200, max_records=200)
            for tp, records in batch.items():
                for record in records:
                    if self.stopping.is_set():
                        return
                    async with self.lock:
                        if self.worker.ownership.needs_sync:
                            await self.worker.sync()
                        await self.handle(record, Consumed(self.consumer, tp, record.offset))

    async def handle(self, record: ConsumerRecord[bytes, bytes], consumed: Consumed) -> None:
        """Decide one event and carry out what the engine says (or dead-letter it); either
        way its offset is committed (with the work, when there is some)."""
        if not await self.carry_out(record, consumed):
            await self.worker.unit.commit(consumed)

    async def carry_out(self, record: ConsumerRecord[bytes, bytes], consumed: Consumed) -> bool:
        """Decide one event and carry out its work with its offset; False when there was no
        work to carry out (a dead letter, a duplicate) and the offset is yet to commit."""
        started = time.perf_counter()
        metrics = self.metrics
        metrics.events_consumed.inc()
        try:
            if record.value is None:
                raise InputError("allocation event is empty (null value)")
            event = decode_topic_event(record.value, record.headers)
            check_key(record.key, event.portfolio_id)
            work = self.engine.on_event(event, self.clock())
        except ValidationError as exc:
            await self.dead_letters.publish([(record, exc, describe(exc))])
            return False
        except InputError as exc:
            await self.dead_letters.publish([(record, exc, str(exc))])
            return False
        except Exception as exc:  # a poison message: our bug, but never a stopped service
            log.exception(
                "deciding %s[%d]@%d failed", record.topic, record.partition, record.offset
            )
            reason = f"the service could not decide it: {exc!r}"
            await self.dead_letters.publish([(record, exc, reason)])
            return False
        if work.duplicate:
            metrics.events_duplicate.inc()
            return False
        try:
            return await self._carried_out(event, work, consumed, started)
        except PlanTooLarge as exc:
            log.warning(
                "%s[%d]@%d dead-lettered: %s", record.topic, record.partition, record.offset, exc
            )
            await self.dead_letters.publish([(record, exc, str(exc))])
            return False

    async def _carried_out(
        self,
        event: TopicEvent,
        work: Work,
        consumed: Consumed,
        started: float,
    ) -> bool:
        """Carry out the decided work of an event (True: its offset went with it)."""
        metrics = self.metrics
        if isinstance(event, OperatorCommand):
            self.worker.unit.fault(Step.COMMAND_READ)
            await self.worker.carry_out(work, consumed)
            decided = self.engine.state.portfolio(event.portfolio_id).commands[-1]
            metrics.commands_decided.labels(event.action, decided.outcome).inc()
            log.info(
                "command %s (%s by %s) %s: %s",
                event.command_id,
                event.action,
                event.requested_by,
                decided.outcome,
                work.why,
            )
            return True
        if work.superseded:
            metrics.policy_superseded.inc()
            log.info("policy event %s measured before its world's latest plan", event.event_id)
        if work.before_mismatches:
            metrics.before_mismatch.inc(work.before_mismatches)
            log.warning(
                "event %s: before allocation differs from the service's state; "
                "planned from the state",
                event.event_id,
            )
        await self.worker.carry_out(work, consumed)
        if work.held_worlds:
            # one count per event, labelled with all its reasons (as its held record says)
            metrics.events_held.labels(", ".join(work.held_reasons)).inc()
        if work.plan is not None:
            metrics.events_planned.inc()
        metrics.plan_latency.observe(time.perf_counter() - started)
        return True
