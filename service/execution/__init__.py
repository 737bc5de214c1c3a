"""Execution-side domain logic (SPEC 5), pure: what to reach, what to order, who owns fills."""

from .ledger import Ledger, weights
from .residual import OrderRequest, VenueRules, next_order, to_lots
from .targets import KeyId, KeyTarget, Offer, TargetBook

__all__ = [
    "KeyId",
    "KeyTarget",
    "Ledger",
    "Offer",
    "OrderRequest",
    "TargetBook",
    "VenueRules",
    "next_order",
    "to_lots",
    "weights",
]
