"""The policy loop: live policies evaluated, and their triggers published as events.

Every ``check_interval_ms`` all watched worlds are evaluated, and a watched world again when
its snapshots change. Evaluation happens under the service's lock, between two pieces of work;
each trigger is published to the allocation topic keyed by its portfolio, where the allocation
consumer carries it out like any other event. What the rules looked at (a hybrid's period, a
regime's mark samples) is then written to the changelog through the engine, so a restart or a
new owner repeats no check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from service.live.runner import PolicyRunner
from service.metrics import Metrics
from service.state.policy_memory import PolicyMemory

from .worker import LoopControls, Worker

log = logging.getLogger("rebalancer")


class PolicyLoop:
    """Evaluates the rules of the portfolios this instance owns and publishes triggers."""

    def __init__(
        self,
        runner: PolicyRunner,
        producer: AIOKafkaProducer,
        worker: Worker,
        controls: LoopControls,
        *,
        topic: str,
        interval_ms: int,
    ) -> None:
        self.runner = runner
        self.producer = producer
        self.worker = worker
        self.metrics: Metrics = worker.metrics
        self.topic = topic
        self.interval = interval_ms / 1000
        self.lock = controls.lock
        self.stopping = controls.stopping
        self.clock = controls.clock
        self.wake = asyncio.Event()
        self._dirty: set[str] = set()

    def snapshots_changed(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        """Note the watched worlds whose snapshots changed, to evaluate them soon."""
        watched = self.runner.worlds
        for record in records:
            world = (record.key or b"").partition(b"|")[0].decode(errors="replace")
            if world in watched:
                self._dirty.add(world)
        if self._dirty:
            self.wake.set()

    async def run(self) -> None:
        next_full = 0.0
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.wake.wait(), timeout=max(0.0, next_full - time.monotonic())
                )
            self.wake.clear()
            worlds: set[str] | None = None
            if time.monotonic() >= next_full:
                next_full = time.monotonic() + self.interval
                self._dirty.clear()
            else:
                worlds, self._dirty = self._dirty, set()
                if not worlds:
                    continue
            async with self.lock:  # between two pieces of work, never inside one
                if self.stopping.is_set():
                    return
                await self.worker.sync_if_assigned()
                now = self.clock()
                evaluations = self.runner.evaluate(now, self.worker.ownership.owns, worlds)
            memories = []
            for ev in evaluations:
                self.metrics.policy_evaluations.labels(ev.policy, ev.outcome).inc()
                if ev.event is None:
                    if ev.memory is not None:
                        memories.append(ev.memory)
                    continue
                log.info(
                    "policy %s triggers world %s of %s: %s",
                    ev.policy,
                    ev.world_id,
                    ev.portfolio_id,
                    ev.detail,
                )
                try:
                    await self.producer.send_and_wait(
                        self.topic,
                        key=ev.portfolio_id.encode(),
                        value=ev.event.model_dump_json().encode(),
                    )
                except KafkaError as exc:
                    log.error("could not publish policy event %s: %s", ev.event.event_id, exc)
                    continue
                self.runner.published(ev.event, now)
                self.metrics.policy_triggers.labels(ev.policy, ev.event.trigger).inc()
                if ev.memory is not None:
                    memories.append(ev.memory)
            if memories:
                await self._remember(memories)

    async def _remember(self, memories: list[PolicyMemory]) -> None:
        """Write what the policies looked at to the changelog, after the triggers it led to
        are published: a crash before leaves a check to repeat, never a look remembered
        whose trigger was lost. Only for portfolios still owned once caught up (a new owner
        looks for itself); a failed write is logged, and costs a repeated check at worst."""
        async with self.lock:
            if self.stopping.is_set():
                return
            await self.worker.sync_if_assigned()
            owns = self.worker.ownership.owns
            kept = [m for m in memories if owns(m.portfolio_id)]
            for work in self.worker.engine.remember(kept):
                try:
                    await self.worker.carry_out(work)
                except KafkaError as exc:
                    log.warning(
                        "could not remember the policy looks of %s: %s", work.portfolio_id, exc
                    )
