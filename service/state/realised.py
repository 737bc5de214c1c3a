"""Realised cost per plan, from the execution nodes' fill reports (``PlanFills``).

A report holds one node run's cumulative totals for one plan, so the board keeps the latest
report per (node, session, plan) -- the one with the most fills, the later one on a tie --
and a plan's realised cost is their sum. Reading a report twice, or an older one after a
newer one (a replay, a restart of the service reading the topic again), changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from ..messages import PlanFills

Reporter = tuple[str, str]
"""A node run: (node id, session)."""


class RealisedCost(BaseModel):
    """What the fills of one plan cost, as the execution nodes reported them."""

    total: float = Field(description="fees + slippage.")
    fees: float = Field(description="Fees the venues charged on the plan's fills.")
    slippage: float = Field(
        description="Sum over fills of quantity x (fill price - the intent's mark): what the "
        "fills paid beyond the marks the plan was computed at (negative: better)."
    )
    filled_notional: float = Field(description="Sum of |quantity| x price over the fills.")
    fills: int = Field(description="Fills reported (partial fills each count).")
    nodes: int = Field(description="Node runs that reported fills of the plan.")


@dataclass
class RealisedCosts:
    """The latest fill report of every node run, by plan."""

    by_plan: dict[str, dict[Reporter, PlanFills]] = field(default_factory=dict)
    _keys: dict[str, tuple[str, Reporter]] = field(default_factory=dict)
    """Record key to (plan, reporter), for tombstones."""

    def __len__(self) -> int:
        return len(self.by_plan)

    def apply(self, key: str | None, report: PlanFills) -> None:
        reporter = (report.node_id, report.session)
        held = self.by_plan.setdefault(report.plan_id, {})
        known = held.get(reporter)
        if known is None or (report.fills, report.sent_at) >= (known.fills, known.sent_at):
            held[reporter] = report
        if key is not None:
            self._keys[key] = (report.plan_id, reporter)

    def forget(self, key: str) -> bool:
        """A tombstone of a report's key; False if no report had that key."""
        found = self._keys.pop(key, None)
        if found is None:
            return False
        plan_id, reporter = found
        held = self.by_plan.get(plan_id, {})
        held.pop(reporter, None)
        if not held:
            self.by_plan.pop(plan_id, None)
        return True

    def of(self, plan_id: str) -> RealisedCost | None:
        """The plan's realised cost; None if no node reported fills of it."""
        reports = self.by_plan.get(plan_id)
        if not reports:
            return None
        fees = sum(r.fees for r in reports.values())
        slippage = sum(r.slippage for r in reports.values())
        return RealisedCost(
            total=round(fees + slippage, 8),
            fees=round(fees, 8),
            slippage=round(slippage, 8),
            filled_notional=round(sum(r.filled_notional for r in reports.values()), 8),
            fills=sum(r.fills for r in reports.values()),
            nodes=len(reports),
        )
