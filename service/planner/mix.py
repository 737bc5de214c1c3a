"""The target-weight planner for allocation moves: each world keeps its asset mix, sized to
its allocation.

Where the proportional planner scales what each strategy holds by its scale factor (keeping
whatever the world drifted to), this one measures each world's mix now, every ``(venue,
symbol)`` key's net value (netted quantity x latest mark) over the world's net value, and
plans the world to that mix at ``alloc_after x total_equity`` with the target-weight planner.
A world is one book here: strategy weights do not move its keys (a strategy weights event
resizes the world to its allocation and nothing else). Keys without a mark are left alone.
"""

from __future__ import annotations

import numpy as np

from .base import PlanningContext, PlanningError
from .netting import exact_sums, group, latest_mark
from .plan import Plan
from .target_weight import AssetKey, TargetWeightRebalancer, WorldTargets


class MixRebalancer:
    """Plan every world of the context's changes to its current mix at its new allocation."""

    name = "target_weight"

    def plan(self, context: PlanningContext) -> Plan:
        targets = {
            c.world_id: self.targets(context, c.world_id, c.alloc_after) for c in context.changes
        }
        return TargetWeightRebalancer(targets).plan(context)

    @staticmethod
    def targets(context: PlanningContext, world_id: str, alloc_after: float | None) -> WorldTargets:
        """A world's current mix, as target weights of ``alloc_after x total_equity``."""
        if alloc_after is None:
            raise PlanningError(f"worlds[{world_id}]: target_weight needs the world's allocation")
        table = context.positions
        equity = alloc_after * context.total_equity
        weights: dict[AssetKey, float] = {}
        marks: dict[AssetKey, float] = {}
        if world_id in table.worlds:
            rows = np.flatnonzero(table.world == table.worlds.index(world_id))
            n_s = len(table.symbols)
            codes, index = group(
                table.venue[rows] * n_s + table.symbol[rows], len(table.venues) * n_s
            )
            size = codes.shape[0]
            net = exact_sums(index, table.qty[rows], size)
            mark = latest_mark(index, size, table.mark[rows], table.recency[rows])
            priced = mark > 0
            value = np.where(priced, net * np.where(priced, mark, 0.0), 0.0)
            total = float(exact_sums(np.zeros(size, np.int64), value, 1)[0])
            if total <= 0 and np.any(value != 0):
                raise PlanningError(
                    f"worlds[{world_id}]: its net value is {total:.12g}; target_weight needs a "
                    "positive one to measure its mix"
                )
            for code, v, m, ok in zip(
                codes.tolist(), value.tolist(), mark.tolist(), priced.tolist(), strict=True
            ):
                if ok:
                    key = (table.venues[code // n_s], table.symbols[code % n_s])
                    weights[key] = v / total if total > 0 else 0.0
                    marks[key] = m
        return WorldTargets(weights=weights, equity=equity, marks=marks)
