"""Execution-side domain logic (SPEC 5), pure: what to reach, what to order, who owns fills,
when a plan is reached."""

from .convergence import PlanInfo, Plans, held_at, reached_elsewhere, within_tolerance
from .fill_costs import FillCosts, PlanCost
from .ledger import Ledger, weights
from .reconcile import Adopted, Gap, Unattributed, adopt, reconcile
from .residual import OrderRequest, VenueRules, next_order, to_lots
from .snapshot_view import HeldPosition, HeldSnapshot, PositionsOf
from .stepping import Due, GiveUp, Place, Reached, Step, due_leg, expire, next_step
from .targets import KeyId, KeyTarget, Offer, TargetBook

__all__ = [
    "Adopted",
    "Due",
    "FillCosts",
    "Gap",
    "GiveUp",
    "HeldPosition",
    "HeldSnapshot",
    "KeyId",
    "KeyTarget",
    "Ledger",
    "Offer",
    "OrderRequest",
    "Place",
    "PlanCost",
    "PlanInfo",
    "Plans",
    "PositionsOf",
    "Reached",
    "Step",
    "TargetBook",
    "Unattributed",
    "VenueRules",
    "adopt",
    "due_leg",
    "expire",
    "held_at",
    "next_order",
    "next_step",
    "reached_elsewhere",
    "reconcile",
    "to_lots",
    "weights",
    "within_tolerance",
]
