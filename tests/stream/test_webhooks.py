"""Webhook requests without a broker: the signature, the formats, the backoff, one attempt
against a local receiver, and that neither secret nor URL path shows in what is reported."""

from __future__ import annotations

import hashlib
import hmac
import random

import httpx
import orjson
import pytest

from consumers.webhooks import (
    Backoff,
    attempt,
    body_of,
    signature,
    slack_text,
    verify,
    where,
)
from service.messages import Notification
from service.settings import NotificationSettings, Webhook
from tests.webhook_receiver import Receiver

NOTE = Notification(
    notification_id="n-1",
    kind="planned",
    portfolio_id="p1",
    world_ids=["a"],
    at=1_000,
    plan_id="plan-1",
    event_ids=["e1"],
    trigger="allocation",
    intents=2,
    text="[p1] plan plan-1 planned for world a (allocation change): 2 intent(s)",
)


def test_the_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"k", b"1700000000000." + body, hashlib.sha256).hexdigest()
    assert signature(b"k", 1_700_000_000_000, body) == f"sha256={expected}"
    assert verify(b"k", "1700000000000", body, f"sha256={expected}")
    assert not verify(b"other", "1700000000000", body, f"sha256={expected}")
    assert not verify(b"k", "1700000000001", body, f"sha256={expected}")
    assert not verify(b"k", "1700000000000", body + b" ", f"sha256={expected}")
    assert not verify(b"k", "not-a-time", body, f"sha256={expected}")


def test_json_sends_the_notification_as_published_and_slack_a_text_line() -> None:
    value = NOTE.model_dump_json().encode()
    assert body_of(NOTE, value, "json") == value
    slack = orjson.loads(body_of(NOTE, value, "slack"))
    assert slack == {"text": f"{NOTE.text} · n-1"}
    assert slack_text(NOTE).startswith("[p1] plan plan-1 planned")


def test_where_keeps_scheme_host_and_port_only() -> None:
    assert where("https://hooks.slack.com/services/T0/B0/XYZ?x=1") == "https://hooks.slack.com"
    assert where("http://user:pw@127.0.0.1:8080/hook/secret") == "http://127.0.0.1:8080"


def test_backoff_doubles_up_to_the_maximum_with_the_upper_half_random() -> None:
    backoff = Backoff(500, 30_000, random.Random(7))
    for n, full in [(1, 500), (2, 1_000), (3, 2_000), (6, 16_000), (7, 30_000), (40, 30_000)]:
        for _ in range(20):
            assert full / 2 <= backoff.delay_ms(n) <= full
    assert Backoff.of(NotificationSettings()).initial_ms == 500
    # the defaults outlast a receiver down for 30 s: the shortest waits (half of each) of
    # every retry add up to more than that, so the notification is still being tried
    s = NotificationSettings()
    shortest = sum(
        min(s.backoff_max_ms, s.backoff_initial_ms * 2 ** (n - 1)) / 2
        for n in range(1, s.max_attempts)
    )
    assert shortest > 60_000


@pytest.mark.parametrize(
    ("code", "ok", "permanent"),
    [
        (200, True, False),
        (204, True, False),
        (500, False, False),
        (429, False, False),
        (401, False, True),
    ],
)
async def test_one_attempt_signs_and_reports_the_answer(
    code: int, ok: bool, permanent: bool
) -> None:
    secret = "s3cr3t-value"
    async with Receiver(status=lambda _: code) as receiver, httpx.AsyncClient() as client:
        hook = Webhook(url=receiver.url("/hook/path-token"), secret=secret)
        value = NOTE.model_dump_json().encode()
        result = await attempt(client, hook, NOTE, value, 1_234, 5.0)
    assert (result.ok, result.permanent) == (ok, permanent)
    (got,) = receiver.requests
    assert got.body == value
    assert got.headers["x-rebalancer-timestamp"] == "1234"
    assert verify(secret.encode(), "1234", got.body, got.headers["x-rebalancer-signature"])
    assert got.headers["x-rebalancer-notification-id"] == "n-1"
    assert secret not in result.error
    assert "path-token" not in result.error


async def test_a_receiver_that_is_down_or_slow_is_a_failed_attempt() -> None:
    receiver = Receiver()  # never started: connections refused
    hook = Webhook(url=receiver.url("/hook/path-token"), secret="s3cr3t-value")
    value = NOTE.model_dump_json().encode()
    async with httpx.AsyncClient() as client:
        down = await attempt(client, hook, NOTE, value, 1, 2.0)
        assert (down.ok, down.permanent) == (False, False)
        assert "path-token" not in down.error
        assert "s3cr3t" not in down.error
        async with Receiver(port=receiver.port, delay=1.0):
            slow = await attempt(client, hook, NOTE, value, 1, 0.2)
    assert (slow.ok, slow.error) == (False, "no answer within 0.2 s")
