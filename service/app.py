"""The stream service's composition root: settings in, a running service out (SPEC 4).

It builds the collaborators, and starts them in this order: the broker (embedded when none is
configured), the ops server, topics, producers, the snapshot table and the allocation state
restored from their topics, then the allocation consumer joins its group and ``/readyz``
turns ready. It stops them in the reverse order, after the work in hand. What happens per
event is in ``consumers.allocation_consumer`` and the order of its writes in
``consumers.unit_of_work``; between events, ``consumers.release_loop``; live policies,
``consumers.policy_loop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from consumers.allocation_consumer import AllocationConsumer
from consumers.clients import KafkaClients
from consumers.dead_letters import DeadLetters
from consumers.embedded_broker import EmbeddedBroker
from consumers.notifier import WebhookDeliverer
from consumers.ownership import Ownership
from consumers.policy_loop import PolicyLoop
from consumers.producer import OutputProducer
from consumers.reader import TopicReader
from consumers.release_loop import Gauges, ReleaseLoop
from consumers.topics import ensure_topics, undersized_topics
from consumers.transactions import (
    PartitionProducers,
    TransactionalUnitOfWork,
    require_transactions,
)
from consumers.unit_of_work import ORDER_OF_WORK, FaultHook, Unit, UnitOfWork, no_faults
from consumers.worker import LoopControls, Worker

from .api.auth import Authenticator, check_exposure
from .api.changes import Changes
from .api.routes import build_app
from .api.server import ApiServer
from .engine import EngineOptions, RebalanceEngine, Work
from .engine.choice import Chosen, PlannerChoice
from .engine.options import ApprovalRules, PaceRule, PacingRules
from .errors import describe
from .live.outlook import PolicyOutlook, world_outlooks
from .live.runner import PolicyRunner
from .messages.allocation import AllocationEvent
from .messages.command import OperatorCommand
from .metrics import Metrics
from .planner import MultiWorldProportionalRebalancer, PlannerOptions, Rebalancer
from .planner.mix import MixRebalancer
from .policies.cost_aware import CostAwareRebalancer
from .policies.costs import CostGate, CostModel
from .policies.gate import CorrectionGate
from .runtime import freeze_startup_heap
from .settings import Settings
from .state.allocations import AllocationState, ChangelogError
from .state.read_model import ReadModel
from .state.snapshots import SnapshotTable

log = logging.getLogger("rebalancer")

FAULT_STEPS = tuple(step.value for step in ORDER_OF_WORK)
"""The steps of the order of work a crash test can kill the process at."""

ALLOCATION_FETCH_WAIT_MS = 5
"""Short fetch waits on the allocation topic: an event is picked up within milliseconds even
where the broker does not answer a waiting fetch as soon as data arrives."""


STOP_AFTER_FAILURE_S = 15.0
"""How long the parts get to stop when the service stops because something failed."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Startable(Protocol):
    async def start(self) -> object: ...
    async def stop(self) -> None: ...


def _quietly(stop: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A stop that cannot keep the next ones from running (each part stops on its own)."""

    async def run() -> None:
        with contextlib.suppress(Exception):
            await stop()

    return run


def approval_rules(settings: Settings) -> ApprovalRules:
    """The configured approval mode, as the engine reads it."""
    approval = settings.approval
    return ApprovalRules(
        portfolios=frozenset(s.portfolio for s in approval.required if s.world is None),
        worlds=frozenset((s.portfolio, s.world) for s in approval.required if s.world),
        ttl_ms=approval.ttl_ms or settings.planner.intent_ttl_ms,
        four_eyes=frozenset(approval.four_eyes),
    )


def pacing_rules(settings: Settings) -> PacingRules:
    """The configured pacing, as the engine reads it."""
    pacing = settings.pacing

    def rule(share: float | None, steps: int, ratio: float | None) -> PaceRule | None:
        return None if share is None else PaceRule(share, steps, ratio)

    scoped = {
        (s.portfolio, s.world): rule(s.max_step_share, s.steps, s.ratio) for s in pacing.scopes
    }
    return PacingRules(
        default=rule(pacing.max_step_share, pacing.steps, pacing.ratio),
        portfolios={p: r for (p, w), r in scoped.items() if w is None},
        worlds={(p, w): r for (p, w), r in scoped.items() if w is not None},
    )


def planner_choice(settings: Settings) -> PlannerChoice:
    """The configured planner of each portfolio and world (``[[planners.choice]]``)."""
    costs = CostModel(**settings.costs.model_dump())
    by_portfolio: dict[str, Chosen] = {}
    by_world: dict[tuple[str, str], Chosen] = {}
    for rule in settings.planners.choice:
        base = rule.cost_aware.base if rule.cost_aware is not None else rule.planner
        planner: Rebalancer = (
            MixRebalancer() if base == "target_weight" else MultiWorldProportionalRebalancer()
        )
        if rule.cost_aware is not None:
            planner = CostAwareRebalancer(
                planner,
                costs,
                volatility=rule.cost_aware.volatility,
                volatility_by_symbol=rule.cost_aware.volatility_by_symbol,
                max_cost_to_benefit=rule.cost_aware.max_cost_to_benefit,
            )
        chosen = Chosen(planner, rule.scale_rule)
        if rule.world is None:
            by_portfolio[rule.portfolio] = chosen
        else:
            by_world[(rule.portfolio, rule.world)] = chosen
    return PlannerChoice(by_portfolio, by_world)


def cost_gates(settings: Settings) -> dict[str, CorrectionGate]:
    """Per rule with a ``cost_gate``, the gate its corrections pass (``[costs]`` for costs)."""
    costs = CostModel(**settings.costs.model_dump())
    return {
        rule.name: CorrectionGate(
            costs=costs,
            gate=CostGate(max_cost_to_benefit=rule.cost_gate.max_cost_to_benefit),
            volatility=rule.cost_gate.volatility,
            volatility_by_symbol=dict(rule.cost_gate.volatility_by_symbol),
        )
        for rule in settings.policies.rules
        if rule.cost_gate is not None
    }


class RebalancerApp:
    """One instance of the rebalancing service: its parts, started and stopped in order."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], int] = now_ms,
        fault: FaultHook = no_faults,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics()
        self.snapshots = SnapshotTable()
        self.metrics.count_snapshots(self.snapshots)
        self.state = AllocationState()
        self.engine = RebalanceEngine(
            self.state,
            self.snapshots,
            EngineOptions(
                planner=settings.planner,
                plan_settle_timeout_ms=settings.plan_settle_timeout_ms,
                max_snapshot_age_ms=settings.max_snapshot_age_ms,
                approval=approval_rules(settings),
                pacing=pacing_rules(settings),
                max_slice_notional=settings.slicing.max_slice_notional,
                cost_gates=cost_gates(settings),
                planners=planner_choice(settings),
            ),
        )
        self.writer_id = uuid.uuid4().hex
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.ownership = Ownership(settings.topics.allocations, self.lock, self.wake.set)
        self.ready = False
        self.broker: EmbeddedBroker | None = None
        self.bootstrap_servers = settings.bootstrap_servers or ""
        self.read_model = ReadModel()
        self.changes = Changes()
        self._previewer: RebalanceEngine | None = None
        check_exposure(settings.http_host, settings.api)
        authenticator = Authenticator(settings.api)
        self.http = ApiServer(
            build_app(self, authenticator, settings.api.max_body_bytes),
            settings.http_host,
            settings.http_port,
        )
        if authenticator.open:
            log.warning(
                "api.tokens is empty: the API on %s (loopback) treats every caller as admin",
                settings.http_host,
            )
        self._fault = fault
        self._restored = False
        self._stopping = asyncio.Event()
        self.controls = LoopControls(self.lock, self._stopping, clock)
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self.policies: PolicyLoop | None = None

    def is_ready(self) -> bool:
        """Restored and consuming (``/readyz``)."""
        return self.ready

    async def submit(self, command: OperatorCommand) -> None:
        """An operator's command onto the allocation topic, keyed by its portfolio, so the
        partition's owner applies it in order; returns once the broker has it."""
        topic = self.settings.topics.allocations
        key, value = command.portfolio_id.encode(), command.model_dump_json().encode()
        await self.producer.publish(await self.producer.batch(topic, [(key, value)]))

    @property
    def planner_options(self) -> PlannerOptions:
        return self.settings.planner

    @property
    def approval_rules(self) -> ApprovalRules:
        return self.engine.options.approval

    @property
    def cost_model(self) -> CostModel:
        costs = self.settings.costs
        return CostModel(costs.fee_bps, costs.half_spread_bps, costs.fixed_per_trade)

    @property
    def metrics_registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def policy_outlooks(self, portfolio_id: str) -> dict[str, list[PolicyOutlook]]:
        return world_outlooks(
            self.settings.policies,
            self.read_model.state,
            self.snapshots,
            portfolio_id,
            self.clock(),
        )

    def preview(self, event: AllocationEvent) -> Work:
        """A dry run of ``event`` on the read model's state (every portfolio, whoever owns
        it) and the live snapshots: the engine decides without writing anything."""
        if self._previewer is None:
            self._previewer = RebalanceEngine(
                self.read_model.state, self.snapshots, self.engine.options, self.engine.planner
            )
        return self._previewer.on_event(event, self.clock())

    async def _started(self, part: _Startable) -> None:
        await part.start()
        self._stack.push_async_callback(_quietly(part.stop))

    async def start(self) -> None:
        settings, topics, client = self.settings, self.settings.topics, self.settings.client_id
        if not settings.bootstrap_servers:
            self.broker = EmbeddedBroker().start()
            self._stack.callback(self.broker.stop)
            self.bootstrap_servers = self.broker.bootstrap_servers
            log.warning(
                "no bootstrap_servers configured: started the embedded broker at %s "
                "(in memory only; for development, demos and tests)",
                self.bootstrap_servers,
            )
        self.clients = KafkaClients(self.bootstrap_servers, settings.security, client)
        features = await self.clients.connect()
        log.info(
            "connected to %s (%s)",
            self.bootstrap_servers,
            "Apache Kafka: idempotent producer, transactions, exact end offsets"
            if features.full_kafka
            else "embedded broker: no idempotent producer, end offsets from fetches",
        )
        if self.exactly_once:
            require_transactions(features, self.bootstrap_servers)
        servers = self.clients
        await self._started(self.http)
        created = await ensure_topics(settings, servers)
        if created:
            log.info("created topics %s", ", ".join(created))
        for warning in await undersized_topics(settings, servers):
            log.warning("%s", warning)
        self.producer = OutputProducer(
            servers,
            topics,
            client_id=client,
            writer_id=self.writer_id,
            compression=settings.compression,
        )
        await self._started(self.producer)
        self.dead_letters = DeadLetters(
            self.producer,
            self.state,
            self.ownership,
            self.metrics,
            max_bytes=settings.dead_letter_max_bytes,
            clock=self.clock,
            on_pending=self.wake.set,
        )
        self.snapshot_reader = TopicReader(
            servers, topics.snapshots, self._on_snapshots, client_id=client
        )
        self.changelog_reader = TopicReader(
            servers, topics.changelog, self._on_changelog_records, client_id=client
        )
        self.plans_reader = TopicReader(
            servers, topics.plans, self._on_plan_records, client_id=f"{client}-reads"
        )
        self.nodes_reader = TopicReader(
            servers, topics.nodes, self._on_node_records, client_id=f"{client}-reads"
        )
        self.worker = Worker(
            self.engine,
            await self._unit_of_work(),
            self.ownership,
            self.changelog_reader,
            self.metrics,
        )
        if settings.policies.enabled:
            await self._start_policies(servers)
        await self._started(self.snapshot_reader)
        await self._started(self.changelog_reader)
        await asyncio.gather(self.snapshot_reader.restore(), self.changelog_reader.restore())
        self._restored = True
        log.info(
            "restored %d snapshots and %d world states", len(self.snapshots), len(self.state.worlds)
        )
        self.snapshot_reader.follow()
        # The changelog is followed for the read model (every instance answers reads for
        # every portfolio). The worker's state takes the others' writes too: each instance
        # writes only what it owns, so they are of portfolios it does not own (a sync, when
        # ownership moves, waits until the previous owner's are in).
        self.changelog_reader.follow()
        await self._started(self.plans_reader)
        self.plans_reader.follow()  # history loads in the background; reads show what is in
        await self._started(self.nodes_reader)
        self.nodes_reader.follow()  # the execution nodes' heartbeats, for GET /v1/nodes
        await self._start_consuming(servers)

    @property
    def exactly_once(self) -> bool:
        return self.settings.processing_guarantee == "exactly_once"

    async def _unit_of_work(self) -> Unit:
        """How work is written: in the order of work with a write-ahead (at-least-once), or
        one transaction per piece of work (exactly-once)."""
        if not self.exactly_once:
            return UnitOfWork(self.producer, self.state, self._fault)
        producers = PartitionProducers(self.clients, self.settings, writer_id=self.writer_id)
        await self._started(producers)
        log.info("processing guarantee: exactly-once (one transaction per piece of work)")
        return TransactionalUnitOfWork(
            producers, self.ownership, self.state, self.settings.group_id, self._fault
        )

    async def _start_policies(self, servers: KafkaClients) -> None:
        """The policy producer (policy events go to the allocation topic) and loop."""
        settings = self.settings
        producer = servers.producer(
            client_id=f"{settings.client_id}-policies",
            acks="all",
            compression_type=None if settings.compression == "none" else settings.compression,
        )
        await self._started(producer)
        self.policies = PolicyLoop(
            PolicyRunner(settings.policies, self.engine),
            producer,
            self.worker,
            self.controls,
            topic=settings.topics.allocations,
            interval_ms=settings.policies.check_interval_ms,
        )

    async def _start_consuming(self, servers: KafkaClients) -> None:
        """Join the group on the allocation topic and start the loops; then ready."""
        settings = self.settings
        self.consumer = servers.consumer(
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=ALLOCATION_FETCH_WAIT_MS,
        )
        self.ownership.bind(self.consumer)
        self.consumer.subscribe([settings.topics.allocations], listener=self.ownership)
        await self._started(self.consumer)
        allocations = AllocationConsumer(
            self.consumer, self.worker, self.dead_letters, self.controls
        )
        readers = (self.snapshot_reader, self.changelog_reader)
        release = ReleaseLoop(
            self.worker,
            self.dead_letters,
            self.snapshots,
            self.controls,
            wake=self.wake,
            interval_ms=settings.release_check_interval_ms,
            gauges=Gauges(self.metrics, self.worker, self.snapshots, self.consumer, readers),
        )
        freeze_startup_heap()
        self.ready = True
        self.metrics.ready.set(1)
        self._tasks = [
            asyncio.create_task(allocations.run(), name="consume"),
            asyncio.create_task(release.run(), name="release"),
        ]
        for deliverer in await self._start_notifications(servers):
            self._tasks.append(asyncio.create_task(deliverer.run(), name=deliverer.name))
        if self.policies is not None:
            self._tasks.append(asyncio.create_task(self.policies.run(), name="policies"))
            log.info("policies: %d rule(s) watching worlds", len(self.policies.runner.rules))
        log.info("ready: consuming %s as group %s", settings.topics.allocations, settings.group_id)

    async def _start_notifications(self, servers: KafkaClients) -> list[WebhookDeliverer]:
        """One deliverer per webhook, each its own consumer group: never under the lock."""
        settings = self.settings
        notifications = settings.notifications
        deliverers = []
        for webhook, name in zip(notifications.webhooks, notifications.names(), strict=True):
            deliverer = WebhookDeliverer(
                servers,
                self.producer,
                webhook,
                name,
                notifications,
                topic=settings.topics.notifications,
                group_id=f"{settings.group_id}.notify.{name}",
                metrics=self.metrics,
                clock=self.clock,
                dead_letter_max_bytes=settings.dead_letter_max_bytes,
            )
            await self._started(deliverer)
            deliverers.append(deliverer)
        return deliverers

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT; then finish the event in hand, commit, leave, return."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self.start()
            stopped = asyncio.create_task(self._stopping.wait())
            await asyncio.wait([stopped, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in self._tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        except BaseException:
            # after a failed start or loop, the parts already started (the embedded broker's
            # process among them) are stopped too, not left behind; briefly, as the broker
            # may be what failed
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.stop(), STOP_AFTER_FAILURE_S)
            raise
        await self.stop()

    async def stop(self) -> None:
        """Finish the work in hand, then stop the parts in the reverse order of their start."""
        self._stopping.set()
        self.changes.close()  # event streams end, so the HTTP server can stop
        async with self.lock:  # the event in hand is finished and committed
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.ready = False
        await self._stack.aclose()

    # -- what the readers deliver -------------------------------------------------------------

    def _on_snapshots(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        applied = self.snapshots.ingest(
            records,
            self.dead_letters.reject_snapshot,
            now_ms=self.clock(),
            max_skew_ms=self.settings.max_clock_skew_ms,
        )
        if applied:
            self.wake.set()
            if self.policies is not None:
                self.policies.snapshots_changed(records)

    def _on_changelog_records(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply state records. One that cannot be read stops the service (``ChangelogError``
        names it): skipping it would forget a world, or a plan half published."""
        for record in records:
            try:
                self.read_model.apply_changelog(record.key or b"", record.value)
                if self._restored and ("writer", self.producer.writer) in tuple(
                    record.headers or ()
                ):
                    continue  # our own write, applied when we made it
                self.state.apply(record.key or b"", record.value)
            except ChangelogError as exc:
                where = f"{record.topic}[{record.partition}]@{record.offset}"
                raise ChangelogError(f"{where}: {exc}") from None
        if records:
            self.changes.bump()

    def _on_plan_records(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Plan records into the read model's history. One that cannot be read is skipped
        (logged): the history is for reading, and the service did not write it this way."""
        for record in records:
            try:
                self.read_model.apply_plan(record.value)
            except ValueError as exc:
                where = f"{record.topic}[{record.partition}]@{record.offset}"
                log.warning("plan record %s not added to the history: %s", where, exc)
        if records:
            self.changes.bump()

    def _on_node_records(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Execution nodes' heartbeats into the read model; one that cannot be read is
        skipped (logged)."""
        for record in records:
            try:
                self.read_model.apply_node(record.key, record.value)
            except ValueError as exc:
                where = f"{record.topic}[{record.partition}]@{record.offset}"
                detail = describe(exc) if isinstance(exc, ValidationError) else str(exc)
                log.warning("node heartbeat %s skipped: %s", where, detail)
        if records:
            self.changes.bump()
