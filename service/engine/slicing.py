"""Slicing a plan's large intents (``[slicing] max_slice_notional``) before it is published.

The record is sliced, not the intents: the write-ahead, the published record and the
intents rebuilt from either (``intents_from_record``) then all name the same slices, so a
restart republishes them byte for byte. The plan id does not change (slicing is how a plan
is executed, not what it is), and a plan with no leg above the limit is left as it was.
"""

from __future__ import annotations

from typing import Any

from ..planner import PlannerOptions
from ..policies.pacing import slice_legs

Json = dict[str, Any]


def lot_size(options: PlannerOptions, venue: str | None, symbol: str) -> float | None:
    """The key's lot size as the planner rounded it: the venue's, else the symbol's."""
    if venue is not None:
        lot = options.lot_size_by_venue.get(venue, {}).get(symbol)
        if lot is not None:
            return lot
    return options.lot_size_by_symbol.get(symbol)


def _sliced_keys(
    keys: list[Json], max_notional: float, options: PlannerOptions
) -> tuple[list[Json], bool]:
    out, changed = [], False
    for key in keys:
        mark = key.get("mark")
        if not key["legs"] or not mark or key["notional"] <= max_notional:
            out.append(key)
            continue
        legs = slice_legs(
            key["legs"], float(mark), max_notional, lot_size(options, key["venue"], key["symbol"])
        )
        changed = changed or len(legs) != len(key["legs"])
        out.append({**key, "legs": legs})
    return out, changed


def sliced_record(record: Json, max_notional: float, options: PlannerOptions) -> Json:
    """``record`` with every leg above ``max_notional`` cut into slices, and its
    ``intent_ids`` listing the slices in their place; ``record`` itself if none is."""
    changed = False
    per_world = {}
    for world_id, plan in record["per_world"].items():
        deltas, sliced = _sliced_keys(plan["deltas"], max_notional, options)
        changed = changed or sliced
        per_world[world_id] = {**plan, "deltas": deltas} if sliced else plan
    global_deltas, sliced = _sliced_keys(record["global_deltas"], max_notional, options)
    if not (changed or sliced):
        return record
    shared = record["options"]["execution_mode"] == "shared_account"
    views = [global_deltas] if shared else [p["deltas"] for p in per_world.values()]
    intent_ids = [leg["intent_id"] for deltas in views for key in deltas for leg in key["legs"]]
    return {
        **record,
        "per_world": per_world,
        "global_deltas": global_deltas,
        "intent_ids": intent_ids,
    }
