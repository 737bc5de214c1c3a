"""Delivering notifications to webhooks: one consumer group per webhook, apart from planning.

Each configured webhook has its own task and consumer (group ``{group_id}.notify.{name}``) on
the notifications topic. It never takes the service's lock and shares nothing with planning
but the event loop (an attempt is an awaited HTTP request), so a slow or dead receiver delays
only its own notifications.

Order: notifications are keyed by portfolio, so one portfolio's are in one partition, and a
partition's notifications are delivered one after the other: the next waits until the one
before was accepted or dead-lettered. Partitions are delivered side by side.

Nothing lost, nothing flooded: an offset is committed only once its notification was
accepted (2xx) or dead-lettered, so a restart starts from the first notification not yet
settled; at most the one in hand is delivered again, with the same ``notification_id``.

Undeliverable: after ``max_attempts`` attempts, or when ``max_elapsed_ms`` has passed since
the first, or at once on an answer another attempt cannot change (4xx other than 408, 425,
429), the notification goes to the dead-letter topic with the webhook's name, scheme and host
and the last failure; the webhook moves on to the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError

from service.errors import describe
from service.messages import Notification
from service.metrics import Metrics
from service.settings import NotificationSettings, Webhook

from .clients import KafkaClients
from .producer import OutputProducer, dead_letter_for
from .webhooks import Attempt, Backoff, attempt, where

log = logging.getLogger("rebalancer")

FETCH_RECORDS = 100


class UndeliverableError(Exception):
    """A notification a webhook never accepted (the dead letter's ``error_class``)."""


class WebhookDeliverer:
    """Delivers the notifications topic to one webhook, in order per partition."""

    def __init__(
        self,
        clients: KafkaClients,
        producer: OutputProducer,
        webhook: Webhook,
        name: str,
        settings: NotificationSettings,
        *,
        topic: str,
        group_id: str,
        metrics: Metrics,
        clock: Callable[[], int],
        dead_letter_max_bytes: int,
        backoff: Backoff | None = None,
    ) -> None:
        self.clients = clients
        self.producer = producer
        self.webhook = webhook
        self.name = name
        self.settings = settings
        self.topic = topic
        self.group_id = group_id
        self.metrics = metrics
        self.clock = clock
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.backoff = backoff or Backoff.of(settings)
        self.consumer: AIOKafkaConsumer | None = None
        self._http: httpx.AsyncClient | None = None
        self._stopping = asyncio.Event()

    @property
    def label(self) -> str:
        """How logs and dead letters name the webhook (no path, query or secret)."""
        return f"{self.name} ({where(self.webhook.url)})"

    def _longest_hold_ms(self) -> int:
        """The longest a notification can be in hand: every attempt timing out, every wait."""
        s = self.settings
        return s.max_elapsed_ms + s.timeout_ms + s.backoff_max_ms

    async def start(self) -> None:
        self.consumer = self.clients.consumer(
            self.topic,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=self._longest_hold_ms() + 60_000,
        )
        await self.consumer.start()
        self._http = httpx.AsyncClient(follow_redirects=False)

    async def stop(self) -> None:
        self._stopping.set()
        if self._http is not None:
            await self._http.aclose()
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()

    async def run(self) -> None:
        assert self.consumer is not None, "start() first"
        log.info("notifications: delivering %s to %s", self.topic, self.label)
        while not self._stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
            if batches:
                await asyncio.gather(*(self._partition(tp, rs) for tp, rs in batches.items()))

    async def _partition(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """One partition's notifications, one after the other; each offset committed once
        the notification is settled (accepted or dead-lettered)."""
        assert self.consumer is not None
        for record in records:
            if self._stopping.is_set():
                return
            if not await self.deliver(record):
                return  # stopping: not settled, delivered again after the restart
            try:
                await self.consumer.commit({tp: record.offset + 1})
            except (CommitFailedError, KafkaError) as exc:
                # the partition moved: its next owner starts from the last commit, so this
                # notification may be delivered once more (same notification_id)
                log.warning("notifications %s: commit failed: %s", self.label, exc)
                return

    async def deliver(self, record: ConsumerRecord) -> bool:
        """Attempt until accepted, or dead-letter with the reason; False when stopped first
        (the notification is not settled)."""
        value: bytes = record.value or b""
        try:
            note = Notification.model_validate_json(value)
        except ValidationError as exc:
            await self._dead_letter(record, f"not a notification: {describe(exc)}")
            return True
        assert self._http is not None
        s = self.settings
        started = time.monotonic()
        tries = 0
        last = Attempt(False)
        while True:
            tries += 1
            last = await attempt(
                self._http, self.webhook, note, value, self.clock(), s.timeout_ms / 1000
            )
            if last.ok:
                self.metrics.notifications_delivered.labels(self.name).inc()
                return True
            self.metrics.notification_failures.labels(self.name).inc()
            wait_ms = self.backoff.delay_ms(tries)
            elapsed_ms = (time.monotonic() - started) * 1000
            if last.permanent or tries >= s.max_attempts or elapsed_ms + wait_ms > s.max_elapsed_ms:
                break
            if tries == 1:
                log.warning(
                    "notification %s to %s failed (%s); retrying",
                    note.notification_id,
                    self.label,
                    last.error,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait_ms / 1000)
            if self._stopping.is_set():
                return False
        elapsed = time.monotonic() - started
        why = "refused for good" if last.permanent else "undeliverable"
        await self._dead_letter(
            record,
            f"webhook {self.label}: notification {note.notification_id} {why} after {tries} "
            f"attempt(s) over {elapsed:.1f} s; last: {last.error}",
        )
        return True

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        letter = dead_letter_for(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            UndeliverableError(reason),
            reason,
            self.clock(),
            max_bytes=self.dead_letter_max_bytes,
        )
        await self.producer.dead_letters([letter])
        self.metrics.notifications_dead_lettered.labels(self.name).inc()
        log.error("dead-lettered notification %s[%d]@%d: %s", *_at(record), reason)


def _at(record: ConsumerRecord) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset
