"""A computed plan, columnar, and its materialisation into wire messages.

The planner's arithmetic stays in arrays; only here, once, do keys become dicts: the plan record
(everything, dropped keys included) and the delta intents (what execution nodes act on). The
dicts follow ``service.messages`` field for field (a test validates them against the models).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from .ids import intent_id
from .netting import REASONS, TRADE, NettedKeys

if TYPE_CHECKING:
    from .base import PlannerOptions, PlanningContext
    from .scaling import WorldScale

Json = dict[str, Any]


def _nullable(values: npt.NDArray[np.float64]) -> list[float | None]:
    """The values as a list, NaN as None."""
    return [None if x != x else x for x in values.tolist()]


_EMPTY_LIST = orjson.Fragment(b"[]")

LAYOUTS_KEPT = 8
"""Breakdown layouts kept per position table (one per set of worlds planned together)."""


def _money(x: float) -> float:
    return round(x, 8) + 0.0


@dataclass(frozen=True)
class Plan:
    """The planner's output: scale factors per world, netted keys, and the global view."""

    plan_id: str
    planner: str
    context: PlanningContext
    worlds: tuple[WorldScale, ...]
    per_world: NettedKeys
    global_view: NettedKeys | None
    global_is_per_world: bool = False
    """The global view is ``per_world`` without breakdowns: one world, planned whole, whose
    ``(venue, symbol)`` keys are its keys. Its entries are then copied from the world's."""

    @cached_property
    def _record(self) -> Json:
        return _Materialiser(self).run()

    def record(self) -> Json:
        """The plan record (``messages.PlanRecord`` as a dict), without timing."""
        return self._record

    @cached_property
    def _intents(self) -> list[Json]:
        return intents_from_record(self._record)

    def intents(self) -> list[Json]:
        """The delta intents to publish (``messages.DeltaIntent`` as dicts), in order: those
        the record describes (``intents_from_record``)."""
        return self._intents

    @cached_property
    def wire(self) -> Json:
        """The record to serialise with orjson: as ``record()`` but with each key's
        ``strategy_breakdown`` already JSON (an ``orjson.Fragment``).

        The breakdown is most of a plan's bytes (a key per strategy that trades it) and is
        written three times (write-ahead, intents, record); as fragments it is turned into
        JSON once, without building a dict per strategy. Serialised, both forms are the
        same bytes, and so are the intents built from them (tested).
        """
        return _Materialiser(self, wire=True).run()


class _Materialiser:
    def __init__(self, plan: Plan, *, wire: bool = False) -> None:
        self.plan = plan
        self.wire = wire
        ctx = plan.context
        self.ctx = ctx
        table = ctx.positions
        self.table = table
        self.n_pairs = len(table.venues) * len(table.symbols)
        self.direct_flip = (
            set(ctx.options.direct_flip_venues)
            if ctx.options.flip_policy == "direct_flip"
            else set()
        )
        self.intent_ids: list[str] = []
        self.created_at = ctx.occurred_at if ctx.created_at is None else ctx.created_at
        self.expires_at = self.created_at + ctx.options.intent_ttl_ms

    def run(self) -> Json:
        ctx, plan = self.ctx, self.plan
        shared = ctx.options.execution_mode == "shared_account"
        per_world: dict[str, Json] = {}
        view = plan.per_world
        key_world = view.codes // self.n_pairs if self.n_pairs else view.codes
        for scale in plan.worlds:
            code = self._world_code(scale.world_id)
            lo, hi = (
                (0, 0)
                if code is None
                else (
                    int(np.searchsorted(key_world, code, "left")),
                    int(np.searchsorted(key_world, code, "right")),
                )
            )
            deltas, dropped = self._keys(view, lo, hi, world_id=scale.world_id, emit=not shared)
            per_world[scale.world_id] = {
                "world_id": scale.world_id,
                "alloc_before": scale.alloc_before,
                "alloc_after": scale.alloc_after,
                "scale_world": scale.scale_world,
                "scale_by_strategy": scale.scale_by_strategy,
                "strategy_alloc_before": scale.strategy_before,
                "strategy_alloc_after": scale.strategy_after,
                "weights_source": scale.weights_source,
                "deltas": deltas,
                "dropped": dropped,
            }
        global_deltas: list[Json] = []
        global_dropped: list[Json] = []
        if plan.global_is_per_world:
            global_deltas = [
                {**d, "legs": [], "strategy_breakdown": _EMPTY_LIST if self.wire else []}
                for world in per_world.values()
                for d in world["deltas"]
            ]
            global_dropped = [dict(d) for world in per_world.values() for d in world["dropped"]]
        elif plan.global_view is not None:
            global_deltas, global_dropped = self._keys(
                plan.global_view, 0, len(plan.global_view), world_id=None, emit=shared
            )
        options = ctx.options
        record: Json = {
            "schema_version": 1,
            "plan_id": plan.plan_id,
            "event_id": ctx.event_id,
            "portfolio_id": ctx.portfolio_id,
            "occurred_at": ctx.occurred_at,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "status": "planned",
            "held_reason": None,
            "total_equity": ctx.total_equity,
            "options": options_record(plan.planner, options),
            "per_world": per_world,
            "global_deltas": global_deltas,
            "global_dropped": global_dropped,
            "coalesced_event_ids": list(ctx.coalesced_event_ids) or [ctx.event_id],
            "intent_ids": self.intent_ids,
            "timing": None,
        }
        return record

    def _world_code(self, world_id: str) -> int | None:
        try:
            return self.table.worlds.index(world_id)
        except ValueError:
            return None

    def _breakdown_json(
        self, view: NettedKeys, lo: int, hi: int, *, with_world: bool
    ) -> list[orjson.Fragment]:
        """``_breakdown`` as JSON fragments, built without a Python step per entry.

        A key's breakdown is its entries' heads (``[{"strategy_id":"s1","delta_qty":`` or
        ``},{...``) with the numbers between them. The heads depend only on which strategies
        meet on which key, the same plan after plan on one position table, so they are laid
        out once (``_layout``); a plan writes all its numbers with one ``orjson.dumps`` of the
        array, drops them into the layout and joins each key's slice.
        """
        start = np.searchsorted(view.pair_key, np.arange(lo, hi + 1))
        first, last = int(start[0]), int(start[-1])
        if first == last:
            return [_EMPTY_LIST] * (hi - lo)
        parts, spans = self._layout(view.pair_strategy[first:last], start - first, with_world)
        parts = parts.copy()
        numbers = orjson.dumps(view.pair_delta[first:last], option=orjson.OPT_SERIALIZE_NUMPY)
        parts[1::2] = numbers[1:-1].split(b",")
        join = b"".join
        return [
            orjson.Fragment(join(parts[a:b]) + b"}]") if b > a else _EMPTY_LIST for a, b in spans
        ]

    def _layout(
        self, strategy: npt.NDArray[np.int64], bounds: npt.NDArray[np.int64], with_world: bool
    ) -> tuple[list[bytes], list[tuple[int, int]]]:
        """The breakdown entries' heads at even places, room for their numbers at odd ones,
        and each key's ``[a, b)`` in that list; kept on the table per distinct layout."""
        layouts: dict[Any, tuple[list[bytes], list[tuple[int, int]]]] = self.table.memo.setdefault(
            "breakdown layouts", {}
        )
        memo_key = (with_world, bounds.tobytes(), strategy.tobytes())
        found = layouts.get(memo_key)
        if found is None:
            heads = self._heads(with_world)
            opens = np.zeros(strategy.shape[0], np.int64)
            edges = bounds.tolist()
            opens[[b for b in edges[:-1] if b < strategy.shape[0]]] = 1  # a key's first entry
            parts: list[bytes] = [b""] * (2 * strategy.shape[0])
            parts[0::2] = map(heads.__getitem__, (strategy * 2 + opens).tolist())
            spans = [(2 * a, 2 * b) for a, b in itertools.pairwise(edges)]
            if len(layouts) >= LAYOUTS_KEPT:
                layouts.clear()
            found = layouts[memo_key] = (parts, spans)
        return found

    def _heads(self, with_world: bool) -> list[bytes]:
        """Per strategy code ``c``, a breakdown entry's start: at ``2c`` after another entry
        of its key, at ``2c + 1`` as the key's first. Made once per position table."""
        memo = self.table.memo
        found: list[bytes] | None = memo.get(f"breakdown heads {with_world}")
        if found is None:
            found = []
            for world_id, strategy_id in self.table.strategies:
                head = b'{"world_id":' + orjson.dumps(world_id) + b"," if with_world else b"{"
                head += b'"strategy_id":' + orjson.dumps(strategy_id) + b',"delta_qty":'
                found += (b"}," + head, b"[" + head)
            memo[f"breakdown heads {with_world}"] = found
        return found

    def _breakdown(
        self, view: NettedKeys, lo: int, hi: int, *, with_world: bool
    ) -> list[list[Json]]:
        """Per key in ``[lo, hi)``, the strategies' own deltas on it."""
        start = np.searchsorted(view.pair_key, np.arange(lo, hi + 1))
        strategies = self.table.strategies
        codes = view.pair_strategy.tolist()
        deltas = view.pair_delta.tolist()
        out: list[list[Json]] = []
        for a, b in zip(start[:-1].tolist(), start[1:].tolist(), strict=True):
            if with_world:
                items = [
                    {
                        "world_id": strategies[codes[j]][0],
                        "strategy_id": strategies[codes[j]][1],
                        "delta_qty": deltas[j],
                    }
                    for j in range(a, b)
                ]
            else:  # keys of one world: the world is the key's, not repeated per strategy
                items = [
                    {"strategy_id": strategies[codes[j]][1], "delta_qty": deltas[j]}
                    for j in range(a, b)
                ]
            out.append(items)
        return out

    def _keys(
        self, view: NettedKeys, lo: int, hi: int, *, world_id: str | None, emit: bool
    ) -> tuple[list[Json], list[Json]]:
        """Traded and dropped keys of ``view[lo:hi]``; legs (and intents) only when ``emit``."""
        table = self.table
        n_s = len(table.symbols)
        part = slice(lo, hi)
        pair = (view.codes[part] % self.n_pairs).tolist() if self.n_pairs else []
        mark_arr = view.mark[part]
        with np.errstate(invalid="ignore"):
            notional = (np.round(np.abs(view.delta[part]) * mark_arr, 8) + 0.0).tolist()
            notional_unrounded = np.round(np.abs(view.delta_unrounded[part]) * mark_arr, 8) + 0.0
        current = view.current[part].tolist()
        target = view.target[part].tolist()
        delta = view.delta[part].tolist()
        unrounded = view.delta_unrounded[part].tolist()
        marks = _nullable(mark_arr)
        dropped_notional = _nullable(notional_unrounded)
        status = view.status[part].tolist()
        flip = view.flip[part].tolist()
        reduce_only = view.reduce_only[part].tolist()
        make_breakdown = self._breakdown_json if self.wire else self._breakdown
        breakdown: list[Any] = make_breakdown(view, lo, hi, with_world=world_id is None)
        deltas: list[Json] = []
        dropped: list[Json] = []
        for i, code in enumerate(pair):
            venue = table.venues[code // n_s]
            symbol = table.symbols[code % n_s]
            if status[i] != TRADE:
                dropped.append(
                    {
                        "venue": venue,
                        "symbol": symbol,
                        "reason": REASONS[status[i]],
                        "current_qty": current[i],
                        "delta_qty_unrounded": unrounded[i],
                        "mark": marks[i],
                        "notional": dropped_notional[i],
                    }
                )
                continue
            legs = (
                self._legs(
                    world_id,
                    venue,
                    symbol,
                    current[i],
                    target[i],
                    delta[i],
                    flip=flip[i],
                    reduce_only=reduce_only[i],
                )
                if emit
                else []
            )
            deltas.append(
                {
                    "venue": venue,
                    "symbol": symbol,
                    "delta_qty": delta[i],
                    "current_qty": current[i],
                    "target_qty": target[i],
                    "delta_qty_unrounded": unrounded[i],
                    "mark": marks[i],
                    "notional": notional[i],
                    "reduce_only": reduce_only[i],
                    "flip": flip[i],
                    "legs": legs,
                    "strategy_breakdown": breakdown[i],
                }
            )
            if emit:
                self.intent_ids += [leg["intent_id"] for leg in legs]
        return deltas, dropped

    def _legs(
        self,
        world_id: str | None,
        venue: str | None,
        symbol: str,
        current: float,
        target: float,
        delta: float,
        *,
        flip: bool,
        reduce_only: bool,
    ) -> list[Json]:
        plan_id = self.plan.plan_id
        if flip and venue not in self.direct_flip:
            close_id = intent_id(plan_id, world_id, venue, symbol, "close")
            return [
                {
                    "intent_id": close_id,
                    "leg": "close",
                    "current_qty": current,
                    "target_qty": 0.0,
                    "delta_qty": -current,
                    "reduce_only": True,
                    "depends_on": None,
                },
                {
                    "intent_id": intent_id(plan_id, world_id, venue, symbol, "open"),
                    "leg": "open",
                    "current_qty": 0.0,
                    "target_qty": target,
                    "delta_qty": target,
                    "reduce_only": False,
                    "depends_on": close_id,
                },
            ]
        leg = "close" if target == 0 else "adjust"
        return [
            {
                "intent_id": intent_id(plan_id, world_id, venue, symbol, leg),
                "leg": leg,
                "current_qty": current,
                "target_qty": target,
                "delta_qty": delta,
                "reduce_only": reduce_only,
                "depends_on": None,
            }
        ]


def options_record(planner: str, options: PlannerOptions) -> Json:
    """The ``options`` block of a plan record (``messages.PlanOptions``)."""
    return {
        "planner": planner,
        "scale_rule": options.scale_rule,
        "flip_policy": options.flip_policy,
        "execution_mode": options.execution_mode,
        "min_trade_notional": options.min_trade_notional,
        "qty_decimals": options.qty_decimals,
    }


def key_intents(header: Json, world_id: str | None, key: Json, legs: list[Json]) -> list[Json]:
    """The intents of one traded key, one per leg (``messages.DeltaIntent`` as dicts).

    ``header`` has the plan's ``plan_id``, ``event_id``, ``portfolio_id``, ``created_at`` and
    ``expires_at``; ``key`` is the key's entry of the plan record (venue, symbol, mark,
    notional, breakdown). Used by the planner and to rebuild intents from a record.
    """
    out = []
    for leg in legs:
        notional = (
            key["notional"] if len(legs) == 1 else _money(abs(leg["delta_qty"]) * key["mark"])
        )
        out.append(
            {
                "schema_version": 1,
                "intent_id": leg["intent_id"],
                "plan_id": header["plan_id"],
                "event_id": header["event_id"],
                "portfolio_id": header["portfolio_id"],
                "world_id": world_id,
                "venue": key["venue"],
                "symbol": key["symbol"],
                "current_qty": leg["current_qty"],
                "target_qty": leg["target_qty"],
                "delta_qty": leg["delta_qty"],
                "mark": key["mark"],
                "notional": notional,
                "reduce_only": leg["reduce_only"],
                "leg": leg["leg"],
                "depends_on": leg["depends_on"],
                "strategy_breakdown": key["strategy_breakdown"],
                "created_at": header["created_at"],
                "expires_at": header["expires_at"],
            }
        )
    return out


def intents_from_record(record: Json) -> list[Json]:
    """The delta intents a plan record describes, in order: per world (or, in a shared
    account, the global view), per traded key, per leg. A plan's intents are made this way
    when it is planned and when it is resumed from its write-ahead, so both are the same."""
    shared = record["options"]["execution_mode"] == "shared_account"
    views: list[tuple[str | None, list[Json]]] = (
        [(None, record["global_deltas"])]
        if shared
        else [(w, p["deltas"]) for w, p in record["per_world"].items()]
    )
    return [
        intent
        for world_id, deltas in views
        for d in deltas
        for intent in key_intents(record, world_id, d, d["legs"])
    ]
