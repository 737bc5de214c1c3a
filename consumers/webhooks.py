"""Webhook requests: the body, its signature, the backoff between attempts, one attempt.

A request carries ``X-Rebalancer-Timestamp`` (epoch ms) and ``X-Rebalancer-Signature:
sha256=<hex HMAC-SHA256 of the secret over "{timestamp}.{body}">``: a receiver recomputes the
signature over the bytes it received and refuses a request whose timestamp is too old (a
replay). The secret is read only here, to sign; it appears in no log line, metric, error or
dead letter, and neither does the URL's path or query (a Slack webhook's URL is a secret too):
``where`` names a webhook by its scheme and host.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import orjson

from service.messages import Notification
from service.settings import NotificationSettings, Webhook

TIMESTAMP_HEADER = "X-Rebalancer-Timestamp"
SIGNATURE_HEADER = "X-Rebalancer-Signature"
ID_HEADER = "X-Rebalancer-Notification-Id"

PERMANENT_STATUSES = frozenset(range(400, 500)) - {408, 425, 429}
"""Answers that another attempt will not change (a refused signature, a missing page): the
notification is dead-lettered at once. 408, 425, 429 and 5xx are retried."""


def signature(secret: bytes, timestamp_ms: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of secret over "{timestamp}.{body}">``."""
    mac = hmac.new(secret, f"{timestamp_ms}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: bytes, timestamp: str, body: bytes, signed: str) -> bool:
    """What a receiver does (constant-time comparison)."""
    try:
        expected = signature(secret, int(timestamp), body)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signed)


def body_of(note: Notification, value: bytes, fmt: str) -> bytes:
    """The request body: the notification as published (``json``) or ``{"text": ...}``
    (``slack``: Slack's incoming webhooks, and chat tools that copy them, show the line)."""
    if fmt == "slack":
        return orjson.dumps({"text": slack_text(note)})
    return value


def slack_text(note: Notification) -> str:
    """The one-liner with its id, so a reader can find the event in the plan records."""
    return f"{note.text} · {note.notification_id}"


def where(url: str) -> str:
    """A webhook's URL without path, query or credentials: safe in logs and dead letters."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n (from 1) waits ``initial * 2**(n-1)``
    capped at ``maximum``, of which the upper half is random (so receivers coming back are
    not hit by every sender at once)."""

    initial_ms: int
    maximum_ms: int
    rng: random.Random | None = None

    @classmethod
    def of(cls, settings: NotificationSettings, rng: random.Random | None = None) -> Backoff:
        return cls(settings.backoff_initial_ms, settings.backoff_max_ms, rng)

    def delay_ms(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1 for the first)."""
        full = float(min(self.maximum_ms, self.initial_ms * 2 ** min(attempt - 1, 62)))
        rng = self.rng or random
        return full / 2 + rng.random() * full / 2


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to: delivered, or why not (safe to log: no secret, no path)."""

    ok: bool
    permanent: bool = False
    error: str = ""


async def attempt(
    client: httpx.AsyncClient,
    webhook: Webhook,
    note: Notification,
    value: bytes,
    now_ms: int,
    timeout_s: float,
) -> Attempt:
    """POST one notification to one webhook, signed with the time of this attempt."""
    body = body_of(note, value, webhook.format)
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(now_ms),
        SIGNATURE_HEADER: signature(webhook.secret.get_secret_value().encode(), now_ms, body),
        ID_HEADER: note.notification_id,
    }
    try:
        response = await client.post(webhook.url, content=body, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        return Attempt(False, error=f"no answer within {timeout_s:g} s")
    except httpx.HTTPError as exc:
        return Attempt(False, error=f"{type(exc).__name__}: connection failed")
    if 200 <= response.status_code < 300:
        return Attempt(True)
    return Attempt(
        False,
        permanent=response.status_code in PERMANENT_STATUSES,
        error=f"HTTP {response.status_code}",
    )
