"""What a node's fills of each plan cost: fees the venue charged, and slippage against the
mark the plan was computed at.

Slippage of one fill is ``fill_qty x (fill_price - intent.mark)``: positive when a buy paid
more, or a sell got less, than the intent's mark (the price the planner sized the trade at
and the cost model's estimate assumes). Totals are per plan and cumulative for this run of
the node; plans with new fills are ``dirty`` until reported.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

PLANS_KEPT = 10_000
"""Plans whose totals a node keeps (the least recently filled go first): a plan filled again
after it went would start its totals over, which a reader would take as its latest."""


@dataclass
class PlanCost:
    """One plan's fills so far."""

    fills: int = 0
    filled_notional: float = 0.0
    fees: float = 0.0
    slippage: float = 0.0


@dataclass
class FillCosts:
    """Per plan id, the cost of this node's fills; ``dirty``: plans to report."""

    kept: int = PLANS_KEPT
    plans: OrderedDict[str, PlanCost] = field(default_factory=OrderedDict)
    dirty: set[str] = field(default_factory=set)

    def record(self, plan_id: str, *, qty: float, price: float, mark: float, fee: float) -> None:
        """A fill of ``qty`` (signed, positive buys) at ``price`` for an intent of ``plan_id``
        whose mark was ``mark``, with the venue's ``fee``. A fill without a finite price or
        fee is not costed (counted, so the report still shows it)."""
        cost = self.plans.pop(plan_id, None) or PlanCost()
        self.plans[plan_id] = cost
        cost.fills += 1
        if math.isfinite(price) and math.isfinite(fee):
            cost.filled_notional += abs(qty) * price
            cost.fees += fee
            cost.slippage += qty * (price - mark)
        self.dirty.add(plan_id)
        while len(self.plans) > self.kept:
            gone, _ = self.plans.popitem(last=False)
            self.dirty.discard(gone)

    def take_dirty(self) -> dict[str, PlanCost]:
        """The plans with fills since the last call, with their totals (copies)."""
        out = {p: PlanCost(**vars(self.plans[p])) for p in sorted(self.dirty) if p in self.plans}
        self.dirty.clear()
        return out

    def mark_dirty(self, plan_ids: set[str]) -> None:
        """Report these again (their report could not be sent)."""
        self.dirty |= plan_ids & self.plans.keys()
