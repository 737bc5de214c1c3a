"""Carrying out the engine's work, and catching up when ownership moves.

Every loop of the service (the allocation consumer, the release loop, the policy loop) does
its work through one ``Worker`` and under the service's one lock, so no two pieces of work
interleave and none straddles a rebalance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from service.engine import RebalanceEngine, Work
from service.engine.gating import SKIPPED
from service.engine.gating import reason as gate_reason
from service.metrics import Metrics
from service.state.allocations import AllocationState

from .ownership import Ownership
from .reader import TopicReader
from .unit_of_work import Consumed, Unit

log = logging.getLogger("rebalancer")


@dataclass(frozen=True)
class LoopControls:
    """What every loop of the service shares: the lock that keeps pieces of work apart, the
    signal to stop, and the clock."""

    lock: asyncio.Lock
    stopping: asyncio.Event
    clock: Callable[[], int]


class Worker:
    """Carries out work in the order of work and counts what it published; re-syncs."""

    def __init__(
        self,
        engine: RebalanceEngine,
        unit: Unit,
        ownership: Ownership,
        changelog: TopicReader,
        metrics: Metrics,
    ) -> None:
        self.engine = engine
        self.state: AllocationState = engine.state
        self.unit = unit
        self.ownership = ownership
        self.changelog = changelog
        self.metrics = metrics

    def owned_portfolios(self) -> set[str]:
        """The portfolios with state that this instance owns."""
        state = self.state
        names = {p for p, _ in state.worlds} | set(state.portfolios) | set(state.pending)
        return self.ownership.owned(names)

    async def carry_out(self, work: Work, consumed: Consumed | None = None) -> None:
        """Carry out a work in the order of work (with the offset of the event it came
        from), and count what it published."""
        published = await self.unit.carry_out(work, consumed)
        if published.intents:
            self.metrics.intents_published.inc(published.intents)
        for status in published.record_statuses:
            self.metrics.plans_published.labels(status).inc()
        for record in work.records:
            if record.get("status") == SKIPPED:
                self.metrics.policy_cost_gated.labels(record["policy"]["policy"]).inc()
                log.info(
                    "policy correction %s skipped by its cost gate: %s",
                    record["event_id"],
                    gate_reason(record["cost_gate"]),
                )

    async def sync(self) -> None:
        """After an assignment change: catch up with the changelog (the previous owner's
        writes) and finish any plan it left half published. A write-ahead that cannot be read
        raises ``ChangelogError``: the service stops rather than forget the plan."""
        self.ownership.needs_sync = False
        await self.unit.take_over(self.ownership.assigned()[0])
        await self.changelog.caught_up()
        owned = self.owned_portfolios()
        for portfolio_id in sorted(self.state.pending):
            if portfolio_id not in owned:
                continue
            pending = self.state.pending_plan(portfolio_id)
            log.warning("finishing plan %s left half published", pending.record["plan_id"])
            await self.carry_out(self.engine.resume(pending))
            self.metrics.plans_resumed.inc()

    async def sync_if_assigned(self) -> None:
        """Sync if ownership changed and this instance has partitions again."""
        if self.ownership.needs_sync and self.ownership.has_partitions():
            await self.sync()
