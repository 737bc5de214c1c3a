"""Scale factors per world and strategy (SPEC 3.1): the only place allocation ratios matter.

Everything downstream scales quantities by ``g``; this module decides ``g``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

ScaleRule = Literal["strategy", "bounded"]
WeightsSource = Literal["request", "current", "snapshots", "none"]


@dataclass(frozen=True)
class WorldChange:
    """One world's move as the planner receives it.

    ``alloc_before``/``alloc_after`` are None when the world's allocation is unknown and
    unchanged (a ``strategy_weights_updated`` event for a world the service has not seen).
    ``strategy_after`` is None when the strategies only follow the world (cascade).
    """

    world_id: str
    alloc_before: float | None
    alloc_after: float | None
    strategy_before: Mapping[str, float] | None = None
    strategy_after: Mapping[str, float] | None = None


@dataclass(frozen=True)
class WorldScale:
    """The resolved scale factors of one world, with the weights they came from."""

    world_id: str
    alloc_before: float | None
    alloc_after: float | None
    scale_world: float
    strategy_before: dict[str, float]
    strategy_after: dict[str, float]
    scale_by_strategy: dict[str, float]
    weights_source: WeightsSource


def world_scale(before: float | None, after: float | None) -> float:
    """``after / before``; from zero, 1 when the world gets capital and 0 when it does not."""
    if before is None or after is None:
        return 1.0
    if before == 0:
        return 1.0 if after > 0 else 0.0
    return after / before


def combine(rule: ScaleRule, gw: float, gs: float) -> float:
    """Combine world and strategy scales: as given, or the seed's bounded min/max rule."""
    if rule == "strategy" or gw == 1:
        return gs
    return min(gw, gs) if gw < 1 else max(gw, gs)


def resolve(
    change: WorldChange,
    *,
    held_strategies: Iterable[str],
    current_weights: Mapping[str, float] | None,
    derived_weights: Callable[[], Mapping[str, float]],
    scale_rule: ScaleRule,
) -> WorldScale:
    """Resolve one world's scale factors.

    Before weights come from the first source that exists: the request's before map (a
    strategy missing from it counts as 0), the service's current weights, then weights derived
    from snapshots. Strategies not named in the new weights keep their share of the world
    (``g = gw``); a strategy given weight 0 is liquidated under either rule.
    """
    gw = world_scale(change.alloc_before, change.alloc_after)
    after_map = change.strategy_after
    if change.alloc_after is not None:
        world_funded = change.alloc_after > 0
    else:
        world_funded = after_map is None or sum(after_map.values()) > 0

    source: WeightsSource
    if change.strategy_before is not None:
        before, source = dict(change.strategy_before), "request"
    elif current_weights is not None:
        before, source = dict(current_weights), "current"
    elif after_map is not None or change.alloc_before is not None:
        before, source = dict(derived_weights()), "snapshots"
    else:
        before, source = {}, "none"

    names = sorted(set(held_strategies) | set(before) | set(after_map or ()))
    scales: dict[str, float] = {}
    after: dict[str, float] = {}
    for s in names:
        b = before.get(s, 0.0)
        if after_map is None or s not in after_map:
            scales[s] = gw
            after[s] = b * gw
            continue
        a = after_map[s]
        after[s] = a
        if a == 0:
            scales[s] = 0.0
            continue
        gs = (gw if world_funded else 0.0) if b == 0 else a / b
        scales[s] = combine(scale_rule, gw, gs)
    return WorldScale(
        world_id=change.world_id,
        alloc_before=change.alloc_before,
        alloc_after=change.alloc_after,
        scale_world=gw,
        strategy_before={s: before.get(s, 0.0) for s in names},
        strategy_after=after,
        scale_by_strategy=scales,
        weights_source=source,
    )
