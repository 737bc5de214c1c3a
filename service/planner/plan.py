"""A computed plan, columnar, and its materialisation into wire messages.

The planner's arithmetic stays in arrays; only here, once, do keys become dicts: the plan record
(everything, dropped keys included) and the delta intents (what execution nodes act on). The
dicts follow ``service.messages`` field for field (a test validates them against the models).
Each key's strategy breakdown is built in ``breakdown``, its legs in ``legs``, and the intents
from the record in ``intents``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .breakdown import EMPTY_LIST, breakdown_dicts, breakdown_fragments
from .intents import intents_from_record
from .legs import key_legs
from .netting import HELD, REASONS, TRADE, NettedKeys

if TYPE_CHECKING:
    from .base import PlannerOptions, PlanningContext
    from .positions import FloatArray
    from .scaling import WorldScale

Json = dict[str, Any]


def _nullable(values: npt.NDArray[np.float64]) -> list[float | None]:
    """The values as a list, NaN as None."""
    return [None if x != x else x for x in values.tolist()]


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
    row_targets: FloatArray | None = None
    """Each row's target quantity on ``context.positions``: what the planner asked before
    netting, from which a planner wrapping this one nets its own global view."""

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
        held: list[str] = []  # worlds whose growth a reduce-only state held
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
            if ctx.reduce_only_worlds and (view.status[lo:hi] == HELD).any():
                held.append(scale.world_id)
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
                {**d, "legs": [], "strategy_breakdown": EMPTY_LIST if self.wire else []}
                for world in per_world.values()
                for d in world["deltas"]
            ]
            global_dropped = [dict(d) for world in per_world.values() for d in world["dropped"]]
        elif plan.global_view is not None:
            global_deltas, global_dropped = self._keys(
                plan.global_view, 0, len(plan.global_view), world_id=None, emit=shared
            )
        if shared:  # what is published is the global view: the reduce-only worlds held it
            global_held = plan.global_view is not None and (plan.global_view.status == HELD).any()
            planned = {scale.world_id for scale in plan.worlds}
            held = sorted(ctx.reduce_only_worlds & planned) if global_held else []
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
            "held_reason": f"reduce_only: worlds {', '.join(held)}" if held else None,
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
        plan_id = self.plan.plan_id
        make_breakdown = breakdown_fragments if self.wire else breakdown_dicts
        breakdown: list[Any] = make_breakdown(table, view, lo, hi, with_world=world_id is None)
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
                key_legs(
                    plan_id,
                    world_id,
                    venue,
                    symbol,
                    current[i],
                    target[i],
                    delta[i],
                    split_flip=flip[i] and venue not in self.direct_flip,
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


def options_record(planner: str, options: PlannerOptions) -> Json:
    """The ``options`` block of a plan record (``messages.PlanOptions``); per-venue minimums
    only when set, so that records of configurations without them are as they were."""
    out: Json = {
        "planner": planner,
        "scale_rule": options.scale_rule,
        "flip_policy": options.flip_policy,
        "execution_mode": options.execution_mode,
        "min_trade_notional": options.min_trade_notional,
        "qty_decimals": options.qty_decimals,
    }
    if options.min_notional_by_venue:
        out["min_notional_by_venue"] = dict(sorted(options.min_notional_by_venue.items()))
    return out
