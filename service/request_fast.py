"""The fast decoding of planning requests: msgspec reads the rows straight into columns.

The request models (``service.request``, pydantic) are the authority on what a valid request
is, and their errors are what a user reads. Validating every position row with them costs most
of a large request's planning time (0.8 s of pydantic for 200,000 rows), so ``decode``
reads a request's bytes with msgspec instead: the rows (QMTL's ``positions``, our
``snapshots``) into structs with the models' rules restated, every other top-level field as
its raw JSON, read again by orjson (as the model path reads it) and left to the models, which
validate it in microseconds once the rows are out of it. ``decode`` returns None whenever it
cannot vouch for a request: the caller then takes the models' path, which either explains the
refusal or accepts the request after all. So the fast path declines more than the models
refuse, never accepts more, and what it accepts reads as the models read it
(``tests/fuzz/test_fast_request.py`` holds the two to that).

Where msgspec and orjson read JSON differently, the difference only makes msgspec refuse:
both refuse NaN, infinities, numbers that overflow a float, lone surrogates, invalid UTF-8, a
byte-order mark and trailing content, and both keep the last of duplicate keys; integers
beyond 64 bits (which orjson reads as floats) can only stand for a float field here, where
both give the same float, and every bound refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import orjson

from .messages._types import MAX_AMOUNT, MAX_EPOCH_MS, MAX_PRICE, MAX_QUANTITY, MAX_SEQ
from .planner import PositionTable

# The models' bounds (``messages._types``), restated for msgspec. JSON has no NaN or
# infinity and msgspec refuses a number that overflows a float, so every float is finite, as
# the models' ``allow_inf_nan=False`` demands; a float field takes a JSON integer, as pydantic's
# strict float takes an int, and neither takes a bool.
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Price = Annotated[float, msgspec.Meta(gt=0, le=MAX_PRICE)]
_Quantity = Annotated[float, msgspec.Meta(ge=-MAX_QUANTITY, le=MAX_QUANTITY)]
_Amount = Annotated[float, msgspec.Meta(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
_EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS)]
_Sequence = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]

_NAME_FORBIDDEN = re.compile(r"[|\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""What ``Name`` refuses besides its length (``NAME_PATTERN``). JSON puts a C0 control
character into a string only as an escape, DEL is the byte 0x7f, and C1 controls and
U+2028/U+2029 are non-ASCII, so a request of ASCII bytes with no ``|``, ``\\`` or DEL holds
no name that needs the check."""

_PIPE, _BACKSLASH, _DEL = ord("|"), ord("\\"), 0x7F


def _needs_name_check(data: bytes) -> bool:
    return _PIPE in data or _BACKSLASH in data or _DEL in data or not data.isascii()


def _names_allowed(columns: Iterable[Sequence[str | None]]) -> bool:
    return not any(
        _NAME_FORBIDDEN.search("".join([n for n in column if n is not None])) for column in columns
    )


class QmtlRow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """``QmtlPosition``: a row of QMTL's request."""

    world_id: _Name
    strategy_id: _Name
    symbol: _Name
    qty: _Quantity
    mark: _Price | None = None
    venue: _Name | None = None


class SnapshotRow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """``Position``: one holding of a snapshot."""

    symbol: _Name
    qty: _Quantity
    venue: _Name | None = None
    mark: _Price | None = None
    avg_cost: _Amount | None = None


class _MapBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A value of QMTL's ``{symbol: {qty, avg_cost, mark}}`` form; a ``symbol`` inside it wins
    over the key, as in the model, which merges the body over the key."""

    qty: _Quantity
    symbol: _Name | msgspec.UnsetType = msgspec.UNSET
    venue: _Name | None = None
    mark: _Price | None = None
    avg_cost: _Amount | None = None


class _Snapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """``PositionSnapshot``, in either form of its positions. (An ISO-8601 ``as_of``, which
    the model reads, is refused here: the model's path takes such a request.)"""

    world_id: _Name
    strategy_id: _Name
    as_of: _EpochMs
    schema_version: Literal[1] = 1
    seq: _Sequence | None = None
    cash: _Amount | None = None
    positions: list[SnapshotRow] | dict[_Name, _MapBody] = []
    converged_plan_id: _Name | None = None


@dataclass(frozen=True, slots=True)
class FastSnapshot:
    """What the table reads of a snapshot (``planner.positions.SnapshotLike``)."""

    world_id: str
    strategy_id: str
    version: tuple[int, int]
    positions: Sequence[SnapshotRow]


def _snapshot(s: _Snapshot) -> FastSnapshot:
    rows = s.positions
    if isinstance(rows, dict):
        rows = [
            SnapshotRow(
                b.symbol if isinstance(b.symbol, str) else k, b.qty, b.venue, b.mark, b.avg_cost
            )
            for k, b in rows.items()
        ]
    return FastSnapshot(s.world_id, s.strategy_id, (s.as_of, -1 if s.seq is None else s.seq), rows)


def _snapshot_names(snapshots: Sequence[FastSnapshot], decoded: Sequence[_Snapshot]) -> bool:
    ids = [n for s in decoded for n in (s.world_id, s.strategy_id, s.converged_plan_id)]
    symbols = [r.symbol for s in snapshots for r in s.positions]
    venues = [r.venue for s in snapshots for r in s.positions]
    return _names_allowed([ids, symbols, venues])


def _qmtl_table(rows: Sequence[QmtlRow]) -> PositionTable:
    return PositionTable.from_labels(
        world_ids=[r.world_id for r in rows],
        strategy_ids=[r.strategy_id for r in rows],
        venues=[r.venue for r in rows],
        symbols=[r.symbol for r in rows],
        qty=np.array([r.qty for r in rows], dtype=np.float64),
        mark=np.array([r.mark for r in rows], dtype=np.float64),  # None is NaN
    )


Shape = Literal["ours", "qmtl"]

QMTL_KEYS = frozenset({"world_alloc_after", "world_alloc_before", "positions", "total_equity"})
"""A request with any of these (and no ``event``) is QMTL's."""


@dataclass(frozen=True)
class FastRequest:
    """A request as the fast path read it: its shape, every top-level field as orjson reads
    it (the rows' field holds ``[]``: the models check all but the rows), and the rows'
    table, built on demand."""

    shape: Shape
    fields: dict[str, Any]
    table: Callable[[], PositionTable]


_ROWS = ("positions", "snapshots")


class FastDecoder:
    """Decodes requests whose top-level fields are ``fields`` (those of both shapes) plus
    QMTL's ``positions`` rows and our ``snapshots``."""

    def __init__(self, fields: Iterable[str]) -> None:
        self.fields = tuple(sorted(set(fields) - set(_ROWS)))
        raw_fields: list[tuple[str, Any, Any]] = [
            (name, msgspec.Raw, msgspec.Raw()) for name in self.fields
        ]
        struct = msgspec.defstruct(
            "_Request",
            [
                *raw_fields,
                ("positions", list[QmtlRow] | msgspec.UnsetType, msgspec.UNSET),
                ("snapshots", list[_Snapshot] | msgspec.UnsetType, msgspec.UNSET),
            ],
            forbid_unknown_fields=True,
        )
        self._decode = msgspec.json.Decoder(struct).decode

    def decode(self, raw: bytes | str) -> FastRequest | None:
        """The request, or None when the fast path cannot vouch for it (take the models')."""
        try:
            data = raw.encode() if isinstance(raw, str) else raw
            doc: Any = self._decode(data)
            fields = {}
            for name in self.fields:
                value = getattr(doc, name)
                if len(value):  # inside brackets: as deep as in the request, for orjson's limit
                    fields[name] = orjson.loads(b"[" + bytes(value) + b"]")[0]
        except (msgspec.DecodeError, msgspec.ValidationError, orjson.JSONDecodeError):
            return None
        except (RecursionError, UnicodeError):  # nested too deep; a lone surrogate in a str
            return None
        positions: list[QmtlRow] | msgspec.UnsetType = doc.positions
        snapshots: list[_Snapshot] | msgspec.UnsetType = doc.snapshots
        check = _needs_name_check(data)
        if "event" in fields:
            if not isinstance(positions, msgspec.UnsetType):
                return None  # ours takes no positions: the model explains
            decoded = [] if isinstance(snapshots, msgspec.UnsetType) else snapshots
            table = [_snapshot(s) for s in decoded]
            if check and not _snapshot_names(table, decoded):
                return None
            if not isinstance(snapshots, msgspec.UnsetType):
                fields["snapshots"] = []
            return FastRequest("ours", fields, lambda: PositionTable.from_snapshots(table))
        if isinstance(positions, msgspec.UnsetType):
            rows: list[QmtlRow] = []
            if not fields.keys() & QMTL_KEYS:
                return None
        else:
            rows = positions
            fields["positions"] = []
        if not isinstance(snapshots, msgspec.UnsetType):
            return None  # QMTL's takes no snapshots: the model explains
        if check and not _names_allowed(
            [
                [r.world_id for r in rows],
                [r.strategy_id for r in rows],
                [r.symbol for r in rows],
                [r.venue for r in rows],
            ]
        ):
            return None
        return FastRequest("qmtl", fields, lambda: _qmtl_table(rows))
