"""A policy correction through its rule's cost gate: measured on the plan as planned, and the
record of one the gate skips.

The decision is made on the plan itself (the keys it would trade, the intents it would
publish), so it is exactly as deterministic as the plan: the same snapshots give the same
plan, the same figures, the same decision. A skipped correction is published through the
write-ahead like any plan, so a crash after it was decided finishes it as decided.
"""

from __future__ import annotations

from ..policies.gate import CorrectionGate, GateFigures, KeyMove
from .work import Json

SKIPPED = "skipped_by_cost_gate"


def decide(gate: CorrectionGate, record: Json, world_id: str, equity: float) -> GateFigures:
    """The gate's decision on a plan ``record`` correcting ``world_id``, measured as shares
    of ``equity``: the world's keys (traded and dropped, those with a mark), and the notional
    of every key the plan publishes intents for."""
    world = record["per_world"][world_id]
    moves = [
        KeyMove(
            d["symbol"],
            d["mark"],
            d["current_qty"],
            d["current_qty"] + d["delta_qty_unrounded"],
            d["current_qty"] + d["delta_qty"],
        )
        for d in world["deltas"]
    ]
    moves += [
        KeyMove(
            d["symbol"],
            d["mark"],
            d["current_qty"],
            d["current_qty"] + d["delta_qty_unrounded"],
            d["current_qty"],
        )
        for d in world["dropped"]
        if d["mark"] is not None
    ]
    shared = record["options"]["execution_mode"] == "shared_account"
    published = record["global_deltas"] if shared else world["deltas"]
    notionals = [d["notional"] for d in published if d["legs"]]
    return gate.decide(moves, notionals, equity)


def skipped_record(record: Json) -> Json:
    """A plan record as the gate skipped it: the same plan, status ``skipped_by_cost_gate``,
    every key without its legs, no intents."""

    def unlegged(deltas: list[Json]) -> list[Json]:
        return [{**d, "legs": []} for d in deltas]

    return {
        **record,
        "status": SKIPPED,
        "per_world": {
            w: {**p, "deltas": unlegged(p["deltas"])} for w, p in record["per_world"].items()
        },
        "global_deltas": unlegged(record["global_deltas"]),
        "intent_ids": [],
    }


def reason(figures: Json) -> str:
    """One line for people: both figures and the ratio they were compared with."""
    verb = "within" if figures["go"] else "above"
    return (
        f"cost {figures['cost']:.2f} ({figures['cost_share']:.4%} of equity) {verb} "
        f"{figures['max_cost_to_benefit']:g} x expected benefit "
        f"{figures['benefit_share']:.4%} (tracking error {figures['tracking_error_before']:.4%}"
        f" -> {figures['tracking_error_after']:.4%})"
    )
