"""A snapshot as the table keeps it, and the fast decoding of snapshot records into it.

``PositionSnapshot`` (pydantic) is the authority on what a valid snapshot is, and its errors
are what a dead letter says. Validating every record with it costs more than reading the
record from Kafka, so records are decoded by msgspec straight into the stored form, with the
same rules, and only a record msgspec refuses goes through the model: the model then either
explains the refusal or accepts the record after all. The model has the last word either way,
and a property test holds the two to the same answers
(``tests/state/test_stored_snapshot.py``).

The stored form is a small struct that the cyclic garbage collector does not track, holding
the record's validated bytes: a table of a million positions as models would be walked by the
collector again and again, and as decoded objects would take three times the memory.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from ..errors import InputError
from ..messages import PositionSnapshot
from ..messages._types import (
    MAX_AMOUNT,
    MAX_EPOCH_MS,
    MAX_PRICE,
    MAX_QUANTITY,
    MAX_SEQ,
    NAME_PATTERN,
)

# The model's bounds (``messages._types``), restated for msgspec.
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Price = Annotated[float, msgspec.Meta(gt=0, le=MAX_PRICE)]
_Quantity = Annotated[float, msgspec.Meta(ge=-MAX_QUANTITY, le=MAX_QUANTITY)]
_Amount = Annotated[float, msgspec.Meta(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
_EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]
_Sequence = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]

_NAME_FORBIDDEN = re.compile(r"[|\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""What the model's ``Name`` refuses besides its length (``NAME_PATTERN``).

Every string of a snapshot is a ``Name``. JSON can put a C0 control character into a string
only as an escape, DEL is the byte 0x7f, and C1 controls and U+2028/U+2029 are non-ASCII, so a
record of ASCII bytes with no ``|``, ``\\`` or DEL needs no check."""

_PIPE, _BACKSLASH, _DEL = ord("|"), ord("\\"), 0x7F  # an int's ``in`` on bytes is a memchr


def _needs_name_check(data: bytes) -> bool:
    return _PIPE in data or _BACKSLASH in data or _DEL in data or not data.isascii()


def plain_values(values: list[bytes | None]) -> bool:
    """Whether every value is present and none needs the names' check: one scan of them all,
    which a batch of records pays once instead of once per record."""
    present = [value for value in values if value is not None]
    return len(present) == len(values) and not _needs_name_check(b"".join(present))


# JSON has no NaN or infinity, and msgspec refuses a number that overflows a float, so every
# float these structs hold is finite, as the model's ``allow_inf_nan=False`` demands.


class StoredPosition(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One position of a stored snapshot."""

    symbol: _Name
    qty: _Quantity
    venue: _Name | None = None
    mark: _Price | None = None
    avg_cost: _Amount | None = None


class _WireHeader(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Every field of a snapshot but its positions, whose two forms follow."""

    world_id: _Name
    strategy_id: _Name
    as_of: _EpochMs
    schema_version: Literal[1] = 1
    seq: _Sequence | None = None
    cash: _Amount | None = None
    converged_plan_id: _Name | None = None


class _ListFormSnapshot(_WireHeader):
    positions: tuple[StoredPosition, ...] = ()


class StoredSnapshot(msgspec.Struct, frozen=True, gc=False):
    """A validated snapshot as the table keeps it: what ordering and holding read, plus the
    record's own bytes, from which ``positions()`` decodes the positions when a plan needs
    them (the table turns them into columns once). Keeping the bytes, not decoded objects,
    costs a third of the memory and lets the table take a snapshot at the speed Kafka
    delivers it."""

    world_id: str
    strategy_id: str
    as_of: int
    seq: int | None
    converged_plan_id: str | None
    position_count: int
    data: bytes
    cash: float | None = None
    """The snapshot's ``cash``: counted in the portfolio's measured equity."""

    @property
    def version(self) -> tuple[int, int]:
        """Newer ``as_of`` wins, then ``seq``."""
        return (self.as_of, -1 if self.seq is None else self.seq)

    def positions(self) -> tuple[StoredPosition, ...]:
        """The positions (decoded again from the validated bytes)."""
        return _decode(self.data)[0]

    @classmethod
    def of(cls, snapshot: PositionSnapshot) -> StoredSnapshot:
        """From the validated model."""
        return _stored(snapshot.model_dump_json().encode(), _from_model(snapshot))


class _MapBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A value of QMTL's ``{symbol: {qty, avg_cost, mark}}`` form; a ``symbol`` inside it
    wins over the key, as in the model, which merges the body over the key."""

    qty: _Quantity
    symbol: _Name | msgspec.UnsetType = msgspec.UNSET
    venue: _Name | None = None
    mark: _Price | None = None
    avg_cost: _Amount | None = None


class _MapFormSnapshot(_WireHeader):
    positions: dict[_Name, _MapBody] = {}


_Decoded = _ListFormSnapshot | _MapFormSnapshot
_decode_list_form = msgspec.json.Decoder(_ListFormSnapshot).decode
_decode_map_form = msgspec.json.Decoder(_MapFormSnapshot).decode
_DecodeErrors = (msgspec.ValidationError, msgspec.DecodeError)


def _rows(s: _Decoded) -> tuple[StoredPosition, ...]:
    if isinstance(s, _ListFormSnapshot):
        return s.positions
    return tuple(
        StoredPosition(
            b.symbol if isinstance(b.symbol, str) else k, b.qty, b.venue, b.mark, b.avg_cost
        )
        for k, b in s.positions.items()
    )


def _from_model(m: PositionSnapshot) -> _ListFormSnapshot:
    return _ListFormSnapshot(
        world_id=m.world_id,
        strategy_id=m.strategy_id,
        as_of=m.as_of,
        seq=m.seq,
        cash=m.cash,
        positions=tuple(
            StoredPosition(p.symbol, p.qty, p.venue, p.mark, p.avg_cost) for p in m.positions
        ),
        converged_plan_id=m.converged_plan_id,
    )


def _names_allowed(s: _Decoded, rows: tuple[StoredPosition, ...]) -> bool:
    names = [s.world_id, s.strategy_id, s.converged_plan_id or ""]
    names.extend(p.symbol for p in rows)
    names.extend(p.venue for p in rows if p.venue is not None)
    return _NAME_FORBIDDEN.search("".join(names)) is None


def fast_decode(data: bytes) -> tuple[tuple[StoredPosition, ...], _Decoded] | None:
    """Positions and header by msgspec alone, or None when it cannot vouch for the record.
    (Public for the test that holds it to the model's answers.)"""
    s: _Decoded
    try:
        s = _decode_list_form(data)
    except _DecodeErrors:
        try:
            s = _decode_map_form(data)
        except _DecodeErrors:
            return None
    rows = _rows(s)
    if _needs_name_check(data) and not _names_allowed(s, rows):
        return None
    return rows, s


def _decode(data: bytes) -> tuple[tuple[StoredPosition, ...], _Decoded]:
    """Positions and header of valid snapshot JSON; raises pydantic's ``ValidationError``."""
    fast = fast_decode(data)
    if fast is not None:
        return fast
    s = _from_model(PositionSnapshot.model_validate_json(data))
    return s.positions, s


def _stored(data: bytes, s: _Decoded) -> StoredSnapshot:
    return StoredSnapshot(
        s.world_id,
        s.strategy_id,
        s.as_of,
        s.seq,
        s.converged_plan_id,
        len(s.positions),
        data,
        s.cash,
    )


def decode_snapshot(data: bytes) -> StoredSnapshot:
    """Validate a snapshot's JSON; raises pydantic's ``ValidationError`` when it is invalid."""
    return _stored(data, _decode(data)[1])


def decode_snapshot_record(
    key: bytes | None, value: bytes | None, *, plain: bool = False
) -> StoredSnapshot | None:
    """One record of the snapshot topic: its snapshot, or None for a tombstone (whose key
    ``tombstone_key`` reads). A keyed record's key must match its snapshot. ``plain`` says
    that ``plain_values`` has vouched for the value already."""
    if value is None:
        return None
    try:  # the list form with plain names, inline: this is once per record on the topic
        s = _decode_list_form(value)
        if not plain and _needs_name_check(value):
            raise _NeedsGeneralPath
        snapshot = StoredSnapshot(
            s.world_id,
            s.strategy_id,
            s.as_of,
            s.seq,
            s.converged_plan_id,
            len(s.positions),
            value,
            s.cash,
        )
    except (*_DecodeErrors, _NeedsGeneralPath):
        snapshot = decode_snapshot(value)
    if key is not None:
        world, strategy = snapshot.world_id, snapshot.strategy_id
        if key != f"{world}|{strategy}".encode():
            text = key.decode(errors="replace")
            raise InputError(f"key {text!r} does not match the snapshot's '{world}|{strategy}'")
    return snapshot


class _NeedsGeneralPath(Exception):  # noqa: N818 (control flow, not an error)
    pass


_NAME = re.compile(NAME_PATTERN)


def tombstone_key(key: bytes | None) -> tuple[str, str]:
    """The (world, strategy) a tombstone deletes: both must be ids a snapshot can have."""
    try:
        text = (key or b"").decode()
    except UnicodeDecodeError:
        shown = (key or b"").decode(errors="replace")
        raise InputError(f"tombstone key {shown!r} is not UTF-8") from None
    world_id, sep, strategy_id = text.partition("|")
    names = (world_id, strategy_id)
    if not sep or not all(len(n) <= 200 and _NAME.match(n) for n in names):
        raise InputError(
            f"tombstone key {text!r} is not 'world|strategy' (two ids of 1-200 characters, "
            "no '|' or control characters)"
        )
    return world_id, strategy_id
