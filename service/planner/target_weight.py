"""The target-weight planner (SPEC 6): bring each asset of a world to ``weight * equity / mark``.

Where the proportional planner scales what strategies hold, this one is told what the world
should hold, as weights of its equity, and plans the difference. Everything after the
per-row targets is the planning core's: the same ``net`` (netting per key, minimum notional,
lots, flat closes, flips, reduce-only), the same plan record and intents.

A key's move is shared among the strategies holding it in proportion to their gross
quantity on it (so same-sign holders each keep their share of the key); a key nobody holds
is opened by the world's ``strategy_id``. Held keys without a weight go to zero.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import orjson

from .base import PlanningContext, PlanningError
from .ids import PlanHasher
from .netting import exact_sums, group, latest_mark
from .plan import Plan
from .positions import FloatArray, PositionTable
from .proportional import (
    LotSizes,
    net_globally,
    net_per_world,
    reduce_only_mask,
    without_breakdowns,
)
from .scaling import WorldScale

AssetKey = tuple[str | None, str]
"""(venue, symbol); a None venue is its own key, as everywhere in the planner."""


@dataclass(frozen=True)
class WorldTargets:
    """What one world should hold.

    ``weights``: per ``(venue, symbol)``, a fraction of the world's equity (negative for a
    short). ``equity``: the world's equity; None takes ``total_equity`` times the world's
    ``alloc_after`` from the context's changes. ``marks``: prices to size the targets with;
    they win over snapshot marks and are required for keys the world does not hold.
    """

    weights: Mapping[AssetKey, float]
    equity: float | None = None
    marks: Mapping[AssetKey, float] = field(default_factory=dict)
    strategy_id: str = "target"

    def check(self, world_id: str) -> None:
        where = f"targets[{world_id}]"
        for key, w in self.weights.items():
            _check_key(where, key)
            if not math.isfinite(w):
                raise PlanningError(f"{where}.weights: {w} for {_label(key)} is not finite")
        for key, m in self.marks.items():
            _check_key(where, key)
            if not (math.isfinite(m) and m > 0):
                raise PlanningError(f"{where}.marks: {m} for {_label(key)} must be > 0")
        if self.equity is not None and not (math.isfinite(self.equity) and self.equity >= 0):
            raise PlanningError(f"{where}.equity: {self.equity} must be a finite number >= 0")
        if not self.strategy_id:
            raise PlanningError(f"{where}.strategy_id: must not be empty")


def _check_key(where: str, key: object) -> None:
    if not (
        isinstance(key, tuple)
        and len(key) == 2
        and (key[0] is None or isinstance(key[0], str))
        and isinstance(key[1], str)
        and key[1]
    ):
        raise PlanningError(f"{where}: {key!r} is not a (venue, symbol) pair")


def _label(key: AssetKey) -> str:
    return f"{key[0] or ''}|{key[1]}"


class TargetWeightRebalancer:
    """Plan every world of ``targets`` to its weights; other worlds are left alone."""

    name = "target_weight"

    def __init__(self, targets: Mapping[str, WorldTargets]) -> None:
        for world_id, t in targets.items():
            t.check(world_id)
        self.targets = dict(sorted(targets.items()))

    def plan(self, context: PlanningContext) -> Plan:
        options = context.options
        if options.execution_mode == "shared_account":
            raise PlanningError("execution_mode: the target-weight planner plans per world")
        equity = self._equities(context)
        table, target_qty = self._targets(context.positions, equity)
        planned = np.zeros(len(table.worlds), np.bool_)
        for world_id in self.targets:
            if world_id in table.worlds:
                planned[table.worlds.index(world_id)] = True
        lots = LotSizes.of(table, options)
        reduce_only = reduce_only_mask(table, context.reduce_only_worlds)
        per_world = net_per_world(table, planned, target_qty, options, lots, reduce_only)
        planned_all = bool(planned.all())
        global_is_per_world = len(table.worlds) == 1 and planned_all
        global_view = (
            without_breakdowns(per_world)
            if global_is_per_world
            else net_globally(table, planned, target_qty, options, lots, reduce_only)
        )
        scales = self._scales(context, table, target_qty)  # gross notional after / before
        planned_context = dataclasses.replace(context, positions=table)
        h = PlanHasher()
        h.update(self.name.encode())
        h.update(context.trigger)
        h.update(
            orjson.dumps(
                {
                    "event_id": context.event_id,
                    "portfolio_id": context.portfolio_id,
                    "options": options.canonical(),
                    "equity": equity,
                    "targets": {
                        w: {
                            "weights": sorted([_label(k), v] for k, v in t.weights.items()),
                            "marks": sorted([_label(k), v] for k, v in t.marks.items()),
                            "strategy_id": t.strategy_id,
                        }
                        for w, t in self.targets.items()
                    },
                },
                option=orjson.OPT_SORT_KEYS,
            )
        )
        h.update(table.vocabulary_digest)
        for column in (
            per_world.codes,
            per_world.current,
            per_world.mark,
            per_world.delta_unrounded,
            per_world.pair_key * len(table.strategies) + per_world.pair_strategy,
            per_world.pair_delta,
        ):
            h.update_bulk(np.ascontiguousarray(column).data)
        if not planned_all:  # the global view adds the positions of the worlds not planned
            for column in (global_view.codes, global_view.current, global_view.mark):
                h.update_bulk(np.ascontiguousarray(column).data)
        return Plan(
            plan_id=h.hexdigest(),
            planner=self.name,
            context=planned_context,
            worlds=tuple(scales),
            per_world=per_world,
            global_view=global_view,
            global_is_per_world=global_is_per_world,
            row_targets=target_qty,
        )

    def _equities(self, context: PlanningContext) -> dict[str, float]:
        changes = {c.world_id: c for c in context.changes}
        out: dict[str, float] = {}
        for world_id, t in self.targets.items():
            if t.equity is not None:
                out[world_id] = t.equity
                continue
            change = changes.get(world_id)
            if change is None or change.alloc_after is None:
                raise PlanningError(
                    f"targets[{world_id}].equity: not given, and the context has no allocation "
                    "for this world to derive it from total_equity"
                )
            out[world_id] = context.total_equity * change.alloc_after
        return out

    def _targets(
        self, table: PositionTable, equity: Mapping[str, float]
    ) -> tuple[PositionTable, FloatArray]:
        """The table with a zero row for every target key its world holds nothing of, marks
        overridden by the given ones, and each row's target quantity."""
        strategies = list(table.strategies)
        venues = list(table.venues)
        symbols = list(table.symbols)
        s_index = {s: i for i, s in enumerate(strategies)}
        v_index = dict(table.venue_index)
        y_index = dict(table.symbol_index)
        n_pairs_old = len(table.venues) * len(table.symbols)
        old_key = (
            table.world * n_pairs_old + table.venue * len(table.symbols) + table.symbol
            if len(table)
            else np.zeros(0, np.int64)
        )
        gross_old: dict[int, float] = {}
        if len(table):
            codes, index = group(old_key, len(table.worlds) * n_pairs_old)
            sums = np.bincount(index, np.abs(table.qty), codes.shape[0])
            gross_old = dict(zip(codes.tolist(), sums.tolist(), strict=True))
        world_index = {w: i for i, w in enumerate(table.worlds)}

        overrides: dict[int, float] = {}
        extra_s: list[int] = []
        extra_v: list[int] = []
        extra_y: list[int] = []
        extra_m: list[float] = []
        for world_id, t in self.targets.items():
            w_code = world_index.get(world_id)
            for key in sorted(set(t.weights) | set(t.marks), key=_label):
                venue, symbol = key
                held = 0.0
                if w_code is not None and venue in v_index and symbol in y_index:
                    old = w_code * n_pairs_old + v_index[venue] * len(table.symbols)
                    old += y_index[symbol]
                    held = gross_old.get(old, 0.0)
                    if key in t.marks:
                        overrides[old] = t.marks[key]
                if held > 0 or key not in t.weights:
                    continue
                sid = (world_id, t.strategy_id)
                if sid not in s_index:
                    s_index[sid] = len(strategies)
                    strategies.append(sid)
                if venue not in v_index:
                    v_index[venue] = len(venues)
                    venues.append(venue)
                if symbol not in y_index:
                    y_index[symbol] = len(symbols)
                    symbols.append(symbol)
                extra_s.append(s_index[sid])
                extra_v.append(v_index[venue])
                extra_y.append(y_index[symbol])
                extra_m.append(t.marks.get(key, math.nan))
        mark = table.mark
        if overrides:
            o_code = np.array(sorted(overrides), np.int64)
            o_mark = np.array([overrides[c] for c in o_code.tolist()])
            at = np.minimum(np.searchsorted(o_code, old_key), o_code.shape[0] - 1)
            hit = o_code[at] == old_key
            mark = np.where(hit, o_mark[at], mark)
        if extra_s:
            table = PositionTable.from_columns(
                strategies=strategies,
                venues=venues,
                symbols=symbols,
                strategy=np.concatenate([table.strategy, extra_s]),
                venue=np.concatenate([table.venue, extra_v]),
                symbol=np.concatenate([table.symbol, extra_y]),
                qty=np.concatenate([table.qty, np.zeros(len(extra_s))]),
                mark=np.concatenate([mark, extra_m]),
                recency=np.concatenate([table.recency, np.zeros(len(extra_s), np.int64)]),
            )
        elif overrides:
            table = dataclasses.replace(table, mark=mark)
        synthetic = np.zeros(len(table), np.bool_)
        synthetic[len(table) - len(extra_s) :] = True
        return table, self._row_targets(table, equity, synthetic)

    def _row_targets(
        self, table: PositionTable, equity: Mapping[str, float], synthetic: npt.NDArray[np.bool_]
    ) -> FloatArray:
        n_s = len(table.symbols)
        n_pairs = len(table.venues) * n_s
        target = table.qty.copy()
        if not len(table):
            return target
        key = table.world * n_pairs + table.venue * n_s + table.symbol
        codes, index = group(key, len(table.worlds) * n_pairs)
        size = codes.shape[0]
        current = exact_sums(index, table.qty, size)
        gross = np.bincount(index, np.abs(table.qty), size)
        key_mark = latest_mark(index, size, table.mark, table.recency)
        key_target = np.full(size, np.nan)  # NaN: the key is not planned
        for world_id, t in self.targets.items():
            if world_id not in table.worlds:
                continue  # holds nothing and is given no weight: nothing to plan
            w = table.worlds.index(world_id)
            lo = int(np.searchsorted(codes, w * n_pairs, "left"))
            hi = int(np.searchsorted(codes, (w + 1) * n_pairs, "left"))
            key_target[lo:hi] = 0.0
            for (venue, symbol), weight in t.weights.items():
                k = int(
                    np.searchsorted(
                        codes,
                        w * n_pairs + table.venue_index[venue] * n_s + table.symbol_index[symbol],
                    )
                )
                m = key_mark[k]
                if not m > 0:
                    raise PlanningError(
                        f"targets[{world_id}].marks: no mark for {_label((venue, symbol))}; "
                        "the world's snapshots have none, give one in marks"
                    )
                key_target[k] = weight * equity[world_id] / m
        planned = ~np.isnan(key_target)
        move = np.where(planned, key_target - current, 0.0)
        held = gross > 0
        # held keys: in proportion to gross quantity; others: the added row takes it all
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(held[index], np.abs(table.qty) / gross[index], synthetic * 1.0)
        out: FloatArray = target + move[index] * share
        return out

    def _scales(
        self, context: PlanningContext, table: PositionTable, target_qty: FloatArray
    ) -> list[WorldScale]:
        changes = {c.world_id: c for c in context.changes}
        out = []
        for world_id in self.targets:
            change = changes.get(world_id)
            before = change.alloc_before if change else None
            after = change.alloc_after if change else None
            codes = table.world_strategies.get(world_id, {})
            scale: dict[str, float] = {}
            for strategy_id, code in sorted(codes.items()):
                rows = (table.strategy == code) & (table.mark > 0)
                q = math.fsum(np.abs(table.qty[rows] * table.mark[rows]).tolist())
                tq = math.fsum(np.abs(target_qty[rows] * table.mark[rows]).tolist())
                scale[strategy_id] = tq / q if q > 0 else (1.0 if tq > 0 else 0.0)
            out.append(
                WorldScale(
                    world_id=world_id,
                    alloc_before=before,
                    alloc_after=after,
                    scale_world=1.0 if not before or after is None else after / before,
                    strategy_before={},
                    strategy_after={},
                    scale_by_strategy=scale,
                    weights_source="none",
                )
            )
        return out
