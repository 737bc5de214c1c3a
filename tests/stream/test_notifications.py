"""Notifications on a real broker, to webhooks served by a local receiver: the topic gets
every event in order, the signature verifies, a receiver down for 30 s gets everything in
order per portfolio once back, one that always fails ends in the dead-letter topic and the
deliverer moves on, and a restarted deliverer neither loses nor re-delivers."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from consumers.clients import KafkaClients
from consumers.notifier import WebhookDeliverer
from consumers.producer import OutputProducer
from consumers.topics import ensure_topics
from consumers.webhooks import verify
from service.app import RebalancerApp
from service.engine.notices import notification_id
from service.messages import Notification
from service.metrics import Metrics
from service.settings import NotificationSettings, Settings, Webhook
from tests.kafka_support import Feed, Tail, fresh_settings
from tests.stream.test_stream_service import btc, snapshot, world_move
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.broker

SECRET = "s3cr3t-" + uuid.uuid4().hex


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if isinstance(found, Awaitable):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen in {timeout}s")
        await asyncio.sleep(0.05)


def command(portfolio: str, action: str, command_id: str) -> dict[str, Any]:
    return {
        "type": "operator_command",
        "command_id": command_id,
        "portfolio_id": portfolio,
        "action": action,
        "reason": "a test",
        "requested_by": "alice",
        "requested_at": 1_000,
    }


def webhooks_settings(servers: str, hooks: list[dict[str, Any]], **notify: Any) -> Settings:
    return fresh_settings(servers, notifications={"webhooks": hooks, **notify})


async def feed_portfolio(feed: Feed, app: RebalancerApp, portfolio: str, moves: int) -> None:
    """A snapshot of world a, then ``moves`` world moves (the first planned, the others held
    behind it) and a pause and a resume."""
    t = app.settings.topics
    await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(1.0)]))
    await until(lambda: len(app.snapshots) >= 1, "the snapshot in the table")
    for i in range(moves):
        after = {"a": 0.3 - 0.01 * (i + 1)}
        event = world_move(f"{portfolio}-e{i}", after, None, portfolio_id=portfolio)
        if i == 0:
            event["world_alloc_before"] = {"a": 0.3}
        await feed.event(t.allocations, event)
    await feed.event(t.allocations, command(portfolio, "pause", f"{portfolio}-c1"))
    await feed.event(t.allocations, command(portfolio, "resume", f"{portfolio}-c2"))


def per_portfolio(notes: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in notes:
        out.setdefault(n["portfolio_id"], []).append(n["notification_id"])
    return out


async def test_events_go_to_the_topic_and_to_signed_json_and_slack_webhooks(
    bootstrap_servers: str,
) -> None:
    async with Receiver() as receiver:
        hooks = [
            {"name": "json", "url": receiver.url("/json"), "secret": SECRET},
            {"name": "chat", "url": receiver.url("/slack"), "secret": SECRET, "format": "slack"},
        ]
        settings = webhooks_settings(bootstrap_servers, hooks)
        app = RebalancerApp(settings)
        await app.start()
        try:
            async with (
                Feed(bootstrap_servers) as feed,
                Tail(bootstrap_servers, settings.topics.notifications) as topic,
            ):
                await feed_portfolio(feed, app, "p1", moves=2)
                notes = await topic.until(lambda rs: len(rs) >= 4)
                kinds = [(n["kind"], n.get("action")) for n in notes]
                assert kinds == [
                    ("planned", None),
                    ("held", None),
                    ("command", "pause"),
                    ("command", "resume"),
                ]
                for n in notes:
                    Notification.model_validate(n)
                raw = list(topic.raw)
                await until(
                    lambda: (
                        len([r for r in receiver.accepted if r.path == "/json"]) >= 4
                        and len([r for r in receiver.accepted if r.path == "/slack"]) >= 4
                    ),
                    "both webhooks got the four",
                )
        finally:
            await app.stop()
    json_bodies = [r for r in receiver.accepted if r.path == "/json"]
    assert [r.body for r in json_bodies] == raw  # byte for byte as on the topic
    for r in receiver.accepted:
        ts = r.headers["x-rebalancer-timestamp"]
        assert abs(int(ts) - time.time() * 1000) < 120_000  # epoch ms, of this attempt
        assert r.headers["x-rebalancer-signature"].startswith("sha256=")
        assert verify(SECRET.encode(), ts, r.body, r.headers["x-rebalancer-signature"])
        assert not verify(b"wrong", ts, r.body, r.headers["x-rebalancer-signature"])
    slack = [orjson.loads(r.body) for r in receiver.accepted if r.path == "/slack"]
    assert [set(s) for s in slack] == [{"text"}] * 4
    assert slack[2]["text"].startswith("[p1] pause applied on all worlds by alice")


async def test_a_reached_plan_is_notified_once(bootstrap_servers: str) -> None:
    settings = fresh_settings(bootstrap_servers)
    t = settings.topics
    app = RebalancerApp(settings)
    await app.start()
    try:
        async with (
            Feed(bootstrap_servers) as feed,
            Tail(bootstrap_servers, t.notifications) as topic,
        ):
            await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(1.0)]))
            await feed.event(t.allocations, world_move("e1", {"a": 0.2}, {"a": 0.3}))
            (planned,) = await topic.count(1)
            converged = snapshot("a", "s1", [btc(0.667)], as_of=2_000)
            converged["converged_plan_id"] = planned["plan_id"]
            await feed.snapshot(t.snapshots, converged)
            reached = (await topic.count(2))[1]
            assert (reached["kind"], reached["plan_id"]) == ("reached", planned["plan_id"])
            assert reached["notification_id"] == notification_id(
                "reached", "default", "a", planned["plan_id"]
            )
    finally:
        await app.stop()
    again = RebalancerApp(settings)  # restarted: the world remembers it was notified
    await again.start()
    try:
        async with Tail(bootstrap_servers, t.notifications) as topic:
            await topic.count(2)
            assert len(await topic.quiet(1.5)) == 2
    finally:
        await again.stop()


async def test_a_receiver_down_for_30_s_gets_everything_in_order_per_portfolio(
    bootstrap_servers: str,
) -> None:
    receiver = Receiver()  # down: nothing listens on its port yet
    hooks = [{"url": receiver.url(), "secret": SECRET}]
    settings = webhooks_settings(
        bootstrap_servers, hooks, backoff_max_ms=4_000, max_attempts=100, max_elapsed_ms=120_000
    )
    app = RebalancerApp(settings)
    await app.start()
    try:
        async with (
            Feed(bootstrap_servers) as feed,
            Tail(bootstrap_servers, settings.topics.notifications) as topic,
        ):
            for portfolio in ("p1", "p2", "p3"):
                await feed_portfolio(feed, app, portfolio, moves=3)
            notes = await topic.count(15)
            down_since = time.monotonic()
            await asyncio.sleep(30)  # the outage itself, not a wait for Kafka
            assert receiver.requests == []
            failures = app.metrics.notification_failures.labels("webhook-0")._value.get()
            assert failures >= 3  # it kept trying meanwhile
            await receiver.start()
            await until(lambda: len(receiver.accepted) >= 15, "all after the outage", 60)
            assert time.monotonic() - down_since >= 30
            await asyncio.sleep(0.5)
    finally:
        await app.stop()
        await receiver.stop()
    got = [orjson.loads(r.body) for r in receiver.accepted]
    assert per_portfolio(got) == per_portfolio(notes)
    assert len({n["notification_id"] for n in got}) == 15


async def test_an_always_failing_receiver_ends_in_the_dead_letter_topic_and_the_next_goes(
    bootstrap_servers: str,
) -> None:
    async with Receiver(status=lambda r: 401 if b'"action":"pause"' in r.body else 500) as receiver:
        hooks = [{"name": "ops", "url": receiver.url("/hook/path-token"), "secret": SECRET}]
        settings = webhooks_settings(
            bootstrap_servers, hooks, max_attempts=3, backoff_initial_ms=50
        )
        app = RebalancerApp(settings)
        await app.start()
        t = settings.topics
        try:
            async with (
                Feed(bootstrap_servers) as feed,
                Tail(bootstrap_servers, t.dead_letters) as dead,
                Tail(bootstrap_servers, t.notifications) as topic,
            ):
                await feed_portfolio(feed, app, "p1", moves=1)
                notes = await topic.count(3)
                letters = await dead.count(3)
        finally:
            await app.stop()
    assert [(d["topic"], d["offset"]) for d in letters] == [(t.notifications, i) for i in range(3)]
    planned, pause, resume = letters
    assert planned["error_class"] == "UndeliverableError"
    assert "webhook ops (http://127.0.0.1:" in planned["error_message"]
    assert "undeliverable after 3 attempt(s)" in planned["error_message"]
    assert planned["error_message"].endswith("last: HTTP 500")
    assert "refused for good after 1 attempt(s)" in pause["error_message"]
    assert "500" in resume["error_message"]
    assert pause["error_message"].endswith("last: HTTP 401")
    for d in letters:
        assert SECRET not in orjson.dumps(d).decode()
        assert "path-token" not in d["error_message"]
    assert orjson.loads(base64.b64decode(planned["value_b64"])) == notes[0]
    assert len(receiver.requests) == 3 + 1 + 3


async def test_a_restarted_deliverer_neither_loses_nor_re_delivers(bootstrap_servers: str) -> None:
    settings = fresh_settings(bootstrap_servers)
    t = settings.topics
    clients = KafkaClients(bootstrap_servers, settings.security, "test")
    await ensure_topics(settings, clients)
    producer = OutputProducer(clients, t, client_id="test", writer_id="w", compression="none")
    await producer.start()
    refusing: set[str] = set()
    receiver = Receiver(status=lambda r: 503 if orjson.loads(r.body)["at"] in refusing else 200)
    await receiver.start()
    notify = NotificationSettings(backoff_initial_ms=50, backoff_max_ms=200)
    hook = Webhook(url=receiver.url(), secret=SECRET)

    def note(i: int, portfolio: str = "p1") -> Notification:
        return Notification(
            notification_id=f"n-{i}",
            kind="command",
            portfolio_id=portfolio,
            world_ids=[],
            at=i,
            text=f"note {i}",
        )

    async def deliverer() -> tuple[WebhookDeliverer, asyncio.Task[None]]:
        d = WebhookDeliverer(
            clients,
            producer,
            hook,
            "w",
            notify,
            topic=t.notifications,
            group_id=settings.group_id + ".notify.w",
            metrics=Metrics(),
            clock=lambda: int(time.time() * 1000),
            dead_letter_max_bytes=1024,
        )
        await d.start()
        return d, asyncio.create_task(d.run())

    def ids() -> list[str]:
        return [orjson.loads(r.body)["notification_id"] for r in receiver.accepted]

    try:
        first, task = await deliverer()
        await producer.publish_notifications([note(i) for i in range(5)])
        await until(lambda: len(ids()) == 5, "the first five")
        refusing.add(5)  # the sixth fails while the deliverer is stopped: not settled
        await producer.publish_notifications([note(5)])
        await until(lambda: len(receiver.requests) >= 7, "the sixth tried and failed")
        await first.stop()
        await asyncio.wait_for(task, 10)
        await producer.publish_notifications([note(i) for i in range(6, 10)])
        refusing.clear()
        second, task = await deliverer()
        await until(lambda: len(ids()) == 10, "the rest after the restart")
        await asyncio.sleep(1)  # nothing more arrives
        await second.stop()
        await asyncio.wait_for(task, 10)
    finally:
        await producer.stop()
        await receiver.stop()
    assert ids() == [f"n-{i}" for i in range(10)]
