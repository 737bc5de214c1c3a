"""The reference execution node (SPEC 5): intents in, orders to one venue, snapshots out.

Start-up: read the snapshot topic to its end (who holds what, per strategy, at every venue),
take this venue's rows as the ledger, compare with what the venue holds, then join the node's
consumer group on the intent topic.

Per key of this venue the node follows the newest plan's target (``TargetBook``) and orders
only the residual between that target and the venue's position, one order at a time, a
close leg before the open leg that depends on it. Fills are shared among strategies by the
intent's breakdown (``Ledger``). Snapshots of the strategies it trades are published on
change and on a heartbeat, with ``converged_plan_id`` once every key of a plan, at every
venue, has reached its target. Offsets are committed only past intents that are finished
(reached, superseded, expired), so a restart re-reads what was in hand and, ordering by the
residual, trades nothing twice.

The node is the Kafka half (this module); ``OrderDesk`` is the trading half (orders and
fills at the venue); the decisions of both are pure functions of ``service.execution``.

To be watched, the node counts what it does (``NodeStats``, exported by ``NodeMetrics`` on
its own registry; ``service.node_app`` serves it with ``/healthz`` and ``/readyz``) and, with
``NodeOptions.nodes_topic``, publishes a ``NodeHeartbeat`` keyed by its id every
``node_heartbeat_ms`` (and a last one, ``stopped``, when it stops), which the service lists
at ``GET /v1/nodes``. On the same topic it reports what each plan's fills cost (``PlanFills``,
cumulative per plan for this run of the node, after every batch of fills), which the service
shows as the plan's realised cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from service.execution import (
    FillCosts,
    HeldPosition,
    Ledger,
    Offer,
    Plans,
    TargetBook,
    Unattributed,
    adopt,
    reconcile,
)
from service.execution.ledger import Owner
from service.execution.outgoing import next_as_of, node_snapshot
from service.execution.pending import PendingIntents
from service.messages import DeltaIntent, NodeCounts, NodeHeartbeat, PlanFills
from service.state.snapshots import SnapshotTable

from .clients import KafkaClients, clients_of
from .node_metrics import NodeGauges, NodeMetrics
from .order_desk import NodeStats, OrderDesk, Touched, account_of
from .reader import TopicReader
from .venues.base import Venue

log = logging.getLogger("rebalancer.execution")

__all__ = ["ExecutionNode", "NodeOptions", "NodeStats"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class NodeOptions:
    """How an execution node runs."""

    group_id: str
    heartbeat_ms: int = 5_000
    work_interval_ms: int = 50
    max_retries: int = 20
    """Rejected orders of one leg retried this many times, then the leg is given up."""
    convergence_tolerance: float = 1e-9
    """Relative gap at which another venue's key counts as reached."""
    session_timeout_ms: int = 6_000
    """How soon the group gives a killed node's partitions to its restarted successor
    (Kafka's default is 10 s; 6 s is the broker-side minimum by default)."""
    nodes_topic: str | None = None
    """Where the node publishes its heartbeat (``topics.nodes``); None: it publishes none."""
    node_heartbeat_ms: int = 5_000
    """How often (``execution.heartbeat_interval_ms``)."""
    node_id: str | None = None
    """The heartbeat's key (default ``<venue>@<host>``: a restart replaces its entry)."""


class ExecutionNode:
    """One venue's execution node: the Kafka half (intents in, snapshots out) around an
    ``OrderDesk`` (the trading half)."""

    def __init__(
        self,
        servers: str | KafkaClients,
        *,
        snapshots_topic: str,
        intents_topic: str,
        venue: Venue,
        options: NodeOptions,
        clock: Callable[[], int] = now_ms,
        on_restored: Callable[[SnapshotTable], None] | None = None,
    ) -> None:
        self.clients = clients_of(servers, client_id="execution")
        self.snapshots_topic = snapshots_topic
        self.intents_topic = intents_topic
        self.venue = venue
        self.options = options
        self.clock = clock
        self.on_restored = on_restored
        self.book = TargetBook()
        self.ledger = Ledger()
        self.table = SnapshotTable()
        self.stats = NodeStats()
        self.wake = asyncio.Event()
        self.ready = False
        self.plans = Plans(venue.name, options.convergence_tolerance)
        self.unattributed = Unattributed()
        self.costs = FillCosts()
        self.session = uuid.uuid4().hex[:8]
        """This run of the node: its orders' ids and its fill reports carry it."""
        self.desk = OrderDesk(
            venue,
            book=self.book,
            ledger=self.ledger,
            plans=self.plans,
            unattributed=self.unattributed,
            stats=self.stats,
            costs=self.costs,
            session=self.session,
            max_retries=options.max_retries,
            clock=clock,
        )
        self._dirty: set[Owner] = set()
        self._owners: set[Owner] = set()
        self._last_as_of: dict[Owner, int] = {}
        self._pending = PendingIntents()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.node_id = options.node_id or f"{venue.name}@{socket.gethostname()}"
        self.started_at = clock()
        self.endpoint: str | None = None
        """Where the node's HTTP endpoints are (host:port), told in its heartbeats."""
        self.last_heartbeat_ms: int | None = None
        self._plan_created: dict[str, int] = {}
        self._observed: set[str] = set()
        self.metrics = NodeMetrics(self.stats, self._gauges)

    def is_ready(self) -> bool:
        """The consumer has joined and state is restored (``/readyz``)."""
        return self.ready

    def plans_in_progress(self) -> list[str]:
        """Plans with a key of this venue not reached yet, oldest first."""
        name = self.venue.name
        found = {
            target.order
            for (_, venue, _), target in self.book.keys.items()
            if venue == name and not target.done
        }
        return [plan_id for _, plan_id in sorted(found)]

    def _gauges(self) -> NodeGauges:
        name = self.venue.name
        mine = [t for (_, v, _), t in self.book.keys.items() if v == name]
        return NodeGauges(
            ready=self.ready,
            open_orders=len(self.desk.open),
            keys_in_progress=sum(1 for t in mine if not t.done),
            plans_in_progress=len({t.plan_id for t in mine if not t.done}),
            residuals=dict(self.stats.residuals),
            started_at_ms=self.started_at,
            last_heartbeat_ms=self.last_heartbeat_ms,
        )

    # -- start and stop -----------------------------------------------------------------------

    async def start(self) -> None:
        self.producer = self.clients.producer(acks="all", linger_ms=0)
        await self.producer.start()
        self.reader = TopicReader(
            self.clients, self.snapshots_topic, self._on_snapshots, client_id="execution"
        )
        await self.reader.start()
        await self.reader.restore()
        if self.on_restored is not None:
            self.on_restored(self.table)
        self._seed_ledger()
        await self._reconcile()
        await self.desk.adopt_open_orders()
        self.reader.follow()
        self.consumer = self.clients.consumer(
            self.intents_topic,
            group_id=self.options.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            session_timeout_ms=self.options.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.options.session_timeout_ms // 3),
        )
        await self.consumer.start()
        self.ready = True
        self._tasks = [
            asyncio.create_task(self._consume(), name="intents"),
            asyncio.create_task(self._updates(), name="order-updates"),
            asyncio.create_task(self._work(), name="work"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        if self.options.nodes_topic is not None:
            self._tasks.append(asyncio.create_task(self._node_heartbeats(), name="node-heartbeat"))
        log.info("execution node for venue %s ready", self.venue.name)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set or a task fails (its error is raised)."""
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._publish(self._dirty)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._report_fills(), timeout=5)
        if self.options.nodes_topic is not None and self.ready:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._send_heartbeat(stopped=True), timeout=5)
        self.ready = False
        for closer in (
            getattr(self, "consumer", None),
            getattr(self, "reader", None),
            getattr(self, "producer", None),
        ):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.stop()

    # -- the snapshot table and the ledger ----------------------------------------------------

    def _on_snapshots(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        def skip(record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
            log.warning("snapshot at offset %d skipped: %s", record.offset, exc)

        self.table.ingest(records, skip)

    def _seed_ledger(self) -> None:
        adopted = adopt(self.ledger, self.table.snapshots(), self.venue.name)
        self._last_as_of.update(adopted.as_of)
        self._owners.update(adopted.owners)

    async def _reconcile(self) -> None:
        """What the venue holds beyond what the snapshots attribute waits for the next
        breakdown of that key (fills made just before a crash, before their snapshot)."""
        name = self.venue.name
        for world in sorted({w for w, _ in self._owners}):
            held = await self.venue.positions(account_of(world))
            for gap in reconcile(self.ledger, world, name, held):
                self.unattributed.found(gap)
                self.stats.unattributed += 1
                log.warning(
                    "venue %s holds %+g %s more in %s than the snapshots attribute",
                    name,
                    gap.qty,
                    gap.symbol,
                    gap.world,
                )

    # -- intents --------------------------------------------------------------------------------

    async def _consume(self) -> None:
        while not self._stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=100, max_records=1_000)
            now = self.clock()
            for tp, records in batch.items():
                for record in records:
                    self._on_intent(tp, record, now)
            if batch:
                self.wake.set()
            await self._commit()

    def _on_intent(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], now: int
    ) -> None:
        try:
            intent = DeltaIntent.model_validate_json(record.value or b"null")
        except ValidationError as exc:
            self.stats.invalid_intents += 1
            log.warning("intent at %s/%d is invalid, skipped: %s", tp, record.offset, exc)
            return
        result = self.book.offer(intent, now)
        counts = self.stats.intents
        counts[result.value] = counts.get(result.value, 0) + 1
        if result in (Offer.ACCEPTED, Offer.SUPERSEDED):
            self.plans.record(intent)
            self._plan_created.setdefault(intent.plan_id, intent.created_at)
            if intent.venue == self.venue.name:
                self._pending.add(tp, record.offset, intent)

    async def _commit(self) -> None:
        """Commit each partition up to its oldest intent still in hand."""
        now = self.clock()

        def finished(intent: DeltaIntent) -> bool:
            return self.book.finished(intent, now)

        offsets = {}
        lag = {}
        for tp in self.consumer.assignment():
            position = await self.consumer.position(tp)
            offsets[tp] = self._pending.commit_offset(tp, position, finished)
            high = self.consumer.highwater(tp)
            if high is not None:
                lag[tp.partition] = max(0, high - position)
        self.stats.intent_lag = lag
        if offsets:
            with contextlib.suppress(Exception):
                await self.consumer.commit(offsets)

    # -- orders ---------------------------------------------------------------------------------

    async def _work(self) -> None:
        interval = self.options.work_interval_ms / 1000
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=interval)
            self.wake.clear()
            self._absorb(await self.desk.step())
            if self._dirty:
                dirty, self._dirty = self._dirty, set()
                await self._publish(dirty)
            if self.costs.dirty:
                try:
                    await self._report_fills()
                except Exception as exc:  # the broker is away: trading goes on
                    log.warning("fill reports on %s not sent: %s", self.options.nodes_topic, exc)

    async def _updates(self) -> None:
        queue = self.venue.updates()
        while not self._stopping.is_set():
            update = await queue.get()
            self._absorb(self.desk.on_update(update))
            self.wake.set()

    def _absorb(self, touched: Touched) -> None:
        self._dirty |= touched.publish
        self._owners |= touched.follow
        if touched.again:
            self.wake.set()

    # -- snapshots ------------------------------------------------------------------------------

    def _positions_in(self, world_id: str | None) -> list[HeldPosition]:
        """The positions the snapshots of ``world_id`` (of every world for None) hold."""
        worlds = None if world_id is None else [world_id]
        return [p for s in self.table.snapshots(worlds) for p in s.positions()]

    def _converged_for(self, owner: Owner) -> str | None:
        """The plan ``owner``'s next snapshot reports as converged (``Plans.converged_for``)."""
        held = self.table.get(*owner)
        reported = None if held is None else held.converged_plan_id
        return self.plans.converged_for(owner, self.book, self._positions_in, reported)

    async def _publish(self, owners: set[Owner]) -> None:
        """Publish the snapshots of ``owners`` (``outgoing.node_snapshot``)."""
        if not owners:
            return
        now = self.clock()
        futures = []
        for owner in sorted(owners):
            held = self.table.get(*owner)
            as_of = next_as_of(now, self._last_as_of.get(owner, 0), held)
            self._last_as_of[owner] = as_of
            converged = self._converged_for(owner)
            if converged is not None and (held is None or held.converged_plan_id != converged):
                self._newly_converged(converged, now)
            snapshot = node_snapshot(owner, held, self.ledger, self.venue.name, as_of, converged)
            key = f"{owner[0]}|{owner[1]}".encode()
            futures.append(
                await self.producer.send(self.snapshots_topic, orjson.dumps(snapshot), key=key)
            )
        await asyncio.gather(*futures)
        self.stats.snapshots_published += len(futures)

    def _newly_converged(self, plan_id: str, now: int) -> None:
        """Count a plan this node reports converged for the first time, and how long it took
        since it was planned (plans only re-read after a restart are not timed)."""
        created = self._plan_created.get(plan_id)
        if created is None or plan_id in self._observed:
            return
        self._observed.add(plan_id)
        self.stats.plans_converged += 1
        self.metrics.time_to_converge.observe(max(0, now - created) / 1000)

    async def _heartbeat(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.options.heartbeat_ms / 1000)
            await self._publish(set(self._owners))
            for plan_id in self.plans.prune(self.book, self.clock()):
                self._plan_created.pop(plan_id, None)
                self._observed.discard(plan_id)

    # -- the node's own heartbeat (topics.nodes) ---------------------------------------------

    def heartbeat(self, *, stopped: bool = False) -> NodeHeartbeat:
        """What the node tells the service about itself now."""
        s = self.stats
        return NodeHeartbeat(
            node_id=self.node_id,
            venue=self.venue.name,
            started_at=self.started_at,
            sent_at=self.clock(),
            interval_ms=self.options.node_heartbeat_ms,
            ready=self.ready and not stopped,
            stopped=stopped,
            plans=self.plans_in_progress(),
            counts=NodeCounts(
                intents=sum(s.intents.values()) + s.invalid_intents,
                orders=s.orders,
                fills=s.fills,
                rejections=s.rejections,
                plans_converged=s.plans_converged,
            ),
            endpoint=self.endpoint,
        )

    async def _send_heartbeat(self, *, stopped: bool = False) -> None:
        topic = self.options.nodes_topic
        if topic is None:
            return
        beat = self.heartbeat(stopped=stopped)
        await self.producer.send_and_wait(
            topic, beat.model_dump_json().encode(), key=self.node_id.encode()
        )
        self.last_heartbeat_ms = beat.sent_at

    def fill_reports(self) -> list[PlanFills]:
        """The totals of the plans filled since the last call, as reports to publish (a plan
        whose totals are out of any range a report takes is logged and left out)."""
        now = self.clock()
        reports = []
        for plan_id, cost in self.costs.take_dirty().items():
            try:
                reports.append(
                    PlanFills(
                        node_id=self.node_id,
                        session=self.session,
                        venue=self.venue.name,
                        plan_id=plan_id,
                        sent_at=now,
                        fills=cost.fills,
                        filled_notional=cost.filled_notional,
                        fees=cost.fees,
                        slippage=cost.slippage,
                    )
                )
            except ValidationError as exc:
                log.error("fill report of plan %s not sent: %s", plan_id, exc)
        return reports

    async def _report_fills(self) -> None:
        """Publish the fill reports of plans with new fills (``PlanFills``, on the nodes
        topic); those not sent are reported again with the next fill or heartbeat."""
        topic = self.options.nodes_topic
        if topic is None:
            self.costs.dirty.clear()
            return
        reports = self.fill_reports()
        try:
            sent = [
                await self.producer.send(topic, r.model_dump_json().encode(), key=r.key.encode())
                for r in reports
            ]
            await asyncio.gather(*sent)
        except BaseException:
            self.costs.mark_dirty({r.plan_id for r in reports})
            raise

    async def _node_heartbeats(self) -> None:
        """A heartbeat at once, then every ``node_heartbeat_ms``; one that cannot be sent is
        logged and the next one tried (the node keeps trading)."""
        while not self._stopping.is_set():
            try:
                await self._send_heartbeat()
                await self._report_fills()
            except Exception as exc:  # the broker is away: trading goes on
                log.warning("heartbeat on %s not sent: %s", self.options.nodes_topic, exc)
            await asyncio.sleep(self.options.node_heartbeat_ms / 1000)
