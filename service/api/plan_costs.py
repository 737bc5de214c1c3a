"""A plan of the history with what it cost: estimated by the cost model before, realised by
the execution nodes' fills after (``RealisedCost``; null until a node reports a fill)."""

from __future__ import annotations

from pydantic import Field

from ..policies.costs import CostModel
from ..state.read_model import PlanSummary
from ..state.realised import RealisedCost, RealisedCosts


class CostedPlan(PlanSummary):
    """A plan summary with its estimated and realised cost."""

    estimated_cost: float = Field(
        description="By the cost model (costs): rate x turnover + fixed_per_trade x traded keys."
    )
    realised_cost: RealisedCost | None = Field(
        description="Fees and slippage of its fills as the execution nodes reported them; "
        "null where no node reported a fill."
    )


def estimated_cost(model: CostModel, turnover: float, traded_keys: int) -> float:
    return model.rate * turnover + model.fixed_per_trade * traded_keys


def costed(plan: PlanSummary, model: CostModel, realised: RealisedCosts) -> CostedPlan:
    return CostedPlan(
        **plan.model_dump(),
        estimated_cost=round(estimated_cost(model, plan.turnover, plan.traded_keys), 8),
        realised_cost=realised.of(plan.plan_id),
    )
