"""Hostile raw messages for the fuzz tests: allocation events, snapshots and plan requests.

Every generator builds a valid message first (from small pools of worlds, strategies and
symbols, so valid events plan against valid snapshots) and then, most of the time, breaks it:
extreme numbers written as JSON text, ids with control characters, missing and extra fields,
wrong types and tags, deep nesting, duplicate keys, truncated or non-JSON bytes, huge arrays.

Each message carries a ``kind`` label (what was done to it) and ``expected``: True when it was
built to be valid (for the decoders: schema, bounds and key; the engine may still refuse it
against its state), False when it was built to be invalid, None when the generator cannot
tell (a number moved within its bounds may break a sum, a duplicate key, ...).

The same generators feed hypothesis (``allocation_messages()``, ``snapshot_messages()``,
``plan_requests()`` and ``labelled(...)``) and plain ``random.Random`` (``hostile_corpus``),
through the two-method ``Rng`` interface (``choice``, ``randint``).
"""

from __future__ import annotations

import json
import math
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from hypothesis import strategies as st

from service.messages._types import (
    MAX_AMOUNT,
    MAX_EPOCH_MS,
    MAX_LOT,
    MAX_PRICE,
    MAX_QUANTITY,
    MAX_SEQ,
    MIN_LOT,
)

MIN_PRICE = math.ulp(0.0)
"""The smallest mark the input contract allows: marks lie in (0, 1e12], so the smallest positive
float (a tiny mark that makes a huge target is refused by the plan's own check)."""

T = TypeVar("T")

# -- randomness -----------------------------------------------------------------------------


class Rng(Protocol):
    """What the generators draw with: ``random.Random`` or hypothesis draws."""

    def choice(self, seq: Sequence[T]) -> T: ...
    def randint(self, a: int, b: int) -> int: ...


class _Draws:
    """``Rng`` over hypothesis draws (shrinks towards the first choice and the low end)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def choice(self, seq: Sequence[T]) -> T:
        return self._draw(st.sampled_from(list(seq)))

    def randint(self, a: int, b: int) -> int:
        return self._draw(st.integers(a, b))


def chance(r: Rng, num: int, den: int) -> bool:
    """True with probability num/den (shrinks to False)."""
    return r.randint(0, den - 1) >= den - num


# -- raw JSON text --------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: a token JSON may not allow (NaN), a huge integer, a lone
    surrogate escape, a raw control byte."""

    text: str


@dataclass
class Obj:
    """A JSON object with possibly repeated keys."""

    pairs: list[tuple[Any, Any]]


def render(value: Any, *, ascii_only: bool = True, spaced: bool = False) -> str:
    """``value`` as JSON text; ``Raw`` parts verbatim, floats as Python writes them (NaN,
    Infinity for the non-finite ones)."""
    colon, comma = (": ", ", ") if spaced else (":", ",")

    def text(v: Any) -> str:
        if isinstance(v, Raw):
            return v.text
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            if math.isnan(v):
                return "NaN"
            if math.isinf(v):
                return "Infinity" if v > 0 else "-Infinity"
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=ascii_only)
        if isinstance(v, dict):
            v = Obj(list(v.items()))
        if isinstance(v, Obj):
            return "{" + comma.join(text(k) + colon + text(x) for k, x in v.pairs) + "}"
        if isinstance(v, list | tuple):
            return "[" + comma.join(text(x) for x in v) + "]"
        raise TypeError(f"cannot render {type(v).__name__}")

    return text(value)


def to_bytes(value: Any, r: Rng | None = None) -> bytes:
    """Render and encode (lone surrogates pass through as the invalid UTF-8 they make)."""
    ascii_only = True if r is None else not chance(r, 1, 4)
    spaced = False if r is None else chance(r, 1, 3)
    return render(value, ascii_only=ascii_only, spaced=spaced).encode("utf-8", "surrogatepass")


# -- pools and bounds -----------------------------------------------------------------------

WORLDS = ("a", "b", "c")
STRATEGIES = ("s1", "s2", "s3")
SYMBOLS = ("X", "BTC", "ETH")
VENUES: tuple[str | None, ...] = ("v1", "v2", None)
PORTFOLIOS = ("default", "p2")
LOTS = (0.001, 0.1, 0.25, 1.0, MIN_LOT, MAX_LOT, 1e-9)

CONTROL_CHARS = [chr(c) for c in range(0x20)] + ["\x7f", "\x80", "\x85", "\x9f", "\u2028", "\u2029"]
"""Characters no id may hold (C0, DEL, C1, U+2028, U+2029)."""

VALID_ODD_CHARS = ("é", "\u00a0", "\ufeff", "\U0001f680", "€", " ", "\\", '"', "/", "\u2027")
"""Characters an id may hold although they look suspicious."""

LONE_SURROGATES = ("\\ud800", "\\udfff", "\\udbff", "\\ud800\\u0041", "\\udc00\\ud800")

EXTREME_TOKENS = (
    "0",
    "-0",
    "-0.0",
    "0.0",
    "5e-324",
    "-5e-324",
    "1e-300",
    "1e-400",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "1e309",
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "9007199254740991",
    "9007199254740992",
    "1" + "0" * 400,
    "-1" + "0" * 400,
    "1.0",
    "1e0",
    "2",
    "-1",
    "1E2",
    "1e15",
    "1.0000000000000002e15",
    "1e27",
    "1.0000000000000002e27",
    "1e-12",
    "9.999999999999999e-13",
    "1e12",
    "1.0000000000000002e12",
    "253402300799999",
    "253402300800000",
    "1.0000000000000002",
    "NaN",
    "Infinity",
    "-Infinity",
    "-NaN",
    "inf",
    "nan",
    '"1"',
    '"0.5"',
    '"NaN"',
    "true",
    "false",
    "null",
    "[]",
    "{}",
    "[1]",
    '""',
    "+1",
    "01",
    ".5",
    "1.",
    "0x10",
    "1e",
)
"""Numbers (and not-numbers) as JSON text, for any field that holds a number."""

INT, FLOAT = "int", "float"
Spec = tuple[str, float, float]
FIELD_SPECS: dict[str, Spec] = {
    "occurred_at": (INT, 0, MAX_EPOCH_MS),
    "as_of": (INT, 0, MAX_EPOCH_MS),
    "seq": (INT, 0, MAX_SEQ),
    "schema_version": (INT, 1, 1),
    "qty": (FLOAT, -MAX_QUANTITY, MAX_QUANTITY),
    "mark": (FLOAT, MIN_PRICE, MAX_PRICE),
    "avg_cost": (FLOAT, -MAX_AMOUNT, MAX_AMOUNT),
    "cash": (FLOAT, -MAX_AMOUNT, MAX_AMOUNT),
    "total_equity": (FLOAT, 0, MAX_AMOUNT),
    "min_trade_notional": (FLOAT, 0, MAX_AMOUNT),
    "weight": (FLOAT, 0, 1),
}
"""The bounds of a number field, by name (``messages._types``)."""

RATIO: Spec = (FLOAT, 0, 1)
LOT: Spec = (FLOAT, MIN_LOT, MAX_LOT)
FINITE: Spec = (FLOAT, -math.inf, math.inf)
RATIO_MAPS = frozenset(
    {
        "world_alloc_after",
        "world_alloc_before",
        "strategy_alloc_after_total",
        "strategy_alloc_before_total",
        "world_alloc",
        "strategy_alloc",
    }
)
LOT_MAPS = frozenset({"lot_size_by_symbol"})
LABEL_MAPS = frozenset({"measured", "targets"})
FREE_ZONES = frozenset(
    {"options", "rebalance_intent", "realized_returns_by_world", "stress_by_world"}
)
"""Parts of a request that are not wire fields with strict types (planner options coerce)."""

ID_FIELDS = frozenset(
    {
        "event_id",
        "portfolio_id",
        "world_id",
        "strategy_id",
        "symbol",
        "venue",
        "policy",
        "converged_plan_id",
    }
)
"""Fields holding an id (``Name``): 1-200 characters, no '|', no control characters."""

ID_KEYED_MAPS = RATIO_MAPS | LOT_MAPS
"""Maps whose keys are ids (and QMTL's positions map, keyed by symbol)."""

DocKind = Literal["event", "snapshot", "qmtl", "ours"]

# -- valid messages -------------------------------------------------------------------------


def _fractions(r: Rng, n: int, total: float) -> list[float]:
    """n ratios adding up to at most ``total``."""
    raw = [r.randint(0, 1000) for _ in range(n)]
    scale = max(sum(raw), 1000)
    out = [total * x / scale for x in raw]
    if chance(r, 1, 8):  # exactly the whole budget on one
        out = [0.0] * n
        out[r.randint(0, n - 1)] = total
    return out


def _ratio_map(r: Rng, names: Sequence[str], total: float) -> dict[str, float]:
    picked = _subset(r, names)
    return dict(zip(picked, _fractions(r, len(picked), total), strict=True))


def _subset(r: Rng, names: Sequence[str], min_size: int = 1) -> list[str]:
    n = r.randint(min_size, len(names))
    pool = list(names)
    out = []
    for _ in range(n):
        out.append(pool.pop(r.randint(0, len(pool) - 1)))
    return sorted(out)


def _time(r: Rng) -> int:
    return r.choice([1_000, 5_000, 1_763_790_000_000, 0, MAX_EPOCH_MS, r.randint(0, 10**7)])


def _event_id(r: Rng, prefix: str = "e") -> str:
    return f"{prefix}{r.randint(0, 10**9)}"


def valid_world_move(r: Rng) -> dict[str, Any]:
    worlds = _subset(r, WORLDS)
    after = dict(zip(worlds, _fractions(r, len(worlds), 1.0), strict=True))
    if chance(r, 1, 10):
        after = {worlds[0]: r.choice([1e-300, 5e-324, 1.0, 0.0, 1e-9])}
        worlds = worlds[:1]
    doc: dict[str, Any] = {
        "type": "world_allocations_changed",
        "event_id": _event_id(r),
        "occurred_at": _time(r),
        "total_equity": r.choice([1_000_000.0, 1_000.0, 0.0, 1.0, MAX_AMOUNT, 5e-324, 1e9]),
        "world_alloc_after": after,
    }
    if chance(r, 1, 2):
        doc["schema_version"] = 1
    if chance(r, 1, 3):
        doc["portfolio_id"] = r.choice(PORTFOLIOS)
    if chance(r, 4, 5):
        names = sorted(set(worlds) | set(_subset(r, WORLDS)))
        before = dict(zip(names, _fractions(r, len(names), 1.0), strict=True))
        if chance(r, 1, 10):
            before = {w: r.choice([1e-300, 5e-324, 0.0]) for w in names}
        doc["world_alloc_before"] = before
    if chance(r, 1, 2):
        doc["strategy_alloc_after_total"] = {
            w: _ratio_map(r, STRATEGIES, after[w]) for w in _subset(r, worlds)
        }
    if chance(r, 1, 3):
        before_worlds = doc.get("world_alloc_before", {})
        doc["strategy_alloc_before_total"] = {
            w: _ratio_map(r, STRATEGIES, before_worlds.get(w, 1.0)) for w in _subset(r, worlds)
        }
    if chance(r, 1, 3):
        doc["min_trade_notional"] = r.choice([0.0, 1.0, 10.0, 1e6, MAX_AMOUNT, 5e-324])
    if chance(r, 1, 3):
        doc["lot_size_by_symbol"] = {s: r.choice(LOTS) for s in _subset(r, SYMBOLS)}
    return doc


def valid_weights_update(r: Rng) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "strategy_weights_updated",
        "event_id": _event_id(r, "w"),
        "occurred_at": _time(r),
        "world_id": r.choice(WORLDS),
        "strategy_alloc_after_total": _ratio_map(r, STRATEGIES, r.choice([1.0, 0.3, 0.1, 1e-9])),
    }
    if chance(r, 1, 3):
        doc["portfolio_id"] = r.choice(PORTFOLIOS)
    if chance(r, 1, 2):
        doc["strategy_alloc_before_total"] = _ratio_map(r, STRATEGIES, r.choice([1.0, 0.2]))
    return doc


def valid_policy(r: Rng) -> dict[str, Any]:
    world = r.choice(WORLDS)
    target: dict[str, Any]
    if chance(r, 1, 2):
        target = {"kind": "allocation"}
        if chance(r, 1, 2):
            target["measure"] = r.choice(["gross", "net"])
    else:
        keys = [(v, s) for v in VENUES for s in SYMBOLS]
        n = r.randint(1, 4)
        picked = []
        for _ in range(n):
            k = r.choice(keys)
            if k not in picked:
                picked.append(k)
        weights = _fractions(r, len(picked), 1.0)
        target = {
            "kind": "weights",
            "weights": [
                {"venue": v, "symbol": s, "weight": w}
                for (v, s), w in zip(picked, weights, strict=True)
            ],
        }
        if chance(r, 1, 2):
            target["base"] = r.choice(["allocation", "holdings"])
        if chance(r, 1, 3):
            target["strategy_id"] = r.choice(STRATEGIES)
    doc: dict[str, Any] = {
        "type": "policy_rebalance",
        "event_id": f"policy:keep:{world}:{r.randint(0, 10**9)}",
        "occurred_at": _time(r),
        "world_id": world,
        "policy": r.choice(["keep", "band5", "smart"]),
        "trigger": r.choice(["band", "calendar", "hybrid", "regime"]),
        "target": target,
    }
    if chance(r, 1, 3):
        doc["portfolio_id"] = r.choice(PORTFOLIOS)
    if chance(r, 1, 3):
        doc["reason"] = r.choice(["", "drift 7%", "x" * 1000, "\u2028 tab\t"])
    if chance(r, 1, 3):
        doc["measured"] = {"world": r.choice([0.1, 0.0, -1.0, 1e308]), "X": 0.5}
    if chance(r, 1, 3):
        doc["targets"] = {"world": 0.2}
    if target["kind"] == "weights" and chance(r, 1, 3):  # weights a risk-based rule estimated
        doc["estimate"] = {
            "method": r.choice(["kelly", "risk_parity", "equal"]),
            "overlays": r.choice([[], ["vol_target"], ["vol_target", "drawdown_guard"]]),
            "samples": r.randint(0, 400),
            "sample_ms": r.choice([1, 3_600_000, 86_400_000]),
            "first_sample_at": _time(r),
            "before_overlays": {"binance:BTCUSDT": 0.5},
            "drawdown": r.choice([None, 0.0, 0.3]),
            "exposure": r.choice([None, 0.5, 1.0]),
        }
    return doc


def _quantity(r: Rng) -> float:
    if chance(r, 1, 5):
        return r.choice([MAX_QUANTITY, -MAX_QUANTITY, 5e-324, -0.0, 0.0, 1e-12, -1e-300])
    return r.randint(-2000, 2000) / r.choice([1, 4, 10, 1000])


def _mark(r: Rng) -> float:
    if chance(r, 1, 5):
        return r.choice([MIN_PRICE, MAX_PRICE, 1e-9, 1e9])
    return r.choice([100.0, 60_000.0, 3_000.0, 0.5, 1.0])


def _position(r: Rng, *, with_symbol: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if with_symbol:
        row["symbol"] = r.choice(SYMBOLS)
    venue = r.choice(VENUES)
    if venue is not None or chance(r, 1, 3):
        row["venue"] = venue
    row["qty"] = _quantity(r)
    if chance(r, 5, 6):
        row["mark"] = _mark(r)
    elif chance(r, 1, 2):
        row["mark"] = None
    if chance(r, 1, 4):
        row["avg_cost"] = r.choice([58_000.0, 0.0, -5.0, MAX_AMOUNT, -MAX_AMOUNT])
    return row


def valid_snapshot(r: Rng, *, map_form: bool | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "world_id": r.choice(WORLDS),
        "strategy_id": r.choice(STRATEGIES),
        "as_of": _time(r),
    }
    if chance(r, 1, 3):
        doc["schema_version"] = 1
    if chance(r, 1, 3):
        doc["seq"] = r.choice([0, 1, 17, MAX_SEQ, None])
    if chance(r, 1, 3):
        doc["cash"] = r.choice([1000.0, 0.0, -1e6, MAX_AMOUNT, -MAX_AMOUNT, None])
    if chance(r, 1, 4):
        doc["converged_plan_id"] = r.choice(["0" * 32, "plan-1", None])
    if map_form is None:
        map_form = chance(r, 1, 4)
    n = r.choice([0, 1, 1, 2, 3])
    if map_form:
        body: dict[str, Any] = {}
        for _ in range(n):
            row = _position(r, with_symbol=False)
            row.pop("venue", None)
            if chance(r, 1, 6):
                row["symbol"] = r.choice(SYMBOLS)  # wins over the key
            body[r.choice(SYMBOLS)] = row
        doc["positions"] = body
    elif n or chance(r, 1, 2):
        doc["positions"] = [_position(r) for _ in range(n)]
    return doc


def snapshot_key(doc: Any) -> bytes | None:
    """The topic key a snapshot document should carry (None when its ids are not text)."""
    if not isinstance(doc, dict):
        return None
    w, s = doc.get("world_id"), doc.get("strategy_id")
    if not isinstance(w, str) or not isinstance(s, str):
        return None
    return f"{w}|{s}".encode("utf-8", "surrogatepass")


def _valid_options(r: Rng) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if chance(r, 1, 2):
        out["lot_size_by_symbol"] = {s: r.choice(LOTS) for s in _subset(r, SYMBOLS)}
    if chance(r, 1, 3):
        out["min_trade_notional"] = r.choice([0.0, 10.0, 1e6])
    if chance(r, 1, 3):
        out["flip_policy"] = r.choice(["flatten_then_open", "direct_flip"])
        out["direct_flip_venues"] = ["v1"]
    if chance(r, 1, 3):
        out["scale_rule"] = r.choice(["strategy", "bounded"])
    if chance(r, 1, 4):
        out["execution_mode"] = "shared_account"
        out["allow_shared_account"] = True
    if chance(r, 1, 4):
        out["qty_decimals"] = r.randint(0, 15)
    if chance(r, 1, 4):
        out["lot_size_by_venue"] = {"v1": {"BTC": 0.001}}
    return out


def valid_ours_request(r: Rng) -> dict[str, Any]:
    """Our request shape; every world of the event has a before allocation."""
    if chance(r, 3, 4):
        event = valid_world_move(r)
        before = dict(event.get("world_alloc_before") or {})
        for w in event["world_alloc_after"]:
            before.setdefault(w, 0.0)
        if sum(before.values()) > 1:
            before = dict.fromkeys(before, 0.0)
        event["world_alloc_before"] = before
        event.pop("strategy_alloc_before_total", None)
    else:
        event = valid_weights_update(r)
    doc: dict[str, Any] = {
        "event": event,
        "snapshots": [valid_snapshot(r) for _ in range(r.randint(0, 4))],
    }
    if event["type"] == "strategy_weights_updated" or chance(r, 1, 4):
        doc["total_equity"] = r.choice([1_000_000.0, 0.0, 5e-324, MAX_AMOUNT])
    if event["type"] == "strategy_weights_updated" and chance(r, 1, 2):
        doc["current"] = {
            "world_alloc": {event["world_id"]: 1.0},
            "strategy_alloc": {event["world_id"]: _ratio_map(r, STRATEGIES, 1.0)},
        }
    if chance(r, 1, 2):
        doc["options"] = _valid_options(r)
    return doc


def valid_qmtl_request(r: Rng) -> dict[str, Any]:
    event = valid_world_move(r)
    after = event["world_alloc_after"]
    before = dict(event.get("world_alloc_before") or {})
    for w in after:
        before.setdefault(w, 0.0)
    if sum(before.values()) > 1:
        before = dict.fromkeys(before, 0.0)
    doc: dict[str, Any] = {
        "total_equity": event["total_equity"],
        "world_alloc_before": before,
        "world_alloc_after": after,
        "positions": [
            {
                "world_id": r.choice(WORLDS),
                "strategy_id": r.choice(STRATEGIES),
                **_position(r),
            }
            for _ in range(r.randint(0, 5))
        ],
    }
    for row in doc["positions"]:
        row.pop("avg_cost", None)  # QMTL rows carry no average cost
    if "strategy_alloc_after_total" in event:
        doc["strategy_alloc_after_total"] = event["strategy_alloc_after_total"]
    if chance(r, 1, 3):
        doc["strategy_alloc_before_total"] = {
            w: _ratio_map(r, STRATEGIES, before[w]) for w in _subset(r, sorted(before))
        }
    for name in ("min_trade_notional", "lot_size_by_symbol"):
        if name in event:
            doc[name] = event[name]
    if chance(r, 1, 4):
        doc["mode"] = "scaling"
    if chance(r, 1, 4):
        doc["schema_version"] = r.choice([1, 2])
    if chance(r, 1, 4):
        doc["event_id"] = _event_id(r, "q")
    if chance(r, 1, 4):
        doc["occurred_at"] = _time(r)
    if chance(r, 1, 4):
        doc["portfolio_id"] = r.choice(PORTFOLIOS)
    if chance(r, 1, 4):
        doc["rebalance_intent"] = {"note": "x", "n": [1, 2.5, None]}
    if chance(r, 1, 3):
        doc["options"] = _valid_options(r)
    return doc


# -- paths into documents -------------------------------------------------------------------

Path = tuple[Any, ...]


@dataclass(frozen=True)
class Leaf:
    """A place in a document: a value (``key_of`` False) or a dict key (True)."""

    path: Path
    key_of: bool
    spec: Spec | None
    """Bounds of the number there (None: no strict number, or unknown)."""
    is_id: bool
    free: bool
    """Inside a part without strict wire types (planner options, QMTL extras)."""


def _leaves(doc: Any, kind: DocKind) -> list[Leaf]:
    out: list[Leaf] = []

    def named(path: Path) -> list[str]:
        return [p for p in path if isinstance(p, str)]

    def walk(v: Any, path: Path) -> None:
        names = named(path)
        free = any(n in FREE_ZONES for n in names)
        if isinstance(v, dict):
            parent = names[-1] if names else None
            keyed = not free and (
                parent in ID_KEYED_MAPS
                or (len(names) >= 2 and names[-2] in RATIO_MAPS)
                or (parent == "positions" and kind in ("snapshot", "ours"))
            )
            for k, x in v.items():
                # a QMTL map-form body's own "symbol" wins over its key, which is then unused
                overridden = parent == "positions" and isinstance(x, dict) and "symbol" in x
                is_id = keyed and not overridden
                out.append(Leaf((*path, k), True, None, is_id, free or parent in LABEL_MAPS))
                walk(x, (*path, k))
            return
        if isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, (*path, i))
            return
        name = names[-1] if names else None
        if isinstance(v, bool) or v is None:
            out.append(Leaf(path, False, None, False, free))
        elif isinstance(v, int | float):
            out.append(Leaf(path, False, None if free else _spec(names, kind), False, free))
        elif isinstance(v, str):
            out.append(Leaf(path, False, None, not free and name in ID_FIELDS, free))

    walk(doc, ())
    return out


def _spec(names: list[str], kind: DocKind) -> Spec | None:
    if not names:
        return None
    name = names[-1]
    if len(names) >= 2 and names[-2] in RATIO_MAPS:
        return RATIO
    if len(names) >= 3 and names[-3] in RATIO_MAPS:
        return RATIO
    if len(names) >= 2 and names[-2] in LOT_MAPS:
        return LOT
    if len(names) >= 2 and names[-2] in LABEL_MAPS:
        return FINITE
    if kind == "qmtl" and name == "schema_version" and len(names) == 1:
        return (INT, 1, math.inf)
    return FIELD_SPECS.get(name)


def _objects(doc: Any, kind: DocKind) -> list[tuple[Path, bool]]:
    """Every JSON object of ``doc``: its path, and whether it is a typed object (one that
    refuses unknown fields) rather than a map keyed by ids or labels."""
    out: list[tuple[Path, bool]] = []

    def walk(v: Any, path: Path) -> None:
        names = [p for p in path if isinstance(p, str)]
        if isinstance(v, dict):
            parent = names[-1] if names else None
            keyed = (
                parent in ID_KEYED_MAPS
                or parent in LABEL_MAPS
                or (len(names) >= 2 and names[-2] in RATIO_MAPS)
                or (parent == "positions" and kind in ("snapshot", "ours"))
            )
            free = any(n in FREE_ZONES for n in names)
            out.append((path, not keyed and not free))
            for k, x in v.items():
                walk(x, (*path, k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, (*path, i))

    walk(doc, ())
    return out


def _get(doc: Any, path: Path) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v) for v in doc]
    if isinstance(doc, Obj):
        return Obj([(k, _copy(v)) for k, v in doc.pairs])
    return doc


def _set(doc: Any, leaf: Leaf, new: Any) -> Any:
    """A copy of ``doc`` with the value (or the key) at ``leaf`` replaced."""
    doc = _copy(doc)
    if not leaf.path:
        return new
    parent = _get(doc, leaf.path[:-1])
    last = leaf.path[-1]
    if leaf.key_of:
        items = list(parent.items())
        parent.clear()
        for k, v in items:
            parent[new if k == last else k] = v
    else:
        parent[last] = new
    return doc


def _delete(doc: Any, path: Path) -> Any:
    doc = _copy(doc)
    parent = _get(doc, path[:-1])
    del parent[path[-1]]
    return doc


# -- labels ---------------------------------------------------------------------------------


def token_class(text: str) -> tuple[str, Any]:
    """What JSON text decodes to: ("int", v), ("float", v), ("nonfinite", None),
    ("null", None), ("other", None) for strings, booleans, arrays and objects, or
    ("bad", None) for text that is not JSON."""
    if text in ("NaN", "Infinity", "-Infinity"):
        return "nonfinite", None

    def refuse(_: str) -> Any:
        raise ValueError

    try:
        v = json.loads(text, parse_constant=refuse)
    except ValueError:
        return "bad", None
    if v is None:
        return "null", None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "other", None
    return ("int", v) if isinstance(v, int) else ("float", v)


def number_label(spec: Spec | None, text: str) -> bool | None:
    """Whether a field of ``spec`` holding ``text`` can be valid: False when it cannot,
    None when it is within bounds (the message may still break a sum) or unknown."""
    cls, v = token_class(text)
    if cls in ("bad", "nonfinite"):
        return False
    if spec is None or cls == "null":
        return None
    if cls == "other":
        return False
    kind, lo, hi = spec
    if kind == INT:
        if cls != "int":
            return False
        return None if lo <= v <= hi else False
    try:
        f = float(v)
    except OverflowError:
        return False
    if not math.isfinite(f):
        return False
    return None if lo <= f <= hi else False


def _combine(labels: list[bool | None]) -> bool | None:
    if all(x is True for x in labels):
        return True
    if len(labels) == 1:
        return labels[0]
    return None


# -- mutations ------------------------------------------------------------------------------

Mutated = tuple[str, Any, bool | None]
"""(kind, document or final bytes, expected)."""

REQUIRED: dict[str, tuple[str, ...]] = {
    "world_allocations_changed": (
        "type",
        "event_id",
        "occurred_at",
        "total_equity",
        "world_alloc_after",
    ),
    "strategy_weights_updated": (
        "type",
        "event_id",
        "occurred_at",
        "world_id",
        "strategy_alloc_after_total",
    ),
    "policy_rebalance": (
        "type",
        "event_id",
        "occurred_at",
        "world_id",
        "policy",
        "trigger",
        "target",
    ),
    "snapshot": ("world_id", "strategy_id", "as_of"),
    "qmtl": ("total_equity", "world_alloc_before", "world_alloc_after", "positions"),
    "ours": ("event",),
}


def _required(doc: dict[str, Any], kind: DocKind) -> tuple[str, ...]:
    if kind == "event":
        return REQUIRED.get(str(doc.get("type")), ("type",))
    return REQUIRED[kind]


def _random_float_text(r: Rng) -> str:
    bits = r.randint(0, 2**64 - 1)
    return render(struct.unpack("<d", struct.pack("<Q", bits))[0])


def _deep(r: Rng) -> str:
    depth = r.choice([2, 100, 255, 256, 257, 1000, 5000, 50_000])
    if chance(r, 1, 2):
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _hostile_id(r: Rng) -> tuple[str, Any, bool | None]:
    """(kind, replacement, expected) for an id."""
    base = r.choice(["a", "s1", "X", "e1"])
    choice = r.randint(0, 9)
    if choice == 0:
        c = r.choice(CONTROL_CHARS)
        at = r.randint(0, len(base))
        return "id_control_char", base[:at] + c + base[at:], False
    if choice == 1:
        return "id_pipe", r.choice(["a|b", "|", "a|", "|s1"]), False
    if choice == 2:
        return "id_empty", "", False
    if choice == 3:
        return "id_too_long", "w" * r.choice([201, 1000, 100_000]), False
    if choice == 4:
        return "id_lone_surrogate", Raw('"' + base + r.choice(LONE_SURROGATES) + '"'), False
    if choice == 5:
        c = r.choice([chr(x) for x in range(0x20)] + ["\x7f"])
        return "id_raw_control", Raw('"' + base + c + '"'), False
    if choice == 6:
        return "id_raw_surrogate", "x" + chr(r.randint(0xD800, 0xDFFF)), False
    if choice == 7:
        return "id_max_length", "m" * 200, None
    if choice == 8:
        return "id_odd_but_valid", base + r.choice(VALID_ODD_CHARS), None
    return "id_not_text", Raw(r.choice(["5", "[]", "{}", "true", "1.5", '["a"]'])), False


def _hostile_key(r: Rng) -> tuple[str, Any, bool | None]:
    kind, new, expected = _hostile_id(r)
    if kind == "id_not_text":
        return "id_empty", "", False
    return kind, new, expected


def _hostile_string(r: Rng) -> Any:
    return r.choice(
        [
            "",
            "\x00",
            "\u2028",
            "|",
            "x" * 1001,
            Raw('"\\ud800"'),
            Raw('"a\x01"'),
            "null",
            "NaN",
            "🚀",
            Raw("5"),
            Raw("null"),
        ]
    )


def mutate(r: Rng, doc: dict[str, Any], kind: DocKind) -> Mutated:
    """Break (or bend) one thing of a valid document."""
    leaves = _leaves(doc, kind)
    numbers = [x for x in leaves if not x.key_of and x.spec is not None]
    anynum = [
        x
        for x in leaves
        if not x.key_of
        and isinstance(_get(doc, x.path), int | float)
        and not isinstance(_get(doc, x.path), bool)
    ]
    ids = [x for x in leaves if x.is_id]
    strings = [x for x in leaves if not x.key_of and isinstance(_get(doc, x.path), str)]
    what = r.randint(0, 21)
    if what <= 3 and anynum:  # an extreme number where a number goes
        leaf = r.choice(numbers if numbers and chance(r, 3, 4) else anynum)
        text = r.choice(EXTREME_TOKENS) if chance(r, 4, 5) else _random_float_text(r)
        cls = token_class(text)[0]
        kind_label = {
            "nonfinite": "nonfinite_number",
            "bad": "bad_number_token",
            "other": "string_for_number",
            "null": "null_number",
        }.get(cls, "extreme_number")
        return kind_label, _set(doc, leaf, Raw(text)), number_label(leaf.spec, text)
    if what <= 6 and ids:  # a hostile id
        leaf = r.choice(ids)
        label, new, expected = _hostile_key(r) if leaf.key_of else _hostile_id(r)
        return label, _set(doc, leaf, new), expected
    if what == 7 and strings:
        leaf = r.choice(strings)
        return "string_any", _set(doc, leaf, _hostile_string(r)), None
    if what == 8:  # a required field missing
        name = r.choice(_required(doc, kind))
        if name in doc:
            return "missing_field", _delete(doc, (name,)), False
    if what == 9:  # an optional one missing
        optional = [k for k in doc if k not in _required(doc, kind)]
        if optional:
            return "missing_optional", _delete(doc, (r.choice(optional),)), None
    if what == 10:  # an unknown field, at the top or inside a typed object
        path = r.choice([p for p, typed in _objects(doc, kind) if typed])
        out = _copy(doc)
        _get(out, path)[r.choice(["extra", "Type", "qty_", "__proto__"])] = 1
        return "extra_field", out, False
    if what == 11:  # wrong type tag
        if kind in ("event",):
            tag = r.choice(
                [
                    "manual_override",
                    "World_allocations_changed",
                    "",
                    Raw("5"),
                    None,
                    Raw("[]"),
                    "world_allocations_changed\x00",
                ]
                + [
                    t
                    for t in (
                        "world_allocations_changed",
                        "strategy_weights_updated",
                        "policy_rebalance",
                    )
                    if t != doc.get("type")
                ]
            )
            return "wrong_type", {**_copy(doc), "type": tag}, False
        return "wrong_type", {**_copy(doc), "type": "snapshot"}, False
    if what == 12:  # schema_version
        text = r.choice(["1", "1.0", "2", '"1"', "true", "0", "-1", "1e0", "18446744073709551617"])
        if kind == "qmtl":
            return "schema_version", {**_copy(doc), "schema_version": Raw(text)}, None
        if kind == "ours":
            event = {**_copy(doc["event"]), "schema_version": Raw(text)}
            return "schema_version", {**_copy(doc), "event": event}, _sv_label(text)
        return "schema_version", {**_copy(doc), "schema_version": Raw(text)}, _sv_label(text)
    if what == 13:  # deep nesting somewhere
        if chance(r, 1, 3) or not leaves:
            return "deep_nesting", _deep(r).encode(), False
        leaf = r.choice([x for x in leaves if not x.key_of] or leaves)
        if leaf.key_of:
            return "deep_nesting", _deep(r).encode(), False
        return "deep_nesting", _set(doc, leaf, Raw(_deep(r))), None if leaf.free else False
    if what == 14:  # a duplicate key
        path = r.choice([p for p, _ in _objects(doc, kind)])
        holder = _get(doc, path)
        if holder:
            k = r.choice(list(holder))
            pairs = list(holder.items())
            twin = r.choice([Raw('"x|y"'), Raw("1"), Raw("null"), _copy(holder[k])])
            if chance(r, 1, 2):
                pairs.append((k, twin))
            else:
                pairs.insert(0, (k, twin))
            new = Obj(pairs)
            out = new if not path else _set(doc, Leaf(path, False, None, False, False), new)
            return "duplicate_key", out, None
    if what == 15:  # a ratio just above one, or a sum just above its bound
        return _ratio_mutation(r, doc, kind)
    if what == 16:  # a scalar becomes a huge array, or an id a huge string
        if numbers and chance(r, 1, 2):
            leaf = r.choice(numbers)
            return (
                "huge_array_for_number",
                _set(doc, leaf, list(range(r.choice([10, 5000])))),
                False,
            )
        if ids:
            leaf = r.choice(ids)
            if not leaf.key_of:
                return "huge_string_id", _set(doc, leaf, "z" * r.choice([201, 10**6])), False
    if what == 17:  # bounds, exactly at and just past
        edge = _edge(r, doc, kind, leaves)
        if edge is not None:
            return edge
    if what == 18:
        return _bytes_mutation(r, to_bytes(doc))
    if what == 19 and anynum:  # the same number as float, string or bool
        leaf = r.choice(anynum)
        v = _get(doc, leaf.path)
        text = r.choice([json.dumps(str(v)), repr(float(v)), "true"])
        if isinstance(v, float):
            text = r.choice([json.dumps(str(v)), "true", "[" + repr(v) + "]"])
        label = "int_as_float" if text.endswith(".0") or "e" in text else "wrong_json_type"
        return label, _set(doc, leaf, Raw(text)), number_label(leaf.spec, text)
    if what == 20:  # negative zero and negative tiny ratios
        ratios = [x for x in numbers if x.spec in (RATIO, FIELD_SPECS["weight"])]
        if ratios:
            leaf = r.choice(ratios)
            text = r.choice(["-0.0", "-0", "-5e-324", "-1e-300", "-1"])
            expected = None if text in ("-0.0", "-0") else False
            return "negative_ratio", _set(doc, leaf, Raw(text)), expected
    if what == 21 and kind == "snapshot":
        return "huge_positions", {**_copy(doc), "positions": _many_positions(r)}, True
    return "unchanged", doc, True


def _sv_label(text: str) -> bool | None:
    return text == "1"


def _many_positions(r: Rng) -> Raw:
    """Thousands of valid position rows (as text: later mutations leave them alone)."""
    n = r.choice([100, 1000, 5000])
    rows = [
        {"symbol": f"S{i}", "venue": "v1", "qty": float(i % 7 - 3), "mark": 1.0 + i % 5}
        for i in range(n)
    ]
    return Raw(json.dumps(rows))


def _ratio_mutation(r: Rng, doc: dict[str, Any], kind: DocKind) -> Mutated:
    above = r.choice([math.nextafter(1.0, 2.0), 1.0000001, 1 + 2e-9, 2.0, 1e308])
    delta = r.choice([2e-9, 1e-7, 0.25])
    event = doc["event"] if kind == "ours" else doc
    out = _copy(doc)
    target = out["event"] if kind == "ours" else out
    t = event.get("type") if isinstance(event, dict) else None
    if kind in ("qmtl",) or t == "world_allocations_changed":
        after = target["world_alloc_after"]
        w = r.choice(list(after))
        if chance(r, 1, 3):
            after[w] = above
            return "ratio_above_one", out, False
        if chance(r, 1, 2) or len(after) < 2:
            strategies = target.get("strategy_alloc_after_total") or {}
            if strategies.get(w):
                s = r.choice(list(strategies[w]))
                rest = sum(v for k, v in strategies[w].items() if k != s)
                strategies[w][s] = after[w] - rest + delta
                if strategies[w][s] <= 1:
                    return "strategy_sum_above_world", out, False
        # the worlds' sum just above one, each ratio valid
        names = list(after)
        if len(names) < 2:
            names.append(next(x for x in WORLDS if x not in names))
            after[names[-1]] = 0.0
        share = (1.0 + delta) / len(names)
        for n in names:
            after[n] = share
        target.pop("strategy_alloc_after_total", None)
        if kind == "qmtl":
            for n in names:
                target["world_alloc_before"].setdefault(n, 0.0)
        return "world_sum_above_one", out, False
    if t == "strategy_weights_updated":
        after = target["strategy_alloc_after_total"]
        if chance(r, 1, 2):
            after[r.choice(list(after))] = above
            return "ratio_above_one", out, False
        names = list(after)
        if len(names) < 2:
            names.append(next(x for x in STRATEGIES if x not in names))
        for n in names:
            after[n] = (1.0 + delta) / len(names)
        return "strategy_sum_above_one", out, False
    if t == "policy_rebalance" and target["target"].get("kind") == "weights":
        weights = target["target"]["weights"]
        if chance(r, 1, 2) or len(weights) < 2:
            r.choice(weights)["weight"] = above
            return "ratio_above_one", out, False
        for row in weights:
            row["weight"] = (1.0 + delta) / len(weights)
        return "weight_sum_above_one", out, False
    if kind == "snapshot":  # marks are prices: zero and negative are out
        positions = target.get("positions")
        rows = list(positions.values()) if isinstance(positions, dict) else positions or []
        if rows:
            mark = r.choice([0.0, -1.0, -0.0, 5e-324, 1e-300, 1e-13])
            r.choice(rows)["mark"] = mark
            return "mark_too_small", out, False if mark < MIN_PRICE else None
    return "unchanged", doc, True


def _edge(r: Rng, doc: dict[str, Any], kind: DocKind, leaves: list[Leaf]) -> Mutated | None:
    """A bounded field set exactly to its bound (valid) or one step past it (invalid)."""
    fields = [
        x
        for x in leaves
        if not x.key_of
        and not x.free
        and x.spec is not None
        and isinstance(x.path[-1], str)
        and x.path[-1] in ("occurred_at", "as_of", "seq", "qty", "mark", "avg_cost", "cash")
        and x.path[-1] in FIELD_SPECS
    ]
    if kind in ("event", "ours", "qmtl"):
        fields += [x for x in leaves if not x.key_of and x.spec == LOT]
        fields += [
            x
            for x in leaves
            if not x.key_of
            and not x.free
            and x.spec is not None
            and x.path
            and x.path[-1] in ("total_equity", "min_trade_notional")
        ]
    if not fields:
        return None
    leaf = r.choice(fields)
    assert leaf.spec is not None, leaf
    number_kind, lo, hi = leaf.spec
    if number_kind == INT:
        ok = [int(lo), int(hi)]
        bad = [int(hi) + 1, int(lo) - 1, 2**63 - 1, 2**64, 10**400]
        if hi == MAX_SEQ:
            bad.append(2**53)
        if chance(r, 1, 2):
            return "edge_ok", _set(doc, leaf, r.choice(ok)), True
        return "edge_bad", _set(doc, leaf, Raw(str(r.choice(bad)))), False
    ok_f = [lo, hi]
    bad_f = [math.nextafter(hi, math.inf), 1e308]
    if lo > 0:
        bad_f += [x for x in (math.nextafter(lo, 0.0), 5e-324, 1e-300, 0.0) if x < lo]
    elif lo < 0:
        bad_f.append(math.nextafter(lo, -math.inf))
    else:
        bad_f += [-5e-324, -1e-300]
    if chance(r, 1, 2):
        return "edge_ok", _set(doc, leaf, float(r.choice(ok_f))), True
    return "edge_bad", _set(doc, leaf, float(r.choice(bad_f))), False


def _bytes_mutation(r: Rng, data: bytes) -> Mutated:
    what = r.randint(0, 9)
    if what == 0:
        return "truncated", data[: r.randint(0, max(len(data) - 1, 0))], False
    if what == 1:
        return "empty", b"", False
    if what == 2:
        junk = bytes(r.randint(0, 255) for _ in range(r.randint(1, 40)))
        return "non_json", junk, False
    if what == 3:
        return "non_json", r.choice([b"{not json", b"NaN", b"\xff\xfe", b"{", b"}{"]), False
    if what == 4:
        return "json_not_object", r.choice([b"null", b"[]", b"1", b'"x"', b"true", b"[{}]"]), False
    if what == 5:
        return "trailing_garbage", data + r.choice([b"x", b"}", b"\x00", b",", b"{}"]), False
    if what == 6:
        return "whitespace", r.choice([b" ", b"\n", b"\t\r\n "]) + data + b"\n ", True
    if what == 7:
        return "bom", b"\xef\xbb\xbf" + data, None
    if what == 8:
        return "utf16", data.decode("utf-8", "surrogatepass").encode("utf-16"), False
    return "invalid_utf8", data.replace(b'"', b'"\xc3\x28', 1), False


# -- messages per topic ---------------------------------------------------------------------


class Hostile(NamedTuple):
    """One generated message."""

    kind: str
    key: bytes | None
    value: bytes | None
    expected: bool | None


def _finish(r: Rng, mutations: int, doc: dict[str, Any], kind: DocKind) -> Mutated:
    labels: list[bool | None] = []
    kinds: list[str] = []
    current: Any = doc
    for _ in range(mutations):
        if not isinstance(current, dict):
            break
        if kinds:
            try:  # a later mutation may not apply to what the earlier ones left
                k, current, expected = mutate(r, current, kind)
            except (TypeError, KeyError, AttributeError, IndexError, ValueError):
                break
        else:
            k, current, expected = mutate(r, current, kind)
        kinds.append(k)
        labels.append(expected)
    final_kind = kinds[0] if len(kinds) == 1 else "multi"
    return final_kind, current, _combine(labels)


def _mutation_count(r: Rng, p_valid: int) -> int:
    """0 (valid) with probability p_valid percent, else 1 (mostly) to 3."""
    if r.randint(0, 99) < p_valid:
        return 0
    return r.choice([1, 1, 1, 1, 1, 1, 1, 1, 2, 3])


def allocation_message(r: Rng, p_valid: int = 25) -> Hostile:
    """A hostile (or valid) record of the allocation topic, keyed by its portfolio."""
    which = r.randint(0, 5)
    base: dict[str, Any]
    if which <= 2:
        base, valid_kind = valid_world_move(r), "valid_world_move"
    elif which <= 3:
        base, valid_kind = valid_weights_update(r), "valid_weights_update"
    else:
        base, valid_kind = valid_policy(r), "valid_policy_rebalance"
    if chance(r, 1, 25):
        n = r.choice([100, 500, 2000])
        base = {
            "type": "world_allocations_changed",
            "event_id": _event_id(r, "huge"),
            "occurred_at": 1_000,
            "total_equity": 1e6,
            "world_alloc_after": {f"w{i}": 0.5 / n for i in range(n)},
            "world_alloc_before": {f"w{i}": 0.4 / n for i in range(n)},
        }
        valid_kind = "huge_worlds"
    n = _mutation_count(r, p_valid)
    expected: bool | None
    value: Any
    if n == 0:
        kind, value, expected = valid_kind, base, True
    else:
        kind, value, expected = _finish(r, n, base, "event")
        if kind == "unchanged":
            kind = valid_kind
    portfolio = base.get("portfolio_id", "default")
    own = str(portfolio).encode()
    key: bytes | None = own
    if chance(r, 1, 30):
        key = r.choice([None, b"", b"other", own + b" "])
        kind, expected = "key_mismatch", False
    data = value if isinstance(value, bytes) else to_bytes(value, r)
    return Hostile(kind, key, data, expected)


def snapshot_message(r: Rng, p_valid: int = 25) -> Hostile:
    """A hostile (or valid) record of the snapshot topic, keyed "world|strategy"."""
    if chance(r, 1, 20):  # tombstones
        if chance(r, 2, 3):
            named = f"{r.choice(WORLDS)}|{r.choice(STRATEGIES)}".encode()
            return Hostile("tombstone", named, None, True)
        bad = r.choice(
            [None, b"", b"nobar", b"a|", b"|s1", b"a|s1|x", b"a\x00|s1", b"a|s1\xe2\x80\xa8"]
        )
        return Hostile("tombstone_bad_key", bad, None, False)
    key: bytes | None
    base = valid_snapshot(r)
    valid_kind = (
        "valid_snapshot_map" if isinstance(base.get("positions"), dict) else "valid_snapshot"
    )
    n = _mutation_count(r, p_valid)
    expected: bool | None
    value: Any
    if n == 0:
        kind, value, expected = valid_kind, base, True
    else:
        kind, value, expected = _finish(r, n, base, "snapshot")
        if kind == "unchanged":
            kind = valid_kind
    key = snapshot_key(value) if isinstance(value, dict) else snapshot_key(base)
    if chance(r, 1, 6):
        key = None  # a record without a key is accepted (the table reads the ids)
    elif chance(r, 1, 12):
        key = r.choice([b"a|s9", b"a|s1|x", b"a", b"", b"A|s1", b"a|s1 ", b"\xff"])
        if key != snapshot_key(value):
            kind, expected = "key_mismatch", False
    data = value if isinstance(value, bytes) else to_bytes(value, r)
    return Hostile(kind, key, data, expected)


def plan_request(r: Rng, p_valid: int = 25) -> Hostile:
    """A hostile (or valid) ``rebalancer plan`` request file (key None)."""
    qmtl = chance(r, 1, 2)
    base = valid_qmtl_request(r) if qmtl else valid_ours_request(r)
    valid_kind = "valid_qmtl_request" if qmtl else "valid_ours_request"
    n = _mutation_count(r, p_valid)
    expected: bool | None
    value: Any
    if n == 0:
        kind, value, expected = valid_kind, base, True
    else:
        kind, value, expected = _finish(r, n, base, "qmtl" if qmtl else "ours")
        if kind == "unchanged":
            kind = valid_kind
    data = value if isinstance(value, bytes) else to_bytes(value, r)
    return Hostile(kind, None, data, expected)


# -- hypothesis -----------------------------------------------------------------------------

Generator = Callable[[Rng, int], Hostile]
_GENERATORS: dict[str, Generator] = {
    "allocations": allocation_message,
    "snapshots": snapshot_message,
    "requests": plan_request,
}


def labelled(topic: str, p_valid: int = 25) -> st.SearchStrategy[Hostile]:
    """Hostile messages of ``topic`` ("allocations", "snapshots", "requests"), labelled."""
    generate = _GENERATORS[topic]

    @st.composite
    def build(draw: st.DrawFn) -> Hostile:
        return generate(_Draws(draw), p_valid)

    return build()


def _triples(topic: str, p_valid: int) -> st.SearchStrategy[tuple[str, bytes | None, bytes | None]]:
    return labelled(topic, p_valid).map(lambda h: (h.kind, h.key, h.value))


def allocation_messages(
    p_valid: int = 25,
) -> st.SearchStrategy[tuple[str, bytes | None, bytes | None]]:
    """(kind, key, value) records of the allocation topic."""
    return _triples("allocations", p_valid)


def snapshot_messages(
    p_valid: int = 25,
) -> st.SearchStrategy[tuple[str, bytes | None, bytes | None]]:
    """(kind, key, value) records of the snapshot topic (value None: a tombstone)."""
    return _triples("snapshots", p_valid)


def plan_requests(p_valid: int = 25) -> st.SearchStrategy[tuple[str, bytes | None, bytes | None]]:
    """(kind, None, body) requests for ``rebalancer plan``."""
    return _triples("requests", p_valid)


# -- a plain corpus -------------------------------------------------------------------------

TopicKind = Literal["allocations", "snapshots"]


def hostile_corpus(
    seed: int, n: int
) -> list[tuple[TopicKind, str, bytes | None, bytes | None, bool | None]]:
    """``n`` mixed records of both input topics, deterministic for ``seed``:
    (topic, kind, key, value, expected_valid). About half are snapshots; a third of the
    allocation events and half of the snapshots are valid, so a service fed this plans."""
    r = random.Random(seed)
    out: list[tuple[TopicKind, str, bytes | None, bytes | None, bool | None]] = []
    for _ in range(n):
        if r.randint(0, 1):
            h = snapshot_message(r, 50)
            out.append(("snapshots", h.kind, h.key, h.value, h.expected))
        else:
            h = allocation_message(r, 35)
            out.append(("allocations", h.kind, h.key, h.value, h.expected))
    return out
