"""The stream service's composition root: settings in, a running service out (SPEC 4).

Start-up: broker (embedded when none is configured), topics, the producer, the snapshot table
and the allocation state restored from their topics, half-published plans finished, then the
consumer group joins and ``/readyz`` turns ready. Per event, in this order: write-ahead of the
plan to the changelog, intents, plan record, state to the changelog, offset commit. A crash
anywhere re-delivers the event: a plan found in the write-ahead is republished as it was; an
event found applied is skipped; otherwise it is planned again on unchanged state, same ids.

With ``policies.enabled``, a policy loop evaluates the rules of the portfolios this instance
owns (every ``check_interval_ms``, and for a watched world when its snapshots change) and
publishes each trigger as a ``policy_rebalance`` event to the allocation topic, keyed by
portfolio: the consumer then carries it out like any other event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from consumers.embedded_broker import EmbeddedBroker
from consumers.ownership import Ownership
from consumers.producer import OutputProducer, dead_letter_for
from consumers.reader import TopicReader
from consumers.topics import ensure_topics
from consumers.unit_of_work import FaultHook, Step, UnitOfWork, no_faults

from .engine import EngineOptions, RebalanceEngine, Work
from .errors import InputError, describe
from .http import OpsServer
from .live.runner import PolicyRunner
from .messages import topic_event_adapter
from .metrics import Metrics
from .runtime import freeze_startup_heap
from .settings import Settings
from .state.allocations import AllocationState, ChangelogError, Record, dead_letters_key
from .state.snapshots import SnapshotTable

log = logging.getLogger("rebalancer")

FAULT_STEPS = tuple(step.value for step in Step)
"""The steps of the order of work a crash test can kill the process at."""


ALLOCATION_FETCH_WAIT_MS = 5
"""Short fetch waits on the allocation topic: an event is picked up within milliseconds even
where the broker does not answer a waiting fetch as soon as data arrives."""


WARM_SHARE = 20
"""After rebuilding position tables for t seconds, wait 20 t before the next rebuild: warming
takes at most a twentieth of the service's time (a table of a million rows takes about 0.1 s
to assemble), and a plan finds a stale table at worst, never a wrong one."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_key(key: bytes | None, portfolio_id: str) -> None:
    """An allocation event's Kafka key must be its portfolio: consumption follows the key and
    ownership the portfolio, so a mismatch would let two instances write one portfolio."""
    if key != portfolio_id.encode():
        shown = "no key" if key is None else f"key {key.decode(errors='replace')!r}"
        raise InputError(
            f"portfolio_id: the record has {shown}, but allocation events must be keyed by "
            f"their portfolio_id {portfolio_id!r}"
        )


class RebalancerApp:
    """One instance of the rebalancing service."""

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
            ),
        )
        self.writer_id = uuid.uuid4().hex
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.ownership = Ownership(settings.topics.allocations, self.lock, self.wake.set)
        self.ready = False
        self._restored = False
        self.broker: EmbeddedBroker | None = None
        self.bootstrap_servers = settings.bootstrap_servers or ""
        self.http = OpsServer(
            self.metrics, lambda: self.ready, settings.http_host, settings.http_port
        )
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending_dead_letters: list[tuple[ConsumerRecord[bytes, bytes], Exception, str]] = []
        self.policy_runner = (
            PolicyRunner(settings.policies, self.engine) if settings.policies.enabled else None
        )
        self.policy_wake = asyncio.Event()
        self._dirty_worlds: set[str] = set()
        self._refused_releases: set[str] = set()
        self._next_warm = 0.0
        self._fault = fault

    # -- start and stop -------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.settings.bootstrap_servers:
            self.broker = EmbeddedBroker().start()
            self.bootstrap_servers = self.broker.bootstrap_servers
            log.warning(
                "no bootstrap_servers configured: started the embedded broker at %s "
                "(in memory only; for development, demos and tests)",
                self.bootstrap_servers,
            )
        await self.http.start()
        topics = self.settings.topics
        created = await ensure_topics(self.settings, self.bootstrap_servers)
        if created:
            log.info("created topics %s", ", ".join(created))
        client = self.settings.client_id
        self.producer = OutputProducer(
            self.bootstrap_servers,
            topics,
            client_id=client,
            writer_id=self.writer_id,
            compression=self.settings.compression,
        )
        await self.producer.start()
        self.work_unit = UnitOfWork(self.producer, self.state, self._fault)
        if self.policy_runner is not None:  # policy events go to the allocation topic
            self.policy_producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=f"{client}-policies",
                acks="all",
                enable_idempotence=False,
                compression_type=(
                    None if self.settings.compression == "none" else self.settings.compression
                ),
            )
            await self.policy_producer.start()
        self.snapshot_reader = TopicReader(
            self.bootstrap_servers, topics.snapshots, self._on_snapshots, client_id=client
        )
        self.changelog_reader = TopicReader(
            self.bootstrap_servers, topics.changelog, self._on_changelog_records, client_id=client
        )
        await self.snapshot_reader.start()
        await self.changelog_reader.start()
        await asyncio.gather(self.snapshot_reader.restore(), self.changelog_reader.restore())
        self._restored = True
        log.info(
            "restored %d snapshots and %d world states",
            len(self.snapshots),
            len(self.state.worlds),
        )
        self.snapshot_reader.follow()
        # The changelog is not followed: each instance writes only the state of portfolios it
        # owns, so others' writes matter only when ownership moves, and _sync catches up then.
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=client,
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=ALLOCATION_FETCH_WAIT_MS,
        )
        self.ownership.bind(self.consumer)
        self.consumer.subscribe([topics.allocations], listener=self.ownership)
        await self.consumer.start()
        freeze_startup_heap()
        self.ready = True
        self.metrics.ready.set(1)
        self._tasks = [
            asyncio.create_task(self._consume(), name="consume"),
            asyncio.create_task(self._release_loop(), name="release"),
        ]
        if self.policy_runner is not None:
            self._tasks.append(asyncio.create_task(self._policy_loop(), name="policies"))
            log.info("policies: %d rule(s) watching worlds", len(self.policy_runner.rules))
        log.info("ready: consuming %s as group %s", topics.allocations, self.settings.group_id)

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT; then finish the event in hand, commit, leave, return."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self.start()
        stopped = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([stopped, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in self._tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        await self.stop()

    async def stop(self) -> None:
        self._stopping.set()
        async with self.lock:  # the event in hand is finished and committed
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.ready = False
        for closer in (
            getattr(self, "consumer", None),
            getattr(self, "snapshot_reader", None),
            getattr(self, "changelog_reader", None),
            getattr(self, "producer", None),
            getattr(self, "policy_producer", None),
        ):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.stop()
        await self.http.stop()
        if self.broker is not None:
            self.broker.stop()

    # -- inputs -------------------------------------------------------------------------------

    def _on_snapshots(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        applied = self.snapshots.ingest(
            records,
            self._reject_snapshot,
            now_ms=self.clock(),
            max_skew_ms=self.settings.max_clock_skew_ms,
        )
        if applied:
            self.wake.set()
            if self.policy_runner is not None:
                watched = self.policy_runner.worlds
                for record in records:
                    world = (record.key or b"").partition(b"|")[0].decode(errors="replace")
                    if world in watched:
                        self._dirty_worlds.add(world)
                if self._dirty_worlds:
                    self.policy_wake.set()

    def _reject_snapshot(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        reason = describe(exc) if isinstance(exc, ValidationError) else str(exc)
        self._pending_dead_letters.append((record, exc, reason))
        self.wake.set()

    def _on_changelog_records(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            self._on_changelog(record)

    def _on_changelog(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply a state record. One that cannot be read stops the service (``ChangelogError``
        names it): skipping it would forget a world, or a plan half published."""
        if self._restored and ("writer", self.producer.writer) in tuple(record.headers or ()):
            return  # our own write, applied when we made it
        try:
            self.state.apply(record.key or b"", record.value)
        except ChangelogError as exc:
            raise ChangelogError(
                f"{record.topic}[{record.partition}]@{record.offset}: {exc}"
            ) from None

    async def _flush_dead_letters(self) -> None:
        """Dead-letter the bad snapshots read since the last flush, except those an earlier
        run dead-lettered already (a restore reads the whole topic again), then remember in
        the changelog how far each partition has been dead-lettered.

        Every instance reads every snapshot partition; snapshot partition p is dead-lettered
        by the owner of allocation partition p mod n, so each bad snapshot once. Until this
        instance is assigned partitions, its bad snapshots wait."""
        if not self.ownership.has_partitions():
            return
        letters, self._pending_dead_letters = self._pending_dead_letters, []
        done = self.state.dead_lettered
        fresh = [
            item
            for item in letters
            if self.ownership.owns_partition_of(item[0].partition)
            and item[0].offset >= done.get((item[0].topic, item[0].partition), 0)
        ]
        if not fresh:
            return
        await self._publish_dead_letters(fresh)
        reached: dict[tuple[str, int], int] = {}
        for record, _, _ in fresh:
            slot = (record.topic, record.partition)
            reached[slot] = max(reached.get(slot, 0), record.offset + 1)
        marks: list[Record] = [
            (dead_letters_key(*slot), orjson.dumps(end)) for slot, end in reached.items()
        ]
        await self.producer.write_changelog(marks)
        self.state.apply_all(marks)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], exc: Exception, message: str
    ) -> None:
        await self._publish_dead_letters([(record, exc, message)])

    async def _publish_dead_letters(
        self, items: list[tuple[ConsumerRecord[bytes, bytes], Exception, str]]
    ) -> None:
        """Publish dead letters in one go. A failure other than a letter's size (which the
        producer handles by keeping fewer of the original bytes) is the broker's: it is
        raised, and the input is read again after the restart, nothing lost."""
        now = self.clock()
        limit = self.settings.dead_letter_max_bytes
        letters = [
            dead_letter_for(
                r.topic, r.partition, r.offset, r.key, r.value, exc, msg, now, max_bytes=limit
            )
            for r, exc, msg in items
        ]
        try:
            await self.producer.dead_letters(letters)
        except KafkaError as exc:
            log.error(
                "could not publish %d dead letter(s) to %s: %s",
                len(letters),
                self.settings.topics.dead_letters,
                exc,
            )
            raise
        for record, _, message in items:
            self.metrics.events_dead_lettered.labels(record.topic).inc()
            log.warning(
                "dead-lettered %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                message[:2000],
            )

    # -- the work -----------------------------------------------------------------------------

    def owned_portfolios(self) -> set[str]:
        """The portfolios with state that this instance owns."""
        names = {p for p, _ in self.state.worlds} | set(self.state.portfolios)
        return self.ownership.owned(names | set(self.state.pending))

    async def _sync(self) -> None:
        """After an assignment change: catch up with the changelog (the previous owner's
        writes) and finish any plan it left half published."""
        self.ownership.needs_sync = False
        await self.changelog_reader.caught_up()
        owned = self.owned_portfolios()
        for portfolio_id in sorted(self.state.pending):
            if portfolio_id not in owned:
                continue
            pending = self.state.pending_plan(portfolio_id)  # unreadable: ChangelogError stops
            log.warning("finishing plan %s left half published", pending.record["plan_id"])
            await self._carry_out(self.engine.resume(pending))
            self.metrics.plans_resumed.inc()

    async def _consume(self) -> None:
        while not self._stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=200, max_records=200)
            for tp, records in batch.items():
                for record in records:
                    if self._stopping.is_set():
                        return
                    async with self.lock:
                        if self.ownership.needs_sync:
                            await self._sync()
                        await self._handle_event(record)
                        await self.work_unit.commit(self.consumer, tp, record.offset)

    async def _handle_event(self, record: ConsumerRecord[bytes, bytes]) -> None:
        started = time.perf_counter()
        self.metrics.events_consumed.inc()
        try:
            if record.value is None:
                raise InputError("allocation event is empty (null value)")
            event = topic_event_adapter.validate_json(record.value)
            check_key(record.key, event.portfolio_id)
            work = self.engine.on_event(event, self.clock())
        except ValidationError as exc:
            await self._dead_letter(record, exc, describe(exc))
            return
        except InputError as exc:
            await self._dead_letter(record, exc, str(exc))
            return
        except Exception as exc:  # a poison message: our bug, but never a stopped service
            log.exception(
                "deciding %s[%d]@%d failed", record.topic, record.partition, record.offset
            )
            await self._dead_letter(record, exc, f"the service could not decide it: {exc!r}")
            return
        if work.duplicate:
            self.metrics.events_duplicate.inc()
            return
        if work.superseded:
            self.metrics.policy_superseded.inc()
            log.info("policy event %s measured before its world's latest plan", event.event_id)
        if work.before_mismatches:
            self.metrics.before_mismatch.inc(work.before_mismatches)
            log.warning(
                "event %s: before allocation differs from the service's state; "
                "planned from the state",
                event.event_id,
            )
        await self._carry_out(work)
        if work.held_worlds:
            # one count per event, labelled with all its reasons (as its held record says)
            self.metrics.events_held.labels(", ".join(work.held_reasons)).inc()
        if work.plan is not None:
            self.metrics.events_planned.inc()
        self.metrics.plan_latency.observe(time.perf_counter() - started)

    async def _carry_out(self, work: Work) -> None:
        """Carry out a work in the order of work, and count what it published."""
        published = await self.work_unit.carry_out(work)
        if published.intents:
            self.metrics.intents_published.inc(published.intents)
        for status in published.record_statuses:
            self.metrics.plans_published.labels(status).inc()

    async def _release_loop(self) -> None:
        interval = self.settings.release_check_interval_ms / 1000
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=interval)
            self.wake.clear()
            async with self.lock:
                if self._stopping.is_set():
                    return
                if self.ownership.needs_sync and self.consumer.assignment():
                    await self._sync()
                if self._pending_dead_letters:
                    await self._flush_dead_letters()
                self._warm_tables()
                for work in self.engine.released_work(self.clock(), self.owned_portfolios()):
                    if work.refused is not None:
                        self._report_refused_release(work.refused)
                        continue
                    started = time.perf_counter()
                    await self._carry_out(work)
                    if work.dropped is not None:
                        self.metrics.policy_dropped.inc()
                        log.warning("held policy correction dropped: %s", work.dropped)
                    if work.records:
                        planned = len(work.records[0]["coalesced_event_ids"])
                        self.metrics.events_planned.inc(planned)
                        self.metrics.plan_latency.observe(time.perf_counter() - started)
                await self._update_gauges()

    def _report_refused_release(self, reason: str) -> None:
        """Held changes that cannot be planned yet stay held; say so once per reason, not on
        every release check."""
        if reason not in self._refused_releases:
            self._refused_releases.add(reason)
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

    async def _policy_loop(self) -> None:
        """Evaluate policies every ``check_interval_ms`` (all watched worlds) and when a watched
        world's snapshots change (that world); publish what triggers."""
        runner = self.policy_runner
        assert runner is not None
        interval = self.settings.policies.check_interval_ms / 1000
        topic = self.settings.topics.allocations
        next_full = 0.0
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.policy_wake.wait(), timeout=max(0.0, next_full - time.monotonic())
                )
            self.policy_wake.clear()
            worlds: set[str] | None = None
            if time.monotonic() >= next_full:
                next_full = time.monotonic() + interval
                self._dirty_worlds.clear()
            else:
                worlds, self._dirty_worlds = self._dirty_worlds, set()
                if not worlds:
                    continue
            async with self.lock:  # between two pieces of work, never inside one
                if self._stopping.is_set():
                    return
                if self.ownership.needs_sync and self.consumer.assignment():
                    await self._sync()
                now = self.clock()
                evaluations = runner.evaluate(now, self.ownership.owns, worlds)
            for ev in evaluations:
                self.metrics.policy_evaluations.labels(ev.policy, ev.outcome).inc()
                if ev.event is None:
                    continue
                log.info(
                    "policy %s triggers world %s of %s: %s",
                    ev.policy,
                    ev.world_id,
                    ev.portfolio_id,
                    ev.detail,
                )
                try:
                    await self.policy_producer.send_and_wait(
                        topic,
                        key=ev.portfolio_id.encode(),
                        value=ev.event.model_dump_json().encode(),
                    )
                except KafkaError as exc:
                    log.error("could not publish policy event %s: %s", ev.event.event_id, exc)
                    continue
                runner.published(ev.event, now)
                self.metrics.policy_triggers.labels(ev.policy, ev.event.trigger).inc()

    async def _update_gauges(self) -> None:
        m = self.metrics
        m.state_snapshots.set(len(self.snapshots))
        m.state_positions.set(self.snapshots.position_count)
        m.state_worlds.set(len(self.state.worlds))
        m.worlds_in_flight.set(sum(1 for w in self.state.worlds.values() if w.in_flight))
        m.worlds_held.set(sum(1 for w in self.state.worlds.values() if w.held))
        with contextlib.suppress(KafkaError, AssertionError):
            for tp in self.consumer.assignment():
                high = self.consumer.highwater(tp)
                if high is not None:
                    lag = max(0, high - await self.consumer.position(tp))
                    m.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
            for reader in (self.snapshot_reader, self.changelog_reader):
                for partition, lag in (await reader.lag()).items():
                    m.consumer_lag.labels(reader.topic, str(partition)).set(lag)
