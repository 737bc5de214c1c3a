"""Delta intents (``messages.DeltaIntent`` as dicts) from a plan record.

A plan's intents are made from its record both when it is planned and when it is resumed
from its write-ahead, so both are the same intents, byte for byte.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def _money(x: float) -> float:
    return round(x, 8) + 0.0


def key_intents(header: Json, world_id: str | None, key: Json, legs: list[Json]) -> list[Json]:
    """The intents of one traded key, one per leg (``messages.DeltaIntent`` as dicts).

    ``header`` has the plan's ``plan_id``, ``event_id``, ``portfolio_id``, ``created_at`` and
    ``expires_at``; ``key`` is the key's entry of the plan record (venue, symbol, mark,
    notional, breakdown). Used by the planner and to rebuild intents from a record.
    """
    out: list[Json] = []
    for leg in legs:
        notional = (
            key["notional"] if len(legs) == 1 else _money(abs(leg["delta_qty"]) * key["mark"])
        )
        intent: Json = {
            "schema_version": 1,
            "intent_id": leg["intent_id"],
            "plan_id": header["plan_id"],
            "event_id": header["event_id"],
            "portfolio_id": header["portfolio_id"],
            "world_id": world_id,
            "venue": key["venue"],
            "symbol": key["symbol"],
            "current_qty": leg["current_qty"],
            "target_qty": leg["target_qty"],
            "delta_qty": leg["delta_qty"],
            "mark": key["mark"],
            "notional": notional,
            "reduce_only": leg["reduce_only"],
            "leg": leg["leg"],
            "depends_on": leg["depends_on"],
            "strategy_breakdown": key["strategy_breakdown"],
            "created_at": header["created_at"],
            "expires_at": header["expires_at"],
        }
        if "slice_index" in leg:  # only then: an unsliced intent keeps its bytes
            intent["slice_index"] = leg["slice_index"]
            intent["slice_count"] = leg["slice_count"]
        out.append(intent)
    return out


def intents_from_record(record: Json) -> list[Json]:
    """The delta intents a plan record describes, in order: per world (or, in a shared
    account, the global view), per traded key, per leg. A plan's intents are made this way
    when it is planned and when it is resumed from its write-ahead, so both are the same."""
    shared = record["options"]["execution_mode"] == "shared_account"
    views: list[tuple[str | None, list[Json]]] = (
        [(None, record["global_deltas"])]
        if shared
        else [(w, p["deltas"]) for w, p in record["per_world"].items()]
    )
    return [
        intent
        for world_id, deltas in views
        for d in deltas
        for intent in key_intents(record, world_id, d, d["legs"])
    ]
