"""Allocation events in CloudEvents 1.0 envelopes (structured and binary), and ISO-8601 times."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from service.errors import InputError, describe
from service.messages import allocation_event_adapter
from service.messages.cloudevents import decode_topic_event

EVENT: dict[str, Any] = {
    "type": "world_allocations_changed",
    "event_id": "e1",
    "occurred_at": 1_796_205_600_000,
    "total_equity": 1_000_000.0,
    "world_alloc_after": {"a": 0.2},
    "world_alloc_before": {"a": 0.3},
}
ENVELOPE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "ce-7",
    "source": "qmtl/controlbus",
    "type": "world_allocations_changed",
    "time": "2026-12-02T10:00:00Z",
    "datacontenttype": "application/json",
}
HEADERS = [(f"ce_{k}", str(v).encode()) for k, v in ENVELOPE.items() if k != "datacontenttype"]


def test_a_bare_event_reads_as_before() -> None:
    assert decode_topic_event(orjson.dumps(EVENT)) == allocation_event_adapter.validate_python(
        EVENT
    )


def test_structured_mode_reads_the_event_in_data() -> None:
    event = decode_topic_event(orjson.dumps({**ENVELOPE, "data": EVENT}))
    assert event == allocation_event_adapter.validate_python(EVENT)


def test_the_envelope_gives_what_the_event_leaves_out() -> None:
    data = {k: v for k, v in EVENT.items() if k not in {"type", "event_id", "occurred_at"}}
    event = decode_topic_event(orjson.dumps({**ENVELOPE, "data": data}))
    assert (event.type, event.event_id, event.occurred_at) == (
        "world_allocations_changed",
        "ce-7",
        1_796_205_600_000,  # 2026-12-02T10:00:00Z
    )


def test_binary_mode_reads_the_attributes_from_headers() -> None:
    data = {k: v for k, v in EVENT.items() if k != "type"}
    event = decode_topic_event(orjson.dumps(data), [*HEADERS, ("other", b"x")])
    assert event == allocation_event_adapter.validate_python(EVENT)


@pytest.mark.parametrize(
    ("value", "headers", "expected"),
    [
        (
            {**ENVELOPE, "specversion": "0.3", "data": EVENT},
            None,
            "cloudevents: specversion '0.3' is not 1.0",
        ),
        (
            {k: v for k, v in ENVELOPE.items() if k not in {"id", "source"}} | {"data": EVENT},
            None,
            "cloudevents (structured): missing attribute(s) id, source",
        ),
        (
            {**ENVELOPE, "datacontenttype": "application/xml", "data": EVENT},
            None,
            "cloudevents: datacontenttype 'application/xml' is not JSON",
        ),
        ({**ENVELOPE, "data": [EVENT]}, None, "data must be the event (a JSON object), got list"),
        (ENVELOPE, None, "cloudevents: the envelope has no data (the event)"),
        (
            {**ENVELOPE, "data_base64": "e30="},
            None,
            "cloudevents: data_base64 is not read; send the event as data",
        ),
        (
            {**ENVELOPE, "type": "com.example.moved", "data": {"event_id": "x"}},
            None,
            "cloudevents: type 'com.example.moved' is not one of policy_rebalance, "
            "strategy_weights_updated, world_allocations_changed, and data names no type",
        ),
        (
            {**ENVELOPE, "data": {**EVENT, "world_alloc_after": {"a": 1.5}}},
            None,
            "cloudevents data: world_alloc_after.a: Input should be less than or equal to 1 "
            "(got 1.5)",
        ),
        (EVENT, [("ce_specversion", b"1.0"), ("ce_type", b"x")], "missing attribute(s) id, source"),
    ],
)
def test_bad_envelopes_say_what_is_wrong(
    value: dict[str, Any], headers: list[tuple[str, bytes]] | None, expected: str
) -> None:
    with pytest.raises(InputError) as caught:
        decode_topic_event(orjson.dumps(value), headers)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("written", "epoch_ms"),
    [
        ("2026-12-02T10:00:00Z", 1_796_205_600_000),
        ("2026-12-02T19:00:00+09:00", 1_796_205_600_000),
        ("2026-12-02T10:00:00.123456Z", 1_796_205_600_123),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_iso_times_are_read_as_epoch_milliseconds(written: str, epoch_ms: int) -> None:
    event = allocation_event_adapter.validate_python({**EVENT, "occurred_at": written})
    assert event.occurred_at == epoch_ms


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (
            "yesterday",
            "occurred_at: expected epoch milliseconds or an ISO-8601 time, got 'yesterday'",
        ),
        (
            "2026-12-02T10:00:00",
            "occurred_at: the ISO-8601 time '2026-12-02T10:00:00' needs a zone (Z or +hh:mm)",
        ),
        ("1969-12-31T23:59:59Z", "occurred_at: Input should be greater than or equal to 0"),
    ],
)
def test_bad_times_are_refused_with_why(written: str, expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        allocation_event_adapter.validate_json(orjson.dumps({**EVENT, "occurred_at": written}))
    assert expected in describe(caught.value)
