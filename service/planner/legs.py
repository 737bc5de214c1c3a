"""The legs of a traded key (SPEC 3.6): what its intents ask of an execution node."""

from __future__ import annotations

from typing import Any

from .ids import intent_id

Json = dict[str, Any]


def key_legs(
    plan_id: str,
    world_id: str | None,
    venue: str | None,
    symbol: str,
    current: float,
    target: float,
    delta: float,
    *,
    split_flip: bool,
    reduce_only: bool,
) -> list[Json]:
    """A traded key's legs: one, or a close then an open for a flip the venue cannot make
    in one order (``split_flip``), each with its deterministic intent id."""
    if split_flip:
        close_id = intent_id(plan_id, world_id, venue, symbol, "close")
        return [
            {
                "intent_id": close_id,
                "leg": "close",
                "current_qty": current,
                "target_qty": 0.0,
                "delta_qty": -current,
                "reduce_only": True,
                "depends_on": None,
            },
            {
                "intent_id": intent_id(plan_id, world_id, venue, symbol, "open"),
                "leg": "open",
                "current_qty": 0.0,
                "target_qty": target,
                "delta_qty": target,
                "reduce_only": False,
                "depends_on": close_id,
            },
        ]
    leg = "close" if target == 0 else "adjust"
    return [
        {
            "intent_id": intent_id(plan_id, world_id, venue, symbol, leg),
            "leg": leg,
            "current_qty": current,
            "target_qty": target,
            "delta_qty": delta,
            "reduce_only": reduce_only,
            "depends_on": None,
        }
    ]
