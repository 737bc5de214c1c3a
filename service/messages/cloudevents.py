"""Allocation events in a CloudEvents 1.0 envelope, as an event bus may publish them.

Two modes of the CloudEvents Kafka binding are read: *structured* (the record's value is the
JSON envelope, our event in ``data``) and *binary* (the attributes in ``ce_`` headers, the
value is our event). Our event may leave out what the envelope says: its ``type`` (when the
CloudEvent's type is one of ours), ``event_id`` (the CloudEvent's ``id``) and ``occurred_at``
(its ``time``). A bare event (no envelope) reads as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from ..errors import InputError, describe
from .topic import TopicEvent, topic_event_adapter

OUR_TYPES = frozenset({"world_allocations_changed", "strategy_weights_updated", "policy_rebalance"})
"""Event types a CloudEvent's ``type`` may name for an event that leaves its own out."""

REQUIRED = ("specversion", "id", "source", "type")

Headers = Sequence[tuple[str, bytes]]


def decode_topic_event(value: bytes, headers: Headers | None = None) -> TopicEvent:
    """The event of an allocation-topic record, bare or in a CloudEvents envelope. Raises
    ``InputError`` or pydantic's ``ValidationError`` naming what is wrong."""
    attributes = {k[3:]: v.decode(errors="replace") for k, v in headers or () if k[:3] == "ce_"}
    if attributes:
        return _from_envelope(attributes, _json(value, "the value"), "binary")
    if b'"specversion"' in value:
        document = _json(value, "the value")
        if isinstance(document, dict) and "specversion" in document:
            if "data_base64" in document:
                raise InputError("cloudevents: data_base64 is not read; send the event as data")
            if "data" not in document:
                raise InputError("cloudevents: the envelope has no data (the event)")
            return _from_envelope(document, document["data"], "structured")
    return topic_event_adapter.validate_json(value)


def _json(value: bytes, what: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"invalid JSON in {what}: {exc}") from None


def _from_envelope(attributes: dict[str, Any], data: Any, mode: str) -> TopicEvent:
    missing = [name for name in REQUIRED if not attributes.get(name)]
    if missing:
        raise InputError(f"cloudevents ({mode}): missing attribute(s) {', '.join(missing)}")
    if attributes["specversion"] != "1.0":
        raise InputError(
            f"cloudevents: specversion {str(attributes['specversion'])[:20]!r} is not 1.0"
        )
    content_type = str(attributes.get("datacontenttype") or "application/json")
    if "json" not in content_type:
        raise InputError(f"cloudevents: datacontenttype {content_type[:60]!r} is not JSON")
    if not isinstance(data, dict):
        raise InputError(
            f"cloudevents: data must be the event (a JSON object), got {type(data).__name__}"
        )
    event = dict(data)
    if "type" not in event:
        if attributes["type"] not in OUR_TYPES:
            raise InputError(
                f"cloudevents: type {str(attributes['type'])[:80]!r} is not one of "
                f"{', '.join(sorted(OUR_TYPES))}, and data names no type"
            )
        event["type"] = attributes["type"]
    event.setdefault("event_id", attributes["id"])
    if "time" in attributes:
        event.setdefault("occurred_at", attributes["time"])
    try:
        return topic_event_adapter.validate_python(event)
    except ValidationError as exc:
        raise InputError("cloudevents data: " + describe(exc)) from None


__all__ = ["decode_topic_event"]
