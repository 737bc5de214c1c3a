"""The pure planner (SPEC 3): numpy over columnar positions, no I/O, no clock."""

from .base import (
    ExecutionMode,
    FlipPolicy,
    PlannerOptions,
    PlanningContext,
    PlanningError,
    Rebalancer,
)
from .plan import Plan
from .positions import PositionTable
from .proportional import MultiWorldProportionalRebalancer, ProportionalRebalancer
from .scaling import ScaleRule, WorldChange, WorldScale
from .target_weight import AssetKey, TargetWeightRebalancer, WorldTargets

__all__ = [
    "AssetKey",
    "ExecutionMode",
    "FlipPolicy",
    "MultiWorldProportionalRebalancer",
    "Plan",
    "PlannerOptions",
    "PlanningContext",
    "PlanningError",
    "PositionTable",
    "ProportionalRebalancer",
    "Rebalancer",
    "ScaleRule",
    "TargetWeightRebalancer",
    "WorldChange",
    "WorldScale",
    "WorldTargets",
]
