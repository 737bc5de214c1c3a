"""The release loop: what the service does between events.

Woken by snapshots (which may reach a plan in flight or freshen a stale world), by an
assignment, or every ``release_check_interval_ms``: under the service's lock it catches up
after an ownership change, dead-letters the bad snapshots it answers for, rebuilds position
tables that snapshots made stale, plans the held work that may go now, and updates the gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import get_args

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from service.engine import Outcome
from service.metrics import Metrics
from service.state.allocations import TradingMode, WorldState
from service.state.snapshots import SnapshotTable

from .dead_letters import DeadLetters
from .reader import TopicReader
from .unit_of_work import PlanTooLarge
from .worker import LoopControls, Worker

log = logging.getLogger("rebalancer")

WARM_SHARE = 20
"""After rebuilding position tables for t seconds, wait 20 t before the next rebuild: warming
takes at most a twentieth of the service's time (a table of a million rows takes about 0.1 s
to assemble), and a plan finds a stale table at worst, never a wrong one."""


class ReleaseLoop:
    """Held work released, tables warmed, bad snapshots dead-lettered, gauges set."""

    def __init__(
        self,
        worker: Worker,
        dead_letters: DeadLetters,
        snapshots: SnapshotTable,
        controls: LoopControls,
        *,
        wake: asyncio.Event,
        interval_ms: int,
        gauges: Gauges,
    ) -> None:
        self.worker = worker
        self.engine = worker.engine
        self.metrics: Metrics = worker.metrics
        self.dead_letters = dead_letters
        self.snapshots = snapshots
        self.lock = controls.lock
        self.wake = wake
        self.stopping = controls.stopping
        self.interval = interval_ms / 1000
        self.clock = controls.clock
        self._next_warm = 0.0
        self._refused: set[str] = set()
        self.gauges = gauges

    async def run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.interval)
            self.wake.clear()
            async with self.lock:
                if self.stopping.is_set():
                    return
                await self.worker.sync_if_assigned()
                await self.dead_letters.flush_snapshots()
                self._warm_tables()
                await self._release()
                await self._reached()
                await self.gauges.update()

    async def _release(self) -> None:
        metrics = self.metrics
        owned = self.worker.owned_portfolios()
        for work in self.engine.released_work(self.clock(), owned):
            if work.refused is not None:
                self._report_refused(work.refused)
                continue
            started = time.perf_counter()
            try:
                await self.worker.carry_out(work)
            except PlanTooLarge as exc:  # nothing of it was written: the change stays held
                self._report_refused(str(exc))
                continue
            if work.dropped is not None:
                metrics.policy_dropped.inc()
                log.warning("held policy correction dropped: %s", work.dropped)
            if work.outcome is Outcome.EXPIRED:
                log.info("proposal %s expired: %s", work.records[0]["plan_id"], work.why)
            if work.plan is not None:
                metrics.events_planned.inc(len(work.records[0]["coalesced_event_ids"]))
                metrics.plan_latency.observe(time.perf_counter() - started)

    async def _reached(self) -> None:
        """Notify the plans in flight that positions have reached (once each: the world's
        state remembers it)."""
        for work in self.engine.reached_work(self.clock(), self.worker.owned_portfolios()):
            await self.worker.carry_out(work)

    def _report_refused(self, reason: str) -> None:
        """Held changes that cannot be planned yet stay held; say so once per reason, not on
        every release check."""
        if reason not in self._refused:
            self._refused.add(reason)
            self.metrics.release_refused.inc()
            log.warning("held changes cannot be planned yet (kept held): %s", reason)

    def _warm_tables(self) -> None:
        """Rebuild the position tables that changed snapshots made stale, so the next event
        does not pay for it; at most a twentieth of the time, however fast snapshots come."""
        now = time.monotonic()
        if now < self._next_warm:
            return
        rebuilt = self.snapshots.warm()
        for table in rebuilt:
            self.engine.prepare(table)
        if rebuilt:
            self._next_warm = time.monotonic() + WARM_SHARE * (time.monotonic() - now)


class Gauges:
    """The state-size and lag gauges, set after each release check."""

    def __init__(
        self,
        metrics: Metrics,
        worker: Worker,
        snapshots: SnapshotTable,
        consumer: AIOKafkaConsumer,
        readers: tuple[TopicReader, ...],
    ) -> None:
        self.metrics = metrics
        self.state = worker.state
        self.owned_portfolios = worker.owned_portfolios
        self.snapshots = snapshots
        self.consumer = consumer
        self.readers = readers

    def owned_worlds(self) -> list[WorldState]:
        owned = self.owned_portfolios()
        return [w for (p, _), w in self.state.worlds.items() if p in owned]

    async def update(self) -> None:
        m, state = self.metrics, self.state
        m.state_snapshots.set(len(self.snapshots))
        m.state_positions.set(self.snapshots.position_count)
        m.state_worlds.set(len(state.worlds))
        m.worlds_in_flight.set(sum(1 for w in state.worlds.values() if w.in_flight))
        m.worlds_held.set(sum(1 for w in state.worlds.values() if w.held))
        modes = Counter(state.trading_mode(w) for w in self.owned_worlds())
        for mode in get_args(TradingMode):  # every mode, active to halted
            m.worlds_trading.labels(mode).set(modes.get(mode, 0))
        with contextlib.suppress(KafkaError, AssertionError):
            for tp in self.consumer.assignment():
                high = self.consumer.highwater(tp)
                if high is not None:
                    lag = max(0, high - await self.consumer.position(tp))
                    m.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
            for reader in self.readers:
                for partition, lag in (await reader.lag()).items():
                    m.consumer_lag.labels(reader.topic, str(partition)).set(lag)
