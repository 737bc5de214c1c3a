"""The cost-aware planner: another planner's plan, without the keys not worth trading.

It plans with its base planner (``proportional`` or ``target_weight``), then weighs each
traded key on its own: its cost is ``CostModel.cost`` of its notional (fee and half spread,
plus the fixed cost of one trade); its benefit is the tracking error its trade removes,
``volatility x mark x (|unrounded delta| - |unrounded delta - delta|)`` (the key's own
weight gap, before minus after, in money per year, with the key's annualized volatility).
A key whose cost is above ``max_cost_to_benefit`` x its benefit is dropped (reason
``cost_exceeds_benefit``): it keeps what it holds, as a key below the minimum notional does.

A traded key's benefit is never negative (rounding toward zero only shortens a move), so
with no costs nothing is dropped and the plan trades exactly what the base planner's does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from ..planner import Plan, PlanningContext, PlanningError, Rebalancer
from ..planner.ids import PlanHasher
from ..planner.netting import COSTLY, TRADE, NettedKeys
from ..planner.proportional import (
    LotSizes,
    net_globally,
    reduce_only_mask,
    without_breakdowns,
)
from .costs import CostModel
from .errors import PolicyError


@dataclasses.dataclass(frozen=True)
class KeyFigures:
    """Per key of a plan's per-world view: its trading cost and the benefit of its trade."""

    cost: npt.NDArray[Any]
    benefit: npt.NDArray[Any]


class CostAwareRebalancer:
    """``base``'s plan, keys whose cost exceeds their benefit dropped."""

    name = "cost_aware"

    def __init__(
        self,
        base: Rebalancer,
        costs: CostModel,
        *,
        volatility: float,
        volatility_by_symbol: Mapping[str, float] | None = None,
        max_cost_to_benefit: float = 1.0,
    ) -> None:
        by_symbol = dict(volatility_by_symbol or {})
        for name, v in [("volatility", volatility), *by_symbol.items()]:
            if not (np.isfinite(v) and v > 0):
                raise PolicyError(f"cost_aware: volatility {v!r} of {name} must be > 0")
        if not (np.isfinite(max_cost_to_benefit) and max_cost_to_benefit >= 0):
            raise PolicyError(f"cost_aware: max_cost_to_benefit {max_cost_to_benefit!r} < 0")
        self.base = base
        self.costs = costs
        self.volatility = volatility
        self.volatility_by_symbol = by_symbol
        self.ratio = max_cost_to_benefit

    def over(self, base: Rebalancer) -> CostAwareRebalancer:
        """The same weighing over another planner (a weights correction's target weights)."""
        return CostAwareRebalancer(
            base,
            self.costs,
            volatility=self.volatility,
            volatility_by_symbol=self.volatility_by_symbol,
            max_cost_to_benefit=self.ratio,
        )

    def figures(self, plan: Plan) -> KeyFigures:
        """Each key's cost and benefit (money; zero where the key does not trade)."""
        view = plan.per_world
        table = plan.context.positions
        n_s = max(len(table.symbols), 1)
        n_pairs = len(table.venues) * len(table.symbols)
        vols = np.array([self.volatility_by_symbol.get(s, self.volatility) for s in table.symbols])
        symbol = (view.codes % n_pairs) % n_s if n_pairs else view.codes
        traded = view.status == TRADE
        with np.errstate(invalid="ignore"):
            mark = np.where(traded, view.mark, 0.0)
            notional = np.abs(view.delta) * mark
            cost = notional * self.costs.rate + self.costs.fixed_per_trade * traded
            gap = np.abs(view.delta_unrounded) - np.abs(view.delta_unrounded - view.delta)
            benefit = np.maximum(vols[symbol] * mark * gap, 0.0) if len(vols) else gap * 0.0
        return KeyFigures(np.where(traded, cost, 0.0), np.where(traded, benefit, 0.0))

    def plan(self, context: PlanningContext) -> Plan:
        if context.options.execution_mode == "shared_account":
            raise PlanningError("execution_mode: the cost-aware planner plans per world")
        plan = self.base.plan(context)
        figures = self.figures(plan)
        costly = (plan.per_world.status == TRADE) & (figures.cost > self.ratio * figures.benefit)
        view = drop(plan.per_world, costly)
        global_view, row_targets = plan.global_view, plan.row_targets
        if plan.global_is_per_world:
            global_view = without_breakdowns(view)
        elif costly.any() and global_view is not None and row_targets is not None:
            row_targets = kept_rows(plan, costly, row_targets)
            global_view = self._global_view(plan, row_targets)
        h = PlanHasher()
        h.update(self.name.encode())
        h.update(plan.plan_id.encode())
        h.update(
            orjson.dumps(
                {
                    "costs": [self.costs.fee_bps, self.costs.half_spread_bps],
                    "fixed_per_trade": self.costs.fixed_per_trade,
                    "volatility": self.volatility,
                    "volatility_by_symbol": self.volatility_by_symbol,
                    "max_cost_to_benefit": self.ratio,
                },
                option=orjson.OPT_SORT_KEYS,
            )
        )
        h.update_bulk(np.ascontiguousarray(costly).data)
        return Plan(
            plan_id=h.hexdigest(),
            planner=self.name,
            context=plan.context,
            worlds=plan.worlds,
            per_world=view,
            global_view=global_view,
            global_is_per_world=plan.global_is_per_world,
            row_targets=row_targets,
        )

    @staticmethod
    def _global_view(plan: Plan, row_targets: npt.NDArray[np.float64]) -> NettedKeys:
        """The net of every world toward what this plan trades (SPEC 3.4)."""
        table, context = plan.context.positions, plan.context
        planned_ids = {scale.world_id for scale in plan.worlds}
        planned = np.array([w in planned_ids for w in table.worlds], np.bool_)
        lots = LotSizes.of(table, context.options)
        reduce_only = reduce_only_mask(table, context.reduce_only_worlds)
        return net_globally(table, planned, row_targets, context.options, lots, reduce_only)


def kept_rows(
    plan: Plan, costly: npt.NDArray[np.bool_], row_targets: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """The rows' targets with the rows of ``costly`` keys (of ``plan.per_world``) at what
    they hold: the keys are not traded."""
    table = plan.context.positions
    n_s = len(table.symbols)
    row_key = (table.world * len(table.venues) + table.venue) * n_s + table.symbol
    held = np.isin(row_key, plan.per_world.codes[costly])
    return np.where(held, table.qty, row_targets)


def drop(view: NettedKeys, costly: npt.NDArray[Any]) -> NettedKeys:
    """``view`` with the ``costly`` keys not traded: they keep what they hold."""
    if not costly.any():
        return view
    status = view.status.copy()
    status[costly] = COSTLY
    return dataclasses.replace(
        view,
        status=status,
        delta=np.where(costly, 0.0, view.delta),
        target=np.where(costly, view.current, view.target),
        flip=view.flip & ~costly,
        reduce_only=view.reduce_only & ~costly,
    )
