"""The proportional planner (SPEC 3): scale every position by its strategy's ``g``, net by key.

``ProportionalRebalancer`` plans each named world on its own; ``MultiWorldProportionalRebalancer``
adds ``global_deltas``, the net of all worlds' unrounded deltas per ``(venue, symbol)``, and can
execute that net in shared-account mode.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt
import orjson

from .base import PlannerOptions, PlanningContext, PlanningError
from .ids import PlanHasher
from .lots import lot_fraction
from .netting import (
    BoolArray,
    KeyGrouping,
    LotLookup,
    MinimumLookup,
    NettedKeys,
    exact_sums,
    hold_growth,
    net,
)
from .plan import Plan
from .positions import FloatArray, IntArray, PositionTable
from .scaling import WorldScale, resolve


class LotSizes:
    """Lot sizes of a table's keys as exact decimal fractions, looked up by key code."""

    def __init__(self, table: PositionTable, options: PlannerOptions) -> None:
        n_symbols = len(table.symbols)
        self.n_symbols = n_symbols
        self.n_pairs = len(table.venues) * n_symbols
        self.num = np.full(n_symbols, np.nan)
        self.scale = np.ones(n_symbols)
        by_symbol = options.lot_size_by_symbol
        symbol_index = table.symbol_index
        if len(by_symbol) < n_symbols:
            pairs = [(symbol_index[s], lot) for s, lot in by_symbol.items() if s in symbol_index]
        else:
            pairs = [(i, by_symbol[s]) for i, s in enumerate(table.symbols) if s in by_symbol]
        if pairs:
            at = np.array([i for i, _ in pairs], np.int64)
            distinct, which = np.unique(np.array([lot for _, lot in pairs]), return_inverse=True)
            fractions = np.array([lot_fraction(float(lot)) for lot in distinct])
            self.num[at], self.scale[at] = fractions[which, 0], fractions[which, 1]
        overrides: list[tuple[int, float, float]] = []
        for venue, venue_lots in options.lot_size_by_venue.items():
            v = table.venue_index.get(venue)
            if v is None:
                continue
            for symbol, lot in venue_lots.items():
                if symbol in symbol_index:
                    overrides.append((v * n_symbols + symbol_index[symbol], *lot_fraction(lot)))
        overrides.sort()
        self.o_code = np.array([o[0] for o in overrides], np.int64)
        self.o_num = np.array([o[1] for o in overrides])
        self.o_scale = np.array([o[2] for o in overrides])

    @classmethod
    def of(cls, table: PositionTable, options: PlannerOptions) -> LotSizes:
        """The lot sizes for a table and options, built once per pair and kept on the table."""
        cached = table.memo.get("lots")
        if cached is not None and cached[0] is options:
            lots: LotSizes = cached[1]
            return lots
        lots = cls(table, options)
        table.memo["lots"] = (options, lots)
        return lots

    def lookup(self, *, with_world: bool) -> LotLookup:
        """A lookup for codes ``[world * pairs +] venue * symbols + symbol``."""

        def lookup(codes: IntArray) -> tuple[FloatArray, FloatArray]:
            pair = codes % self.n_pairs if with_world and self.n_pairs else codes
            symbol = pair % max(self.n_symbols, 1)
            num, scale = self.num[symbol], self.scale[symbol]
            if self.o_code.size:
                at = np.minimum(np.searchsorted(self.o_code, pair), self.o_code.size - 1)
                hit = self.o_code[at] == pair
                num = np.where(hit, self.o_num[at], num)
                scale = np.where(hit, self.o_scale[at], scale)
            return num, scale

        return lookup


def venue_minimums(
    table: PositionTable, options: PlannerOptions, *, with_world: bool
) -> MinimumLookup | None:
    """The minimum notional of each key's venue (``min_notional_by_venue``), looked up by key
    code ``[world * pairs +] venue * symbols + symbol``; None when no venue has one."""
    by_venue = options.min_notional_by_venue
    if not by_venue:
        return None
    per_venue = np.array([0.0 if v is None else by_venue.get(v, 0.0) for v in table.venues])
    n_symbols = max(len(table.symbols), 1)
    n_pairs = len(table.venues) * len(table.symbols)

    def lookup(codes: IntArray) -> FloatArray:
        pair = codes % n_pairs if with_world and n_pairs else codes
        found: FloatArray = per_venue[pair // n_symbols]
        return found

    return lookup


def strategy_notional(table: PositionTable) -> FloatArray:
    """Net notional (qty x mark) per strategy code; rows without a mark count as 0. Summed
    independently of row order, like every other sum that feeds the plan id."""
    value = np.where(np.isnan(table.mark), 0.0, table.qty * table.mark)
    return exact_sums(table.strategy, value, len(table.strategies))


def reduce_only_mask(table: PositionTable, worlds: Collection[str]) -> BoolArray | None:
    """Which of ``table.worlds`` are reduce-only (of ``worlds``); None when none is."""
    if not worlds:
        return None
    mask = np.array([w in worlds for w in table.worlds], np.bool_)
    return mask if mask.any() else None


def net_per_world(
    table: PositionTable,
    planned: npt.NDArray[np.bool_],
    target_qty: FloatArray,
    options: PlannerOptions,
    lots: LotSizes,
    reduce_only: BoolArray | None = None,
) -> NettedKeys:
    """Net the rows of the ``planned`` worlds (a mask over ``table.worlds``) toward
    ``target_qty``, per (world, venue, symbol): what every planner trades per world. The keys
    of ``reduce_only`` worlds (a mask over ``table.worlds``) trade only what shrinks them."""
    kept = planned_rows(table, planned)
    netted = net(
        kept.key,
        kept.space,
        kept.strategy,
        kept.slot,
        kept.slots,
        kept.qty,
        target_qty[kept.rows],
        kept.mark,
        kept.recency,
        lots=lots.lookup(with_world=True),
        min_trade_notional=options.min_trade_notional,
        qty_decimals=options.qty_decimals,
        grouping=kept.grouping,
        venue_minimum=venue_minimums(table, options, with_world=True),
    )
    if reduce_only is None or not reduce_only[planned].any():
        return netted
    n_pairs = len(table.venues) * len(table.symbols)
    return hold_growth(netted, reduce_only[netted.codes // n_pairs])


def net_globally(
    table: PositionTable,
    planned: npt.NDArray[np.bool_],
    target_qty: FloatArray,
    options: PlannerOptions,
    lots: LotSizes,
    reduce_only: BoolArray | None = None,
    *,
    shared: bool = False,
) -> NettedKeys:
    """Every row of the table netted per ``(venue, symbol)`` toward ``target_qty``: the global
    view (SPEC 3.4), rounded once. Worlds that do not move count in ``current``. Only with
    ``shared`` (it is then what a shared account trades) does it carry per-strategy
    breakdowns. If any of the ``planned`` worlds is reduce-only, so is the whole net."""
    n_s = len(table.symbols)
    global_view = net(
        table.venue * n_s + table.symbol,
        len(table.venues) * n_s,
        table.strategy,
        table.strategy if shared else None,
        len(table.strategies),
        table.qty,
        target_qty,
        table.mark,
        table.recency,
        lots=lots.lookup(with_world=False),
        min_trade_notional=options.min_trade_notional,
        qty_decimals=options.qty_decimals,
        grouping=global_grouping(table, shared),
        venue_minimum=venue_minimums(table, options, with_world=False),
    )
    if reduce_only is not None and reduce_only[planned].any():
        global_view = hold_growth(global_view, np.ones(len(global_view), np.bool_))
    return global_view


def without_breakdowns(per_world: NettedKeys) -> NettedKeys:
    """The per-world view as the global view of a table of one world, planned whole: the
    same keys and sums; the record copies its entries (``Plan.global_is_per_world``)."""
    none = np.zeros(0, np.int64)
    return dataclasses.replace(per_world, pair_key=none, pair_strategy=none, pair_delta=np.zeros(0))


def planned_rows(table: PositionTable, planned: npt.NDArray[np.bool_]) -> _PlannedRows:
    """The rows of the ``planned`` worlds, kept on the table."""
    memo_key = f"per-world rows {planned.tobytes().hex()}"
    kept: _PlannedRows | None = table.memo.get(memo_key)
    if kept is None:
        n_v, n_s = len(table.venues), len(table.symbols)
        rows = np.flatnonzero(planned[table.world]) if len(table) else np.zeros(0, np.int64)
        slot = table.strategy_slot
        kept = table.memo[memo_key] = _PlannedRows(
            rows=rows,
            key=table.world[rows] * (n_v * n_s) + table.venue[rows] * n_s + table.symbol[rows],
            space=len(table.worlds) * n_v * n_s,
            strategy=table.strategy[rows],
            slot=slot[table.strategy[rows]],
            slots=int(slot.max()) + 1 if slot.size else 1,
            qty=table.qty[rows],
            mark=table.mark[rows],
            recency=table.recency[rows],
        )
    return kept


@dataclass(frozen=True)
class _PlannedRows:
    """The rows of the planned worlds of a table, keyed per (world, venue, symbol), with their
    grouping into keys: kept on the table, so plans on an unchanged table net targets only."""

    rows: IntArray
    key: IntArray
    space: int
    strategy: IntArray
    slot: IntArray
    slots: int
    qty: FloatArray
    mark: FloatArray
    recency: IntArray

    @cached_property
    def grouping(self) -> KeyGrouping:
        return KeyGrouping.of(
            self.key, self.space, self.slot, self.slots, self.qty, self.mark, self.recency
        )


def global_grouping(table: PositionTable, shared: bool) -> KeyGrouping:
    """The rows of every world keyed per (venue, symbol), grouped; kept on the table."""
    memo_key = f"global grouping {shared}"
    found: KeyGrouping | None = table.memo.get(memo_key)
    if found is None:
        n_s = len(table.symbols)
        found = table.memo[memo_key] = KeyGrouping.of(
            table.venue * n_s + table.symbol,
            len(table.venues) * n_s,
            table.strategy if shared else None,
            len(table.strategies),
            table.qty,
            table.mark,
            table.recency,
        )
    return found


class ProportionalRebalancer:
    """Scale positions by allocation ratios and net per ``(world, venue, symbol)``."""

    name = "proportional"
    with_global = False
    reuse_world_view = True
    """With one world in the table, planned whole, its view is the global view: the same
    keys, rows and sums. ``False`` nets the global view anyway (tests compare the two)."""

    def prepare(self, table: PositionTable, options: PlannerOptions) -> None:
        """Group the table's rows into keys ahead of the plans on it (every world planned)."""
        shared = options.execution_mode == "shared_account"
        if not shared:
            _ = planned_rows(table, np.ones(len(table.worlds), np.bool_)).grouping
        if self.with_global and not self._world_view_is_global(table, shared):
            global_grouping(table, shared)

    def _world_view_is_global(self, table: PositionTable, shared: bool) -> bool:
        """Whether the global view of a plan of every world is the per-world view: one world
        in the table, and per-world execution."""
        return self.with_global and self.reuse_world_view and not shared and len(table.worlds) == 1

    def plan(self, context: PlanningContext) -> Plan:
        table = context.positions
        options = context.options
        if options.execution_mode == "shared_account":
            if not self.with_global:
                raise PlanningError("execution_mode: shared_account needs the multi-world planner")
            if not options.allow_shared_account:
                raise PlanningError(
                    "execution_mode: shared_account is refused unless allow_shared_account "
                    "is enabled in the configuration"
                )
        names = [c.world_id for c in context.changes]
        if len(set(names)) != len(names):
            raise PlanningError(f"worlds: a world is named twice in {names}")

        scales = self._scales(context)
        n_strat = len(table.strategies)
        g = np.ones(n_strat)
        planned = np.zeros(len(table.worlds), np.bool_)
        for scale in scales:
            codes = table.world_strategies.get(scale.world_id)
            if codes is None:
                continue
            planned[table.worlds.index(scale.world_id)] = True
            for strategy_id, code in codes.items():
                g[code] = scale.scale_by_strategy[strategy_id]

        target_qty = table.qty * g[table.strategy]
        lots = LotSizes.of(table, options)
        reduce_only = reduce_only_mask(table, context.reduce_only_worlds)
        per_world = net_per_world(table, planned, target_qty, options, lots, reduce_only)
        global_view: NettedKeys | None = None
        shared = options.execution_mode == "shared_account"
        global_is_per_world = self._world_view_is_global(table, shared) and bool(planned.all())
        if global_is_per_world:
            global_view = without_breakdowns(per_world)
        elif self.with_global:
            global_view = net_globally(
                table, planned, target_qty, options, lots, reduce_only, shared=shared
            )
        plan_id = self._plan_id(context, scales, per_world, global_view, bool(planned.all()))
        return Plan(
            plan_id=plan_id,
            planner=self.name,
            context=context,
            worlds=tuple(scales),
            per_world=per_world,
            global_view=global_view,
            global_is_per_world=global_is_per_world,
            row_targets=target_qty,
        )

    def _scales(self, context: PlanningContext) -> list[WorldScale]:
        table = context.positions
        notional: FloatArray | None = None

        def derived(world_id: str) -> Mapping[str, float]:
            nonlocal notional
            if notional is None:
                notional = strategy_notional(table)
            codes = table.world_strategies.get(world_id, {})
            values = {s: float(notional[c]) for s, c in codes.items()}
            if context.total_equity > 0:
                base = context.total_equity
            else:
                base = math.fsum(values.values())
                if base <= 0:
                    return dict.fromkeys(values, 0.0)
            return {s: max(v, 0.0) / base for s, v in values.items()}

        return [
            resolve(
                change,
                held_strategies=table.world_strategies.get(change.world_id, {}),
                current_weights=context.current_weights.get(change.world_id),
                derived_weights=functools.partial(derived, change.world_id),
                scale_rule=context.options.scale_rule,
            )
            for change in sorted(context.changes, key=lambda c: c.world_id)
        ]

    def _plan_id(
        self,
        context: PlanningContext,
        scales: list[WorldScale],
        per_world: NettedKeys,
        global_view: NettedKeys | None,
        planned_all: bool,
    ) -> str:
        table = context.positions
        h = PlanHasher()
        h.update(self.name.encode())
        h.update(context.trigger)
        h.update(
            orjson.dumps(
                {
                    "event_id": context.event_id,
                    "portfolio_id": context.portfolio_id,
                    "total_equity": context.total_equity,
                    "options": context.options.canonical(),
                    "scales": [vars(s) for s in scales],
                },
                option=orjson.OPT_SORT_KEYS,
            )
        )
        h.update(table.vocabulary_digest)
        # The state, as netted: everything else in the plan is a function of these and the
        # options. The global view adds only the positions of worlds that are not moving, if any.
        columns = [per_world.codes, per_world.current, per_world.mark, per_world.delta_unrounded]
        columns += [per_world.pair_key * len(table.strategies) + per_world.pair_strategy]
        columns += [per_world.pair_delta]
        if global_view is not None and not planned_all:
            columns += [global_view.codes, global_view.current, global_view.mark]
        for column in columns:
            h.update_bulk(np.ascontiguousarray(column).data)
        return h.hexdigest()


class MultiWorldProportionalRebalancer(ProportionalRebalancer):
    """Plans several worlds together and adds the global net view (SPEC 3.4)."""

    name = "proportional"
    with_global = True
