"""Helpers for building and reading plans in tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from service.planner import (
    MultiWorldProportionalRebalancer,
    Plan,
    PlannerOptions,
    PlanningContext,
    PositionTable,
    WorldChange,
)

Row = tuple[str, str, str | None, str, float, float | None, int]


def plan_rows(
    rows: Iterable[Row],
    changes: Iterable[WorldChange],
    *,
    total_equity: float = 1_000_000.0,
    current_weights: Mapping[str, Mapping[str, float]] | None = None,
    reduce_only_worlds: Iterable[str] = (),
    **options: Any,
) -> Plan:
    """Plan ``rows`` under ``changes`` with the multi-world planner (``reduce_only_worlds``
    in the reduce-only trading state)."""
    context = PlanningContext(
        event_id="test-event",
        portfolio_id="default",
        occurred_at=1_000,
        total_equity=total_equity,
        changes=tuple(changes),
        positions=PositionTable.from_rows(rows),
        options=PlannerOptions(**options),
        current_weights=current_weights or {},
        reduce_only_worlds=frozenset(reduce_only_worlds),
    )
    return MultiWorldProportionalRebalancer().plan(context)


def world_deltas(plan: Plan, world: str) -> dict[tuple[str | None, str], dict[str, Any]]:
    """A world's traded keys by (venue, symbol)."""
    return {(d["venue"], d["symbol"]): d for d in plan.record()["per_world"][world]["deltas"]}


def world_dropped(plan: Plan, world: str) -> dict[tuple[str | None, str], str]:
    """A world's dropped keys' reasons by (venue, symbol)."""
    return {
        (d["venue"], d["symbol"]): d["reason"] for d in plan.record()["per_world"][world]["dropped"]
    }
