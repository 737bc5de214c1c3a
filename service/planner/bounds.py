"""Whether a plan's numbers fit its messages, checked before anything of it is published.

Inputs are bounded (``messages._types``), but a plan multiplies and divides them: a tiny
``before`` allocation makes a huge scale factor, a tiny equity (5e-324) infinite derived
weights. orjson writes a non-finite float as ``null``, which no reader of the record or the
intents can use. So the service and the ``plan`` command ask this module first, and a plan
that does not fit is refused with the reason. (Whether the plan's weights fit the service's
state, ratios in [0, 1], is the state's own validation: see ``engine``.)
"""

from __future__ import annotations

import math

import numpy as np

from ..messages._types import MAX_QUANTITY
from .base import PlanningError
from .netting import NettedKeys
from .plan import Plan

QUANTITY_FIELDS = ("current", "target", "delta", "target_unrounded", "delta_unrounded")


def check_plan(plan: Plan) -> Plan:
    """``plan`` when everything in it fits its messages; else ``PlanningError`` saying what
    does not (the first five problems)."""
    problems = plan_problems(plan)
    if problems:
        raise PlanningError("the plan cannot be published: " + "; ".join(problems[:5]))
    return plan


def plan_problems(plan: Plan) -> list[str]:
    """What in ``plan`` no message can carry (empty when it all fits), one line each."""
    problems: list[str] = []
    for scale in plan.worlds:
        where = f"world {scale.world_id!r}"
        factors = [("scale_world", scale.scale_world)]
        factors += [
            (name, value)
            for name, value in (
                ("alloc_before", scale.alloc_before),
                ("alloc_after", scale.alloc_after),
            )
            if value is not None
        ]
        factors += [(f"scale_by_strategy.{s}", g) for s, g in scale.scale_by_strategy.items()]
        for name, value in factors:
            if not math.isfinite(value):
                problems.append(f"{where}: {name} is {value} (not a finite number)")
        for name, weights in (
            ("strategy_alloc_before", scale.strategy_before),
            ("strategy_alloc_after", scale.strategy_after),
        ):
            problems.extend(
                f"{where}: {name}.{strategy} is {weight} (not a finite number)"
                for strategy, weight in weights.items()
                if not math.isfinite(weight)
            )
    problems.extend(_view_problems("per_world", plan.per_world))
    if plan.global_view is not None and not plan.global_is_per_world:
        problems.extend(_view_problems("global_deltas", plan.global_view))
    return problems


def _view_problems(view_name: str, view: NettedKeys) -> list[str]:
    out = []
    for field in QUANTITY_FIELDS:
        values = getattr(view, field)
        bad = ~(np.abs(values) <= MAX_QUANTITY)  # NaN compares false: caught too
        if bad.any():
            first = float(values[np.flatnonzero(bad)[0]])
            out.append(
                f"{view_name}: {int(bad.sum())} key(s) with a {field} quantity beyond "
                f"±{MAX_QUANTITY:.0e} or not finite (first: {first!r})"
            )
    pairs = view.pair_delta
    if pairs.shape[0] and not bool((np.abs(pairs) <= MAX_QUANTITY).all()):
        out.append(f"{view_name}: a strategy breakdown delta beyond ±{MAX_QUANTITY:.0e}")
    return out
