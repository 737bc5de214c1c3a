"""The fast request parser (msgspec) against the models (pydantic), which are the authority.

For any request bytes: the fast path either declines or builds exactly the context the models
build (every field, the position table's vocabularies and arrays bit for bit, the trigger's
bytes), from which the same plan comes (record and intents, byte for byte); it never accepts
a request the models refuse; and ``parse_request`` raises exactly the models' error where
they refuse. The requests are the hostile corpus of ``fuzz_messages`` and requests whose rows
are broken field by field (bools for numbers, integers for floats, numbers JSON cannot hold,
names with control characters or too long, unicode, escapes, nulls, missing, extra and
repeated keys). Where the fast path must not decline (plain valid requests), a test says so.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, currently_in_test_context, example, given, note, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.errors import InputError
from service.planner import (
    MultiWorldProportionalRebalancer,
    PlannerOptions,
    PlanningContext,
    PlanningError,
    PositionTable,
)
from service.planner.bounds import check_plan
from service.request import fast_parse_request, model_parse_request, parse_request
from tests.examples import examples
from tests.fuzz.fuzz_messages import (
    CONTROL_CHARS,
    EXTREME_TOKENS,
    VALID_ODD_CHARS,
    Hostile,
    Obj,
    Raw,
    _Draws,
    _hostile_id,
    _random_float_text,
    hostile_corpus,
    labelled,
    render,
    valid_ours_request,
    valid_qmtl_request,
    valid_snapshot,
)

FUZZ = settings(
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
NOW = 1_763_790_000_000
DEFAULTS = PlannerOptions(lot_size_by_symbol={"BTC": 0.001}, min_trade_notional=1.0)

# -- comparing outcomes ---------------------------------------------------------------------


def fingerprint(context: PlanningContext) -> bytes:
    """Every field of a context as bytes: floats as orjson writes them (``-0.0`` is not
    ``0.0``), the table's vocabularies and its arrays with their dtypes, bit for bit."""
    table = context.positions
    arrays = {
        name: (str(a.dtype), a.shape, a.tobytes().hex())
        for name in ("world", "strategy", "venue", "symbol", "qty", "mark", "recency")
        for a in [getattr(table, name)]
    }
    data = {
        "event_id": context.event_id,
        "portfolio_id": context.portfolio_id,
        "occurred_at": context.occurred_at,
        "total_equity": context.total_equity,
        "changes": [
            [
                c.world_id,
                c.alloc_before,
                c.alloc_after,
                None if c.strategy_before is None else list(c.strategy_before.items()),
                None if c.strategy_after is None else list(c.strategy_after.items()),
            ]
            for c in context.changes
        ],
        "options": context.options.model_dump(mode="json"),
        "current_weights": {w: list(m.items()) for w, m in context.current_weights.items()},
        "trigger": context.trigger.decode(),
        "created_at": context.created_at,
        "coalesced_event_ids": context.coalesced_event_ids,
        "vocabularies": [table.worlds, table.strategies, table.venues, table.symbols],
        "arrays": arrays,
    }
    return orjson.dumps(data)


def planned(context: PlanningContext) -> bytes | str:
    """The plan's record and intents as bytes, or the planner's refusal."""
    try:
        plan = check_plan(MultiWorldProportionalRebalancer().plan(context))
    except PlanningError as exc:
        return f"PlanningError: {exc}"
    return orjson.dumps({**plan.record(), "intents": plan.intents()})


def models_outcome(raw: bytes, **kwargs: Any) -> PlanningContext | str:
    try:
        return model_parse_request(raw, **kwargs)
    except (InputError, ValidationError) as exc:
        return f"{type(exc).__name__}: {exc}"


def check_same(raw: bytes, *, plan: bool = True, **kwargs: Any) -> bool:
    """Holds the fast path to the models on ``raw``; True when the fast path accepted it."""
    model = models_outcome(raw, **kwargs)
    fast = fast_parse_request(raw, **kwargs)
    if currently_in_test_context():
        note(f"models: {model if isinstance(model, str) else 'accepted'}")
    if fast is not None:
        assert isinstance(model, PlanningContext), (
            f"fast path accepts what the models refuse: {model}"
        )
        assert fingerprint(fast) == fingerprint(model)
        if plan:
            assert planned(fast) == planned(model)
    # what users see: the fast path's context, or the models' own error
    try:
        seen: PlanningContext | str = parse_request(raw, **kwargs)
    except (InputError, ValidationError) as exc:
        seen = f"{type(exc).__name__}: {exc}"
    if isinstance(model, str):
        assert seen == model
    else:
        assert isinstance(seen, PlanningContext)
        assert fingerprint(seen) == fingerprint(model)
    return fast is not None


# -- 1. the hostile corpus ------------------------------------------------------------------


@settings(FUZZ, max_examples=examples(600))
@given(h=labelled("requests"))
def test_hostile_requests(h: Hostile) -> None:
    assert h.value is not None
    note(f"{h.kind}: {h.value[:300]!r}")
    accepted = check_same(h.value, defaults=DEFAULTS, now_ms=NOW)
    if h.expected is False:
        assert not accepted, "built invalid, yet the fast path took it"


@settings(FUZZ, max_examples=examples(150))
@given(h=labelled("requests"))
def test_hostile_requests_qmtl_only(h: Hostile) -> None:
    """``POST /rebalancing/plan`` reads QMTL's body alone."""
    assert h.value is not None
    check_same(h.value, plan=False, now_ms=NOW, qmtl_only=True)


WEIGHTS_EVENT = (
    b'{"type": "strategy_weights_updated", "event_id": "e", "occurred_at": 1, '
    b'"world_id": "a", "strategy_alloc_after_total": {"s1": 0.5}}'
)


def test_the_corpus_of_the_stream_fuzz() -> None:
    """The records of the input topics (``hostile_corpus``) inside requests: an allocation
    record as a request's event, a snapshot record as its snapshot."""
    for topic, _kind, _key, value, _expected in hostile_corpus(14, 400):
        if value is None:
            continue
        if topic == "allocations":
            check_same(b'{"event": ' + value + b', "total_equity": 1e6}', now_ms=NOW)
        else:
            request = b'{"event": ' + WEIGHTS_EVENT + b', "snapshots": [' + value + b"]}"
            check_same(request, now_ms=NOW, defaults=DEFAULTS)


# -- 2. rows broken field by field ----------------------------------------------------------

NAMES = ("a", "s1", "BTC", "v1", "é", "\U0001f680" * 200, "m" * 200, "\u00a0x", "\ufeff")


@st.composite
def name_value(draw: st.DrawFn) -> Any:
    """A name: valid (plain, unicode, at the length bound) or not (``_hostile_id``)."""
    if draw(st.integers(0, 2)):
        return draw(st.sampled_from(NAMES))
    r = _Draws(draw)
    which = draw(st.integers(0, 4))
    if which == 0:
        return "\U0001f680" * 201
    if which == 1:
        return Raw(draw(st.sampled_from(["1", "true", "null", "[]", "{}", '"\\u0061"'])))
    if which == 2:
        return "a" + draw(st.sampled_from([*CONTROL_CHARS, "|"]))
    return _hostile_id(r)[1]


@st.composite
def number_value(draw: st.DrawFn, low: float, high: float) -> Any:
    """A number: within the bounds as a float or an integer, at a bound, or any JSON token
    (``EXTREME_TOKENS``: bools, strings, NaN, 1e400, big integers, -0, ...), or one step
    past a bound."""
    which = draw(st.integers(0, 6))
    if which == 0:
        return draw(st.floats(low, high))
    if which == 1:
        return draw(st.integers(int(max(low, -1e15)), int(min(high, 1e15))))
    if which == 2:
        return draw(st.sampled_from([low, high, -0.0, 0.0, 1, 0.5, 5e-324]))
    if which == 3:
        past = [math.nextafter(high, math.inf), math.nextafter(low, -math.inf)]
        if high < 2**63:
            past.append(Raw(str(int(high) + 1)))
        return draw(st.sampled_from(past))
    if which == 4:
        return Raw(_random_float_text(_Draws(draw)))
    return Raw(draw(st.sampled_from(EXTREME_TOKENS)))


QTY = (-1e15, 1e15)
MARK = (5e-324, 1e12)
AMOUNT = (-1e27, 1e27)


@st.composite
def row(draw: st.DrawFn, fields: dict[str, Any], required: set[str]) -> Any:
    """A row object: each field present or not, null sometimes; sometimes an extra key, a
    repeated key (orjson keeps the last) or an escaped key."""
    pairs: list[tuple[Any, Any]] = []
    for name, value in fields.items():
        if name not in required and draw(st.integers(0, 3)) == 0:
            continue
        if name in required and draw(st.integers(0, 30)) == 0:
            continue
        if name not in required and draw(st.integers(0, 5)) == 0:
            value = None
        pairs.append((name, value))
    if draw(st.integers(0, 12)) == 0:
        pairs.append((draw(st.sampled_from(["extra", "Qty", "avg_cost", "side"])), 1))
    if pairs and draw(st.integers(0, 12)) == 0:
        name, _ = draw(st.sampled_from(pairs))
        again = draw(st.sampled_from([fields.get(name, 1), Raw("true"), Raw('"x"'), Raw("1")]))
        pairs.insert(draw(st.integers(0, len(pairs))), (name, again))
    if pairs and draw(st.integers(0, 12)) == 0:
        i = draw(st.integers(0, len(pairs) - 1))
        name = pairs[i][0]
        escaped = "".join(f"\\u{ord(c):04x}" for c in name)
        pairs[i] = (Raw(f'"{escaped}"'), pairs[i][1])
    return Obj(pairs)


def broken(
    draw: st.DrawFn,
    clean: dict[str, Any],
    hostile: dict[str, st.SearchStrategy[Any]],
    required: set[str],
) -> Any:
    """A clean row with one or two of its fields (sometimes all) drawn from ``hostile``,
    written by ``row``."""
    fields = dict(clean)
    names = draw(st.permutations(sorted(hostile)))
    for name in names[: draw(st.sampled_from([1, 1, 1, 2, len(names)]))]:
        fields[name] = draw(hostile[name])
    return draw(row(fields, required))


@st.composite
def qmtl_row(draw: st.DrawFn, clean: bool) -> Any:
    fields = {
        "world_id": draw(st.sampled_from(["a", "b"])),
        "strategy_id": draw(st.sampled_from(["s1", "s2"])),
        "symbol": draw(st.sampled_from(NAMES)),
        "qty": draw(st.floats(-1e6, 1e6)),
        "mark": draw(st.floats(0.01, 1e6)),
        "venue": draw(st.sampled_from(NAMES)),
    }
    if clean:
        return fields
    hostile = {
        **dict.fromkeys(["world_id", "strategy_id", "symbol", "venue"], name_value()),
        "qty": number_value(*QTY),
        "mark": number_value(*MARK),
    }
    return broken(draw, fields, hostile, {"world_id", "strategy_id", "symbol", "qty"})


def qmtl_body(rows: Any) -> dict[str, Any]:
    return {
        "total_equity": 1e6,
        "world_alloc_before": {"a": 0.3, "b": 0.2},
        "world_alloc_after": {"a": 0.4, "b": 0.1},
        "positions": rows,
        "lot_size_by_symbol": {"BTC": 0.001},
        "occurred_at": 1_000,
    }


@settings(FUZZ, max_examples=examples(400))
@given(
    rows=st.lists(st.one_of(qmtl_row(clean=True), qmtl_row(clean=False)), max_size=6),
    ascii_only=st.booleans(),
    spaced=st.booleans(),
)
def test_qmtl_rows(rows: list[Any], ascii_only: bool, spaced: bool) -> None:
    text = render(qmtl_body(rows), ascii_only=ascii_only, spaced=spaced)
    check_same(text.encode("utf-8", "surrogatepass"), defaults=DEFAULTS, now_ms=NOW)


@st.composite
def snapshot_row(draw: st.DrawFn, map_form: bool) -> Any:
    fields = {
        "symbol": draw(st.sampled_from(NAMES)),
        "venue": draw(st.sampled_from(NAMES)),
        "qty": draw(st.floats(-1e6, 1e6)),
        "mark": draw(st.floats(0.01, 1e6)),
        "avg_cost": draw(st.floats(-1e6, 1e6)),
    }
    hostile = {
        "symbol": name_value(),
        "venue": name_value(),
        "qty": number_value(*QTY),
        "mark": number_value(*MARK),
        "avg_cost": number_value(*AMOUNT),
    }
    if map_form and draw(st.booleans()):
        del fields["venue"], hostile["venue"]
    if map_form and draw(st.booleans()):
        del fields["symbol"], hostile["symbol"]  # the key is the symbol
    if draw(st.integers(0, 2)) == 0:
        return draw(row(fields, {"qty"} if map_form else {"symbol", "qty"}))
    return broken(draw, fields, hostile, {"qty"} if map_form else {"symbol", "qty"})


@st.composite
def snapshot(draw: st.DrawFn) -> Any:
    """A valid snapshot from the fuzz generators, with fields and rows broken at random."""
    doc: dict[str, Any] = valid_snapshot(_Draws(draw))
    if draw(st.booleans()):
        for name in ("world_id", "strategy_id", "converged_plan_id"):
            if draw(st.integers(0, 3)) == 0:
                doc[name] = draw(name_value())
        if draw(st.integers(0, 3)) == 0:
            doc["as_of"] = draw(
                st.one_of(
                    number_value(0, 253_402_300_799_999),
                    st.just("2026-12-02T10:00:00Z"),
                    st.just("2026-12-02T10:00:00"),
                )
            )
        if draw(st.integers(0, 3)) == 0:
            doc["seq"] = draw(number_value(0, 2**53 - 1))
        if draw(st.integers(0, 3)) == 0:
            doc["schema_version"] = Raw(draw(st.sampled_from(["1", "1.0", "true", "2", "-0"])))
        if draw(st.integers(0, 3)) == 0:
            doc["cash"] = draw(number_value(*AMOUNT))
    if draw(st.booleans()):
        if draw(st.booleans()):
            doc["positions"] = Obj(
                [
                    (draw(name_value()), draw(snapshot_row(map_form=True)))
                    for _ in range(draw(st.integers(0, 3)))
                ]
            )
        else:
            doc["positions"] = draw(st.lists(snapshot_row(map_form=False), max_size=4))
    return doc


@settings(FUZZ, max_examples=examples(400))
@given(data=st.data(), ascii_only=st.booleans())
def test_our_snapshots(data: st.DataObject, ascii_only: bool) -> None:
    doc = valid_ours_request(_Draws(data.draw))
    doc["snapshots"] = data.draw(st.lists(snapshot(), max_size=4))
    text = render(doc, ascii_only=ascii_only)
    check_same(text.encode("utf-8", "surrogatepass"), defaults=DEFAULTS, now_ms=NOW)


# -- 3. every field at its edges, the rest of the request valid ----------------------------

FORBIDDEN = [*CONTROL_CHARS, "|", "\x81", "\x9e"]
NAME_EDGES: list[Any] = [
    *("a" + c for c in FORBIDDEN),
    *("a" + c for c in VALID_ODD_CHARS),
    *(c + "a" for c in ("|", "\x7f", "\x80", "\x9f", "\u2028", "\u2029", "\ufeff")),
    *("a" * n for n in (1, 199, 200, 201)),
    *("\U0001f680" * n for n in (200, 201)),
    *("é" * n for n in (200, 201)),
    "",
    *(Raw(t) for t in ("1", "true", "null", "[]", "{}", '"\\u0061"', '"\\ud800"', '"\\u0000"')),
]


def number_edges(low: float, high: float) -> list[Any]:
    edges: list[Any] = [low, high, math.nextafter(low, -math.inf), math.nextafter(high, math.inf)]
    edges += [-0.0, 0.0, 1, 0.5, 5e-324, -5e-324, Raw("-0"), Raw("1E2"), Raw("1e-400")]
    if high < 2**63:
        edges += [Raw(str(int(high))), Raw(str(int(high) + 1)), Raw(str(int(low) - 1))]
    return edges + [Raw(t) for t in EXTREME_TOKENS]


ROW_EDGES = {
    "world_id": NAME_EDGES,
    "strategy_id": NAME_EDGES,
    "symbol": NAME_EDGES,
    "venue": NAME_EDGES,
    "qty": number_edges(*QTY),
    "mark": number_edges(*MARK),
    "avg_cost": number_edges(*AMOUNT),
}
CLEAN_ROW = {"world_id": "a", "strategy_id": "s1", "symbol": "BTC", "venue": "v", "qty": 2.0}


@pytest.mark.parametrize("field", ["world_id", "strategy_id", "symbol", "venue", "qty", "mark"])
def test_each_qmtl_row_field_at_its_edges(field: str) -> None:
    for value in ROW_EDGES[field]:
        for ascii_only in (True, False):
            rows = [CLEAN_ROW, {**CLEAN_ROW, "mark": 3.0, field: value}]
            text = render(qmtl_body(rows), ascii_only=ascii_only)
            check_same(text.encode("utf-8", "surrogatepass"), defaults=DEFAULTS, now_ms=NOW)


SNAPSHOT_EDGES: dict[str, list[Any]] = {
    "world_id": NAME_EDGES,
    "strategy_id": NAME_EDGES,
    "converged_plan_id": NAME_EDGES,
    "as_of": [*number_edges(0, 253_402_300_799_999), "2026-12-02T10:00:00Z", "2026-12-02"],
    "seq": number_edges(0, 2**53 - 1),
    "cash": number_edges(*AMOUNT),
    "schema_version": [Raw(t) for t in ("1", "1.0", "true", "2", "0", "-0", "null", '"1"')],
}


@pytest.mark.parametrize(
    ("field", "where"),
    [(f, "row") for f in ("symbol", "venue", "qty", "mark", "avg_cost")]
    + [(f, "map") for f in ("symbol", "qty", "mark", "avg_cost")]
    + [("key", "map")]
    + [(f, "snapshot") for f in SNAPSHOT_EDGES],
)
def test_each_snapshot_field_at_its_edges(field: str, where: str) -> None:
    values = NAME_EDGES if field == "key" else {**ROW_EDGES, **SNAPSHOT_EDGES}[field]
    for value in values:
        snapshot: dict[str, Any] = {"world_id": "a", "strategy_id": "s1", "as_of": 5}
        position = {"symbol": "BTC", "qty": 2.0, "mark": 3.0}
        if where == "snapshot":
            snapshot[field] = value
            snapshot["positions"] = [position]
        elif where == "row":
            snapshot["positions"] = [{**position, field: value}]
        elif field == "key":
            snapshot["positions"] = Obj([(value, {"qty": 1.0})])
        else:
            snapshot["positions"] = {"BTC": {"qty": 1.0, field: value}}
        doc = {"event": orjson.loads(WEIGHTS_EVENT), "snapshots": [snapshot]}
        for ascii_only in (True, False):
            text = render(doc, ascii_only=ascii_only)
            check_same(text.encode("utf-8", "surrogatepass"), defaults=DEFAULTS, now_ms=NOW)


# -- 4. whole documents: top-level keys, repeated keys, text ---------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": []}',
        # a repeated key: orjson keeps the last
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": [{"x": 1}], "positions": []}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": [], "positions": [{"x": 1}]}',
        '{"total_equity": 1e6, "total_equity": true, "world_alloc_before": {"a": 0.2}, '
        '"world_alloc_after": {"a": 0.3}, "positions": []}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": [], "snapshots": []}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": null}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": {"a": 0.3}}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": [], "unknown": 1}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": [], "rebalance_intent": {"n": 1e400}}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": [], "rebalance_intent": {"n": 100000000000000000000000}}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": [], "rebalance_intent": ' + "[" * 3000 + "]" * 3000 + "}",
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": [], "event_id": "e\\ud800"}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3, "c": 0.1}, "positions": []}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": [], "mode": "overlay"}',
        '{"total_equity": 1e6, "world_alloc_before": {"a": 0.2}, "world_alloc_after": '
        '{"a": 0.3}, "positions": [], "occurred_at": "2026-12-02T10:00:00Z"}',
        '{"event": {"type": "strategy_weights_updated", "event_id": "e", "occurred_at": 1, '
        '"world_id": "a", "strategy_alloc_after_total": {"s1": 0.5}}, "positions": []}',
        '{"event": {"type": "strategy_weights_updated", "event_id": "e", "occurred_at": 1, '
        '"world_id": "a", "strategy_alloc_after_total": {"s1": 0.5}}, "snapshots": [{'
        '"world_id": "a", "strategy_id": "s1", "as_of": 5, "positions": {"X": {"qty": 1, '
        '"symbol": "Y"}, "X": {"qty": 2}}}]}',
        '{"event": {"type": "strategy_weights_updated", "event_id": "e", "occurred_at": 1, '
        '"world_id": "a", "strategy_alloc_after_total": {"s1": 0.5}}, "snapshots": [{'
        '"world_id": "a", "strategy_id": "s1", "as_of": 5, "positions": {"": {"qty": 1, '
        '"symbol": "Y"}}}]}',
        '{"event": {"type": "strategy_weights_updated", "event_id": "e", "occurred_at": 1, '
        '"world_id": "a", "strategy_alloc_after_total": {"s1": 0.5}}, "snapshots": null}',
        '{"options": {}}',
        "{}",
        "[]",
        '"x"',
        "",
        "\ufeff{}",
    ],
)
def test_documents(text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    check_same(raw, defaults=DEFAULTS, now_ms=NOW)
    check_same(raw, plan=False, now_ms=NOW, qmtl_only=True)


def test_text_and_lone_surrogates() -> None:
    """``raw`` as ``str`` reads as its UTF-8; a ``str`` holding a lone surrogate is refused."""
    body = qmtl_body([{"world_id": "a", "strategy_id": "s\ud800", "symbol": "X", "qty": 1.0}])
    text = render(body, ascii_only=False)
    with pytest.raises(InputError) as raised:
        parse_request(text, now_ms=NOW)
    assert fast_parse_request(text, now_ms=NOW) is None
    with pytest.raises(InputError) as models:
        model_parse_request(text, now_ms=NOW)
    assert str(raised.value) == str(models.value)
    valid = render(qmtl_body([{"world_id": "a", "strategy_id": "é", "symbol": "X", "qty": 1}]))
    fast = fast_parse_request(valid, now_ms=NOW)
    assert fast is not None
    assert fingerprint(fast) == fingerprint(model_parse_request(valid, now_ms=NOW))


# -- 5. the fast path is taken where it should be -------------------------------------------


def big_qmtl(rows: int, seed: int) -> bytes:
    r = random.Random(seed)
    names = ["BTC", "ETH", "é€", "\U0001f680", "a/b", 'q"t', "back\\slash"]
    positions = [
        {
            "world_id": r.choice(["a", "b", "c"]),
            "strategy_id": r.choice(["s1", "s2", "s3", "s4"]),
            "symbol": r.choice(names),
            "venue": r.choice(["v1", "v2", None]),
            "qty": r.choice([r.uniform(-1e4, 1e4), r.randint(-50, 50), -0.0, 0.0]),
            **({"mark": r.choice([r.uniform(0.5, 1e5), 1, 1e12])} if r.random() < 0.9 else {}),
        }
        for _ in range(rows)
    ]
    body = qmtl_body(positions)
    body["world_alloc_before"] = {"a": 0.3, "b": 0.2, "c": 0.1}
    body["world_alloc_after"] = {"a": 0.4, "b": 0.1, "c": 0.0}
    body["strategy_alloc_after_total"] = {"a": {"s1": 0.1, "s2": 0.2}}
    return render(body, ascii_only=seed % 2 == 0).encode()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_valid_requests_take_the_fast_path(seed: int) -> None:
    """Plain valid requests of both shapes, duplicate rows and unicode names included, are
    read by the fast path, into the models' context and plan."""
    raw = big_qmtl(2_000, seed)
    assert check_same(raw, defaults=DEFAULTS, now_ms=NOW)
    r = random.Random(seed)
    for _ in range(25):
        assert check_same(render(valid_qmtl_request(r)).encode(), now_ms=NOW)
        assert check_same(render(valid_ours_request(r), ascii_only=False).encode(), now_ms=NOW)


def test_from_labels_is_from_rows() -> None:
    """The fast path's table builder against the models' (``from_rows``), rows in any order,
    repeated rows and a null venue included."""
    r = random.Random(5)
    for n in (0, 1, 2, 7, 100, 1000):
        rows = [
            (
                r.choice(["w2", "w1", "é"]),
                r.choice(["s2", "s1", "s10"]),
                r.choice(["v1", None, "a"]),
                r.choice(["X", "B", "\U0001f680"]),
                r.choice([1.5, -0.0, 0.0, -3.0]),
                r.choice([None, 2.0, 1e12]),
                0,
            )
            for _ in range(n)
        ]
        expected = PositionTable.from_rows(rows)
        got = PositionTable.from_labels(
            world_ids=[x[0] for x in rows],
            strategy_ids=[x[1] for x in rows],
            venues=[x[2] for x in rows],
            symbols=[x[3] for x in rows],
            qty=np.array([x[4] for x in rows], dtype=np.float64),
            mark=np.array([math.nan if x[5] is None else x[5] for x in rows], dtype=np.float64),
        )
        for name in ("worlds", "strategies", "venues", "symbols"):
            assert getattr(got, name) == getattr(expected, name), name
        for name in ("world", "strategy", "venue", "symbol", "qty", "mark", "recency"):
            a, b = getattr(got, name), getattr(expected, name)
            assert a.dtype == b.dtype, name
            assert a.tobytes() == b.tobytes(), name


@example(seed=0)
@settings(FUZZ, max_examples=examples(30))
@given(seed=st.integers(0, 2**32 - 1))
def test_shuffled_rows_same_plan(seed: int) -> None:
    """Rows in another order: the same context and plan by both paths (ids included)."""
    raw = big_qmtl(300, seed)
    body = orjson.loads(raw)
    random.Random(seed).shuffle(body["positions"])
    shuffled = orjson.dumps(body)
    assert check_same(shuffled, defaults=DEFAULTS, now_ms=NOW)
