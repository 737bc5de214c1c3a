"""Pacing a large allocation move: the steps it goes in, each planned once the last is reached.

A world's move larger than ``max_step_share`` of its current allocation is cut into
``steps`` front-loaded steps (``policies.pacing.pace``: the world allocation and the strategy
weights the move names walk from where they are to where the move ends, the first step the
largest). Each step is an allocation change of its own, planned by the same planner on the
positions of the moment; the step after it waits in the world's held change (``Pacing``,
reason ``plan_in_flight``) until the step's plan is reached or times out. The remaining steps
are state, written with the plan that publishes the step, so a restart or a new owner goes
on with the step it finds and never plans the whole move again.

A world moved only from zero (no allocation to scale from) is not paced: the proportional
planner has no positions to scale in steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from ..policies.pacing import pace
from ..state.allocations import HeldChange, HoldReason, PacedStep, Pacing
from .admission import Requested, Waiting
from .options import EventOptions, PaceRule


def moved_share(
    alloc_before: float | None,
    alloc_after: float | None,
    strategy_before: Mapping[str, float] | None,
    strategy_after: Mapping[str, float] | None,
) -> float | None:
    """How much of the world a move moves: the largest change of the world allocation or of
    a strategy weight it names, over the world's allocation. ``None`` when the world has no
    allocation to measure against (or to scale from)."""
    if alloc_before is None or alloc_before <= 0:
        return None
    moved = abs(alloc_after - alloc_before) if alloc_after is not None else 0.0
    if strategy_after and strategy_before is not None:
        moved = max(
            moved, *(abs(w - strategy_before.get(s, 0.0)) for s, w in strategy_after.items())
        )
    return moved / alloc_before


def paced_steps(
    rule: PaceRule | None,
    alloc_before: float | None,
    strategy_before: Mapping[str, float] | None,
    req: Requested,
) -> list[PacedStep] | None:
    """The steps of ``req`` under ``rule``, the last one the move's end exactly; ``None``
    when the move is not paced (no rule, or not larger than its share).

    Strategy weights the move names are paced with the world when the world's current
    weights are known; otherwise they are applied whole with the last step (the steps
    before it only scale the world)."""
    if rule is None:
        return None
    share = moved_share(alloc_before, req.alloc_after, strategy_before, req.strategy_after)
    if share is None or share <= rule.max_step_share:
        return None
    assert alloc_before is not None
    names = sorted(req.strategy_after or {}) if strategy_before is not None else []
    before = strategy_before or {}
    after = req.strategy_after or {}
    current = [alloc_before, *(before.get(s, 0.0) for s in names)]
    target = [req.alloc_after if req.alloc_after is not None else alloc_before]
    target += [after[s] for s in names]
    rows = pace(current, target, rule.steps, rule.ratio).tolist()
    steps = []
    for k, row in enumerate(rows):
        last = k == len(rows) - 1
        if last:
            alloc, weights = req.alloc_after, dict(after) if req.strategy_after else None
        else:
            alloc = None if req.alloc_after is None else _ratio(row[0])
            weights = {s: _ratio(w) for s, w in zip(names, row[1:], strict=True)} or None
        steps.append(PacedStep(alloc_after=alloc, strategy_after=weights))
    return steps


def _ratio(x: float) -> float:
    return min(1.0, max(0.0, x)) + 0.0


def as_step(req: Requested, step: PacedStep, pacing: Pacing | None) -> Requested:
    """``req`` narrowed to one step (``pacing``: the steps after it, if it is held)."""
    return replace(
        req, alloc_after=step.alloc_after, strategy_after=step.strategy_after, pacing=pacing
    )


def next_step(req: Requested, steps: list[PacedStep] | None, waiting: Waiting) -> HeldChange | None:
    """The held change that goes after the step planned now: for a move just paced
    (``steps``), its second step; for a step (``req.pacing``), the one after it; else none.
    It waits for the plan of this step (``plan_in_flight``)."""
    if steps is not None:
        following = Pacing(step=2, steps=len(steps), remaining=steps[2:])
        held = as_step(req, steps[1], following)
    elif req.pacing is not None and req.pacing.remaining:
        pacing = req.pacing
        following = Pacing(step=pacing.step + 1, steps=pacing.steps, remaining=pacing.remaining[1:])
        held = as_step(req, pacing.remaining[0], following)
    else:
        return None
    return replace(held, alloc_before=None, strategy_before=None).waiting(
        replace(waiting, reason=HoldReason.PLAN_IN_FLIGHT)
    )


def step_waiting(
    event_ids: tuple[str, ...],
    since: int,
    total_equity: float,
    occurred_at: int,
    asked: EventOptions,
    requested_by: str | None,
) -> Waiting:
    """How a paced move's next step waits: for the events it carries out, on their equity and
    options (a step plans the same move, later)."""
    return Waiting(
        event_ids=event_ids,
        reason=HoldReason.PLAN_IN_FLIGHT,
        since=since,
        total_equity=total_equity,
        occurred_at=occurred_at,
        asked=asked,
        requested_by=requested_by,
    )
