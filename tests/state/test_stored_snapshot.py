"""The fast snapshot decoder (msgspec) against the model (pydantic), which is the authority.

For any bytes: when the fast path accepts a record, the model accepts it too and reads the
same snapshot; when the model refuses a record, decoding it raises the model's error; and
what the table stores decodes back to the model's positions.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.errors import InputError
from service.messages import PositionSnapshot
from service.state.snapshots import SnapshotTable
from service.state.stored_snapshot import (
    StoredPosition,
    StoredSnapshot,
    _needs_name_check,
    decode_snapshot,
    decode_snapshot_record,
    fast_decode,
    plain_values,
    tombstone_key,
)
from tests.examples import examples

# names: mostly plain, sometimes empty, too long, with '|', control characters or non-ASCII
plain = st.text(alphabet="abcXYZ019_-.:", min_size=1, max_size=8)
tricky = st.one_of(
    st.just(""),
    st.text(alphabet="ab", min_size=199, max_size=202),
    st.text(alphabet=st.sampled_from("ab|\x00\x1f\n\t\x7fé€\U0001f600 "), min_size=1, max_size=6),
    st.text(max_size=6),
)
names = st.one_of(plain, plain, plain, tricky)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 0.0, -0.0, 1e308, 5e-324, 1.5, -2.25]),
)
junk = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.lists(st.integers(), max_size=2))
maybe = st.one_of(numbers, numbers, numbers, junk)


finite = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**53), 2**53),
    st.sampled_from([0, -0.0, 1.5, 0.1, 1e-300, 1.7976931348623157e308]),
)


@st.composite
def position(draw: st.DrawFn, clean: bool, with_symbol: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"qty": draw(finite if clean else maybe)}
    if with_symbol or (not clean and draw(st.integers(0, 9)) == 0):
        out["symbol"] = draw(plain if clean else st.one_of(names, names, names, junk))
    if draw(st.booleans()):
        out["venue"] = draw(st.one_of(plain, st.none()) if clean else st.one_of(names, junk))
    if draw(st.booleans()):
        out["mark"] = draw(
            st.one_of(st.floats(1e-9, 1e9), st.none()) if clean else st.one_of(maybe, st.none())
        )
    if draw(st.integers(0, 3)) == 0:
        out["avg_cost"] = draw(st.one_of(st.none(), finite if clean else maybe))
    if not clean and draw(st.integers(0, 15)) == 0:
        out[draw(st.sampled_from(["extra", "Qty", "side"]))] = 1
    if not clean and draw(st.integers(0, 15)) == 0:
        del out["qty"]
    return out


@st.composite
def snapshot_doc(draw: st.DrawFn, clean: bool) -> Any:
    """A snapshot document: ``clean`` ones are valid, the others break rules at random."""
    name = plain if clean else names
    doc: dict[str, Any] = {
        "world_id": draw(name),
        "strategy_id": draw(name),
        "as_of": draw(
            st.integers(0, 2**63)
            if clean
            else st.one_of(st.integers(-5, 2**65), st.sampled_from([1.0, True, "1", None]))
        ),
    }
    forms = ["list", "list", "map", "none"] + ([] if clean else ["junk"])
    form = draw(st.sampled_from(forms))
    if form == "list":
        doc["positions"] = draw(st.lists(position(clean), max_size=5))
    elif form == "map":
        body = position(clean, with_symbol=False)
        doc["positions"] = draw(
            st.dictionaries(name, body if clean else st.one_of(body, junk), max_size=4)
        )
    elif form == "junk":
        doc["positions"] = draw(junk)
    optional = (
        ("seq", st.one_of(st.integers(0, 2**63), st.none())),
        ("cash", st.one_of(finite, st.none())),
        ("converged_plan_id", st.one_of(plain, st.none())),
        ("schema_version", st.just(1)),
    )
    wild = (
        ("seq", st.one_of(st.integers(-2, 2**64), st.none(), st.sampled_from([1.0, False]))),
        ("cash", st.one_of(maybe, st.none())),
        ("converged_plan_id", st.one_of(names, st.none(), junk)),
        ("schema_version", st.sampled_from([1, 2, 1.0, True, "1", None])),
    )
    for field, values in optional if clean else wild:
        if draw(st.integers(0, 2)) == 0:
            doc[field] = draw(values)
    if clean:
        return doc
    if draw(st.integers(0, 20)) == 0:
        doc["unexpected"] = 1
    if draw(st.integers(0, 20)) == 0:
        del doc[draw(st.sampled_from(["world_id", "strategy_id", "as_of"]))]
    if draw(st.integers(0, 40)) == 0:
        return draw(st.one_of(junk, st.lists(st.just(doc), max_size=1)))
    return doc


def _positions(doc: dict[str, Any]) -> list[dict[str, Any]]:
    found = doc.get("positions")
    if isinstance(found, dict):
        return [v for v in found.values() if isinstance(v, dict)]
    return found if isinstance(found, list) else []


@st.composite
def one_mutation(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with exactly one rule tested: most come out invalid."""
    doc: dict[str, Any] = draw(snapshot_doc(clean=True))
    positions = _positions(doc)
    what = draw(
        st.sampled_from(
            ["mark", "extra", "symbol", "name", "version", "seq", "qty", "venue", "cash"]
        )
    )
    target = draw(st.sampled_from(positions)) if positions else None
    bad_name = st.sampled_from(["", "a" * 201, "a|b", "a\nb", "\x00", "x\x1fy", "é|"])
    if what == "mark" and target is not None:
        target["mark"] = draw(st.sampled_from([0, 0.0, -0.0, -1.5, -1e-300, float("inf")]))
    elif what == "extra" and target is not None:
        target[draw(st.sampled_from(["extra", "Qty", "side"]))] = 1
    elif what == "symbol" and target is not None:
        target["symbol"] = draw(st.one_of(plain, st.none(), bad_name, st.just(1)))
    elif what == "venue" and target is not None:
        target["venue"] = draw(st.one_of(bad_name, st.just(1)))
    elif what == "qty" and target is not None:
        target["qty"] = draw(st.sampled_from([float("nan"), float("inf"), True, "1", None]))
    elif what == "name":
        field = draw(st.sampled_from(["world_id", "strategy_id", "converged_plan_id"]))
        doc[field] = draw(bad_name).encode().decode("unicode_escape")
    elif what == "version":
        doc["schema_version"] = draw(st.sampled_from([2, 1.0, True, "1", None, 0]))
    elif what == "seq":
        doc["seq"] = draw(st.sampled_from([-1, 1.5, True, "1", 2**64, 2**64 - 1]))
    elif what == "cash":
        doc["cash"] = draw(st.sampled_from([float("nan"), float("-inf"), "1", True]))
    return doc


@st.composite
def snapshot_bytes(draw: st.DrawFn) -> bytes:
    mode = draw(st.sampled_from(["clean", "one", "wild"]))
    doc = draw(
        snapshot_doc(clean=True)
        if mode == "clean"
        else one_mutation()
        if mode == "one"
        else snapshot_doc(clean=False)
    )
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    mutation = draw(st.integers(0, 30))
    if mutation == 0 and isinstance(doc, dict) and "world_id" in doc:
        # a repeated field: the model reads the last one; the fast path must agree or refuse
        text = text.replace("{", '{"world_id": "first", ', 1)
    elif mutation == 1:
        text = text[: draw(st.integers(0, len(text)))]  # truncated
    return text.encode("utf-8", "surrogatepass")


def model_answer(data: bytes) -> PositionSnapshot | ValidationError:
    try:
        return PositionSnapshot.model_validate_json(data)
    except ValidationError as exc:
        return exc


def stored_positions(model: PositionSnapshot) -> tuple[StoredPosition, ...]:
    return tuple(
        StoredPosition(p.symbol, p.qty, p.venue, p.mark, p.avg_cost) for p in model.positions
    )


def header(s: Any) -> tuple[Any, ...]:
    return (s.world_id, s.strategy_id, s.as_of, s.seq, s.converged_plan_id, s.cash)


@settings(max_examples=examples(3000), suppress_health_check=[HealthCheck.too_slow])
@given(snapshot_bytes())
@example(
    b'{"world_id":"w","strategy_id":"s","as_of":1,"positions":{"BTC":{"qty":1,"symbol":null}}}'
)
@example(b'{"world_id":"w","strategy_id":"s","as_of":1,"positions":{"":{"qty":1,"symbol":"X"}}}')
@example(b'{"world_id":"w\\u007c","strategy_id":"s","as_of":1}')
@example(b'{"world_id":"w","strategy_id":"s","as_of":1,"positions":[{"symbol":"a","qty":1e400}]}')
@example(b'{"world_id":"w","strategy_id":"s","as_of":1,"positions":[{"symbol":"a","qty":NaN}]}')
@example(b'{"world_id":"w","strategy_id":"s","as_of":18446744073709551616}')
def test_fast_decoder_agrees_with_the_model(data: bytes) -> None:
    model = model_answer(data)
    fast = fast_decode(data)
    if isinstance(model, ValidationError):
        assert fast is None, f"fast path accepted what the model refuses: {model}"
        with pytest.raises(ValidationError):
            decode_snapshot(data)
        with pytest.raises(ValidationError):
            decode_snapshot_record(None, data)
        return
    expected = stored_positions(model)
    if fast is not None:
        rows, head = fast
        assert header(head) == header(model)
        assert rows == expected
    stored = decode_snapshot(data)
    assert header(stored) == header(model)
    assert stored.position_count == len(model.positions)
    assert stored.positions() == expected
    key = f"{model.world_id}|{model.strategy_id}".encode()
    assert decode_snapshot_record(key, data) == stored
    assert decode_snapshot_record(None, data) == stored


def test_a_keyed_record_must_match_its_snapshot() -> None:
    data = b'{"world_id":"w","strategy_id":"s","as_of":1}'
    with pytest.raises(
        InputError, match=re.escape("key 'w|t' does not match the snapshot's 'w|s'")
    ):
        decode_snapshot_record(b"w|t", data)
    assert decode_snapshot_record(b"w|s", None) is None  # a tombstone
    assert tombstone_key(b"w|s") == ("w", "s")
    for bad in (b"ws", b"|s", b"w|", None):
        with pytest.raises(InputError, match=re.escape("is not 'world|strategy'")):
            tombstone_key(bad)


def test_the_map_form_is_stored_like_the_list_form() -> None:
    listed = decode_snapshot(
        b'{"world_id":"w","strategy_id":"s","as_of":1,'
        b'"positions":[{"symbol":"BTC","qty":1.5,"mark":10.0,"avg_cost":9.0}]}'
    )
    mapped = decode_snapshot(
        b'{"world_id":"w","strategy_id":"s","as_of":1,'
        b'"positions":{"BTC":{"qty":1.5,"mark":10.0,"avg_cost":9.0}}}'
    )
    assert (
        listed.positions() == mapped.positions() == (StoredPosition("BTC", 1.5, None, 10.0, 9.0),)
    )


class Record:
    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self.key, self.value = key, value


def test_ingest_applies_newest_counts_and_rejects_without_stopping() -> None:
    def snap(as_of: int, qty: float, seq: int | None = None) -> bytes:
        doc: dict[str, Any] = {"world_id": "w", "strategy_id": "s", "as_of": as_of}
        doc["positions"] = [{"symbol": "BTC", "qty": qty, "mark": 1.0}]
        if seq is not None:
            doc["seq"] = seq
        return json.dumps(doc).encode()

    table = SnapshotTable()
    rejected: list[tuple[Record, Exception]] = []
    records = [
        Record(b"w|s", snap(10, 1.0)),
        Record(b"w|s", b"{not json"),
        Record(b"w|s", snap(5, 2.0)),  # older: stale
        Record(b"w|s", snap(10, 3.0, seq=1)),  # same time, higher seq: applied
        Record(b"w|s", snap(10, 4.0, seq=0)),  # lower seq: stale
        Record(b"w|x", snap(11, 5.0)),  # key mismatch
        Record(b"bad", None),  # a tombstone with a bad key
    ]
    assert table.ingest(records, lambda r, e: rejected.append((r, e))) == 2
    assert (table.applied, table.stale, table.deleted) == (2, 2, 0)
    assert [r.value for r, _ in rejected] == [b"{not json", records[5].value, None]
    assert isinstance(rejected[0][1], ValidationError)
    assert all(isinstance(e, InputError) for _, e in rejected[1:])
    held = table.get("w", "s")
    assert held is not None
    assert held.positions()[0].qty == 3.0
    assert table.position_count == 1
    table.ingest([Record(b"w|s", None)], lambda r, e: rejected.append((r, e)))
    assert (len(table), table.position_count, table.deleted) == (0, 0, 1)


@given(st.lists(st.one_of(st.none(), st.binary(max_size=12), st.text(max_size=6).map(str.encode))))
def test_a_batch_is_plain_exactly_when_each_of_its_values_is(values: list[bytes | None]) -> None:
    each = all(v is not None and not _needs_name_check(v) for v in values)
    assert plain_values(values) == each


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(snapshot_bytes(), st.none()), min_size=1, max_size=6), st.booleans())
def test_a_batch_ingests_as_its_records_would_one_by_one(
    values: list[bytes | None], keyed: bool
) -> None:
    """The names' check is made once per batch when the whole batch is plain; a batch with
    one record that needs it (or a tombstone) must decide every record as alone."""

    def key_of(value: bytes | None) -> bytes | None:
        if not keyed:
            return None
        try:
            doc = json.loads(value or b"")
            return f"{doc['world_id']}|{doc['strategy_id']}".encode()
        except Exception:
            return b"w|s"

    records = [Record(key_of(v), v) for v in values]

    def outcome(batches: list[list[Record]]) -> Any:
        table, refused = SnapshotTable(), []
        for batch in batches:
            table.ingest(batch, lambda r, e: refused.append((r.value, type(e), str(e))))
        held = [(s.world_id, s.strategy_id, s.data) for s in table.snapshots()]
        return held, refused, (table.applied, table.stale, table.deleted, table.position_count)

    assert outcome([records]) == outcome([[r] for r in records])


def test_stored_form_of_a_model_round_trips() -> None:
    model = PositionSnapshot.model_validate(
        {
            "world_id": "w",
            "strategy_id": "s",
            "as_of": 3,
            "seq": 2,
            "converged_plan_id": "p",
            "cash": 5.0,
            "positions": [{"symbol": "ETH", "venue": "v", "qty": -2.0, "mark": 3.0}],
        }
    )
    stored = StoredSnapshot.of(model)
    assert header(stored) == ("w", "s", 3, 2, "p", 5.0)
    assert stored.positions() == stored_positions(model)
    assert stored.version == (3, 2)
