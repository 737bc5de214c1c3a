"""Every validation rule of SPEC 2, through the models, with messages that name the field."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from service.errors import HIDDEN, REDACT_DEPTH, InputError, describe, redact
from service.messages import (
    DeadLetter,
    DeltaIntent,
    PlanRecord,
    PolicyRebalance,
    PositionSnapshot,
    allocation_event_adapter,
    topic_event_adapter,
)
from service.planner import WorldChange
from service.request import MAX_NESTING, parse_request
from tests.helpers import plan_rows


def world_event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "world_allocations_changed",
        "event_id": "e1",
        "occurred_at": 1,
        "total_equity": 1000.0,
        "world_alloc_after": {"a": 0.2},
    }
    return {**base, **fields}


def weights_event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "strategy_weights_updated",
        "event_id": "e2",
        "occurred_at": 1,
        "world_id": "a",
        "strategy_alloc_after_total": {"s": 0.1},
    }
    return {**base, **fields}


def snapshot(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "world_id": "a",
        "strategy_id": "s",
        "as_of": 1,
        "positions": [{"symbol": "X", "venue": "v", "qty": 1.0, "mark": 10.0}],
    }
    return {**base, **fields}


def event_error(data: Any) -> str:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    with pytest.raises(ValidationError) as info:
        allocation_event_adapter.validate_json(raw)
    return describe(info.value)


def snapshot_error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        PositionSnapshot.model_validate_json(orjson.dumps(data))
    return describe(info.value)


def test_valid_events_parse() -> None:
    event = allocation_event_adapter.validate_json(orjson.dumps(world_event()))
    assert event.type == "world_allocations_changed"
    assert event.portfolio_id == "default"
    weights = allocation_event_adapter.validate_json(orjson.dumps(weights_event()))
    assert weights.type == "strategy_weights_updated"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"world_alloc_after": {"a": 1.5}},
            "world_alloc_after.a: Input should be less than or equal to 1",
        ),
        (
            {"world_alloc_after": {"a": -0.1}},
            "world_alloc_after.a: Input should be greater than or equal to 0",
        ),
        (
            {"world_alloc_before": {"a": 2}},
            "world_alloc_before.a: Input should be less than or equal to 1",
        ),
        (
            {"world_alloc_after": {"a": 0.7, "b": 0.4}},
            "world_alloc_after: world allocations add up to 1.1, above 1",
        ),
        ({"world_alloc_after": {}}, "world_alloc_after: Dictionary should have at least 1 item"),
        (
            {"strategy_alloc_after_total": {"a": {"s1": 0.15, "s2": 0.1}}},
            "strategy_alloc_after_total.a: strategy weights of world 'a' add up to 0.25, above 0.2",
        ),
        (
            {"world_alloc_before": {"a": 0.3}, "strategy_alloc_before_total": {"a": {"s": 0.4}}},
            "strategy_alloc_before_total.a: strategy weights of world 'a' add up to 0.4, above 0.3",
        ),
        (
            {"strategy_alloc_after_total": {"z": {"s": 0.1}}},
            "strategy_alloc_after_total.z: world 'z' is not in world_alloc_after",
        ),
        ({"total_equity": -1}, "total_equity: Input should be greater than or equal to 0"),
        ({"total_equity": "1000"}, "total_equity: Input should be a valid number"),
        (
            {"min_trade_notional": -5},
            "min_trade_notional: Input should be greater than or equal to 0",
        ),
        ({"lot_size_by_symbol": {"X": 0}}, "lot_size_by_symbol.X: Input should be greater than 0"),
        ({"event_id": ""}, "event_id: String should have at least 1 character"),
        ({"event_id": "a|b"}, "event_id: String should match pattern"),
        ({"occurred_at": -1}, "occurred_at: Input should be greater than or equal to 0"),
        ({"schema_version": 2}, "schema_version: Input should be 1"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_world_event_rules(fields: dict[str, Any], expected: str) -> None:
    assert expected in event_error(world_event(**fields))


def test_missing_field_is_named() -> None:
    data = world_event()
    del data["total_equity"]
    assert "total_equity: Field required" in event_error(data)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b'{"type":"world_allocations_changed","event_id":"e","occurred_at":1,"total_equity":NaN,'
            b'"world_alloc_after":{"a":0.1}}',
            "total_equity: Input should be a finite number",
        ),
        (
            b'{"type":"world_allocations_changed","event_id":"e","occurred_at":1,"total_equity":1e999,'
            b'"world_alloc_after":{"a":0.1}}',
            "total_equity: Input should be a finite number",
        ),
        (
            b'{"type": "manual_override", "event_id": "e"}',
            "does not match any of the expected tags",
        ),
        (b'{"event_id": "e"}', "Unable to extract tag using discriminator 'type'"),
        (b"[1, 2]", "input: Input should be an object"),
        (b"not json", "Invalid JSON"),
    ],
)
def test_bad_event_bytes(raw: bytes, expected: str) -> None:
    assert expected in event_error(raw)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"strategy_alloc_after_total": {"s": 1.2}},
            "strategy_alloc_after_total.s: Input should be less than or equal to 1",
        ),
        (
            {"strategy_alloc_after_total": {"s": 0.6, "t": 0.6}},
            "strategy_alloc_after_total: strategy weights add up to 1.2, above 1",
        ),
        (
            {"strategy_alloc_after_total": {}},
            "strategy_alloc_after_total: Dictionary should have at least 1 item",
        ),
        ({"world_id": None}, "world_id: Input should be a valid string"),
    ],
)
def test_weights_event_rules(fields: dict[str, Any], expected: str) -> None:
    assert expected in event_error(weights_event(**fields))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"positions": [{"symbol": "X", "qty": 1, "mark": 0}]},
            "positions.0.mark: Input should be greater than 0",
        ),
        (
            {"positions": [{"symbol": "X", "qty": 1, "mark": -3}]},
            "positions.0.mark: Input should be greater than 0",
        ),
        ({"positions": [{"symbol": "X"}]}, "positions.0.qty: Field required"),
        ({"positions": {"X": 5}}, "positions: 'X' must be an object with qty"),
        (
            {"as_of": "yesterday"},
            "as_of: expected epoch milliseconds or an ISO-8601 time, got 'yesterday'",
        ),
        ({"as_of": 1.5}, "as_of: Input should be a valid integer"),
        ({"seq": -1}, "seq: Input should be greater than or equal to 0"),
        ({"world_id": "a|b"}, "world_id: String should match pattern"),
    ],
)
def test_snapshot_rules(fields: dict[str, Any], expected: str) -> None:
    assert expected in snapshot_error(snapshot(**fields))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b'{"world_id":"a","strategy_id":"s","as_of":1,"positions":[{"symbol":"X","qty":1e999}]}',
            "positions.0.qty: Input should be a finite number",
        ),
        (
            b'{"world_id":"a","strategy_id":"s","as_of":1,"positions":[{"symbol":"X","qty":NaN}]}',
            "positions.0.qty: Input should be a finite number",
        ),
        (
            b'{"world_id":"a","strategy_id":"s","as_of":1,"cash":-Infinity}',
            "cash: Input should be a finite number",
        ),
        (
            b'{"world_id":"a","strategy_id":"s","as_of":1,"positions":[{"symbol":"X","qty":1,"mark":NaN}]}',
            "positions.0.mark: Input should be a finite number",
        ),
    ],
)
def test_snapshot_non_finite_numbers(raw: bytes, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        PositionSnapshot.model_validate_json(raw)
    assert expected in describe(info.value)


def test_snapshot_map_form_is_accepted_without_venue() -> None:
    snap = PositionSnapshot.model_validate_json(
        orjson.dumps(
            snapshot(positions={"BTC": {"qty": 0.5, "avg_cost": 58000.0, "mark": 60000.0}})
        )
    )
    (position,) = snap.positions
    assert (position.symbol, position.venue, position.qty, position.mark) == (
        "BTC",
        None,
        0.5,
        60000.0,
    )
    assert snap.key == "a|s"


def test_snapshot_version_orders_by_as_of_then_seq() -> None:
    older = PositionSnapshot.model_validate(snapshot(as_of=5, seq=9))
    newer = PositionSnapshot.model_validate(snapshot(as_of=5, seq=10))
    newest = PositionSnapshot.model_validate(snapshot(as_of=6))
    assert older.version < newer.version < newest.version


def test_planner_output_conforms_to_the_message_models() -> None:
    plan = plan_rows(
        [
            ("a", "s1", "v", "X", 3.0, 10.0, 0),
            ("a", "s2", "v", "X", -1.0, 10.0, 0),
            ("a", "s2", None, "Y", 1.0, None, 0),
            ("b", "t", "v", "X", 1.0, 10.0, 0),
        ],
        [
            WorldChange("a", 0.4, 0.4, {"s1": 0.3, "s2": 0.1}, {"s1": 0.0, "s2": 0.3}),
            WorldChange("b", 0.1, 0.2),
        ],
    )
    record = PlanRecord.model_validate_json(orjson.dumps(plan.record()))
    assert record.intent_ids == [i["intent_id"] for i in plan.intents()]
    assert record.model_dump(mode="json", exclude_unset=True) == plan.record()
    intents = [DeltaIntent.model_validate_json(orjson.dumps(i)) for i in plan.intents()]
    assert [i.leg for i in intents] == ["close", "open", "adjust"]
    assert all(
        i.model_dump(mode="json", exclude_unset=True) == raw
        for i, raw in zip(intents, plan.intents(), strict=True)
    )
    assert intents[0].key == "v|X"


def test_dead_letter_round_trips() -> None:
    letter = DeadLetter(
        topic="allocations.events",
        partition=0,
        offset=7,
        key_b64=None,
        value_b64="e30=",
        error_class="ValidationError",
        error_message="bad",
        failed_at=1,
    )
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


def policy_event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "policy_rebalance",
        "event_id": "policy:keep:a:t60000",
        "occurred_at": 60_000,
        "world_id": "a",
        "policy": "keep",
        "trigger": "band",
        "target": {"kind": "allocation"},
    }
    return {**base, **fields}


def topic_error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        topic_event_adapter.validate_json(orjson.dumps(data))
    return describe(info.value)


def test_the_allocation_topic_carries_policy_events_too() -> None:
    event = topic_event_adapter.validate_json(orjson.dumps(policy_event()))
    assert isinstance(event, PolicyRebalance)
    assert event.target.kind == "allocation"
    assert event.target.measure == "gross"
    external = topic_event_adapter.validate_json(orjson.dumps(world_event()))
    assert external.type == "world_allocations_changed"
    # the plan command's requests (external events) do not take them
    assert "does not match any of the expected tags" in event_error(policy_event())


def weights(*items: tuple[str | None, str, float]) -> dict[str, Any]:
    return {
        "kind": "weights",
        "weights": [{"venue": v, "symbol": s, "weight": w} for v, s, w in items],
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"trigger": "whim"},
            "trigger: Input should be 'band', 'calendar', 'hybrid', 'regime' or 'command'",
        ),
        ({"target": {"kind": "vibes"}}, "target: Input tag 'vibes' found using 'kind'"),
        ({"target": {"kind": "allocation", "measure": "abs"}}, "target.measure: Input should be"),
        (
            {"target": weights(("v", "X", 0.7), ("v", "Y", 0.4))},
            "target: weights: target weights add up to 1.1, above 1",
        ),
        (
            {"target": weights(("v", "X", 0.2), ("v", "X", 0.3))},
            "target: weights.1: v:X is named twice",
        ),
        ({"target": weights(("v", "X", -0.1))}, "target.weights.0.weight: Input should be greater"),
        ({"target": {"kind": "weights", "weights": []}}, "target.weights: List should have at"),
        ({"measured": {"a": None}}, "measured.a: Input should be a valid number"),
        ({"world_id": "a|b"}, "world_id: String should match pattern"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_policy_event_rules(fields: dict[str, Any], expected: str) -> None:
    assert expected in topic_error(policy_event(**fields))


def test_an_error_about_deeply_nested_input_is_short_and_shows_no_secret() -> None:
    # found by the fuzz suite: redacting a value nested thousands deep overflowed the stack
    deep: Any = {"password": "hunter2-secret"}
    for _ in range(5_000):
        deep = [deep]
    shown = redact(deep)
    for _ in range(REDACT_DEPTH):
        shown = shown[0]
    assert shown is Ellipsis
    nested: Any = {"password": "hunter2-secret"}
    for _ in range(200):  # as deep as orjson writes
        nested = [nested]
    with pytest.raises(InputError) as caught:
        parse_request(orjson.dumps({"worlds": nested}), now_ms=0)
    assert "hunter2" not in str(caught.value)
    assert len(str(caught.value)) < 2_000
    assert redact({"a": [{"token": "t0ken"}]}) == {"a": [{"token": HIDDEN}]}


@pytest.mark.parametrize("field", ["rebalance_intent", "stress_by_world"])
def test_a_qmtl_free_field_nested_too_deep_to_hash_is_refused_by_name(field: str) -> None:
    # found by the fuzz suite: QMTL's free-form fields take any JSON, but the body's
    # canonical JSON (hashed into the ids) is written by orjson, which stops at 255 levels;
    # that was a TypeError (a traceback from the CLI, a 500 from the API)
    def body(levels: int) -> bytes:
        value = b"[" * (levels - 1) + b"1" + b"]" * (levels - 1)
        head = b'{"total_equity": 1, "world_alloc_before": {"a": 0.1}, '
        head += b'"world_alloc_after": {"a": 0.2}, "positions": [], '
        return head + b'"' + field.encode() + b'": {"x": ' + value + b"}}"

    parse_request(body(MAX_NESTING), now_ms=0)  # the dict and 252 lists: 253 levels
    with pytest.raises(InputError) as caught:
        parse_request(body(MAX_NESTING + 1), now_ms=0)
    assert str(caught.value) == f"{field}: nested more than 253 levels deep"
    with pytest.raises(InputError, match=f"^{field}: nested more than 253 levels deep$"):
        parse_request(body(1_000), now_ms=0)
