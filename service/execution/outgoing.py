"""The snapshot an execution node publishes for one strategy (SPEC 5.3), built purely.

A strategy may hold positions at several venues; each node knows only its own venue's
fills. So a node's snapshot keeps the other venues' rows as the topic last had them and
replaces its own venue's rows with its ledger. ``as_of`` only moves forward: a snapshot
older than the one on the topic would be ignored by the rebalancer.
"""

from __future__ import annotations

from typing import Any

from .ledger import Ledger, Owner
from .snapshot_view import HeldSnapshot


def next_as_of(now_ms: int, last_published: int, held: HeldSnapshot | None) -> int:
    """A time after both what this node last published and what the topic holds."""
    return max(now_ms, last_published + 1, (held.as_of + 1) if held is not None else 0)


def node_snapshot(
    owner: Owner,
    held: HeldSnapshot | None,
    ledger: Ledger,
    venue: str,
    as_of: int,
    converged_plan_id: str | None,
) -> dict[str, Any]:
    """The snapshot of ``owner`` as the node of ``venue`` reports it, as a JSON object."""
    world_id, strategy_id = owner
    rows: list[dict[str, Any]] = []
    if held is not None:
        rows = [
            {"symbol": p.symbol, "venue": p.venue, "qty": p.qty, "mark": p.mark}
            for p in held.positions()
            if p.venue != venue
        ]
    for (at, symbol), qty in sorted(ledger.holdings.get(owner, {}).items()):
        if qty != 0:
            rows.append(
                {"symbol": symbol, "venue": at, "qty": qty, "mark": ledger.marks.get((at, symbol))}
            )
    return {
        "world_id": world_id,
        "strategy_id": strategy_id,
        "as_of": as_of,
        "positions": rows,
        "converged_plan_id": converged_plan_id,
    }
