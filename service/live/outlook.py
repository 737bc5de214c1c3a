"""What the policies see of a world now, for reads: its drift against each rule's band and when
the rule looks at it next (SPEC 7, the control plane's portfolio reads).

The same measures as the policy runner (``PolicyRunner.measure``), on whatever state and
snapshots it is given: any instance answers for every portfolio from its read model. It never
triggers anything.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from ..engine.equity import Equity, EquitySource, portfolio_equity
from ..messages import WeightsTarget
from ..policies.calendar import Cadence, period_numbers
from ..policies.measure import holdings, label
from ..policies.triggers import DriftBand
from ..state.allocations import AllocationState
from ..state.policy_memory import PolicyMemory
from ..state.snapshots import SnapshotTable
from .config import PolicyRule, PolicySettings, RegimeTrigger
from .runner import DAY_MS, Look, PolicyRunner, period, regime_of

Status = Literal["in_band", "out_of_band", "calendar", "unmeasured"]


class PolicyOutlook(BaseModel):
    """One rule's view of one world."""

    policy: str
    trigger: str = Field(description="band, calendar, hybrid or regime.")
    status: Status = Field(
        description="in_band / out_of_band against the rule's band; calendar: a rule without "
        "a band; unmeasured: the world cannot be measured now (detail says why)."
    )
    detail: str = ""
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Measured weights by asset ('world': the world's share of total equity).",
    )
    targets: dict[str, float] = Field(default_factory=dict)
    equity: float | None = Field(
        default=None,
        description="The portfolio equity the world is weighed against (allocation-based "
        "targets): measured from the snapshots (positions times marks plus cash), else the "
        "last allocation event's total_equity.",
    )
    equity_source: EquitySource | None = Field(
        default=None, description="measured, event (the snapshots' figure is incomplete) or none."
    )
    equity_detail: str = Field(default="", description="Why the measured equity was not used.")
    drift: dict[str, float] = Field(
        default_factory=dict, description="Per asset, the drift the band is compared with."
    )
    band: float | dict[str, float] | None = Field(
        default=None, description="The band's threshold (per asset when a map)."
    )
    band_mode: str | None = None
    out_of_band: list[str] = Field(default_factory=list)
    next_check_at: int | None = Field(
        default=None,
        description="When the rule looks at the world next, if known: the start of the next "
        "calendar period once this one's rebalance happened, else the next check.",
    )
    checks_every_ms: int = Field(description="How often the policies are evaluated.")


def next_period_start(now_ms: int, cadence: Cadence) -> int:
    """The first midnight (UTC) after ``now_ms`` that starts a new period of ``cadence``."""
    today = now_ms // DAY_MS
    days = np.arange(today, today + 370, dtype="datetime64[D]")
    numbers = period_numbers(days, cadence)
    later = np.flatnonzero(numbers != numbers[0])
    return int(today + later[0]) * DAY_MS


def outlook(
    rule: PolicyRule,
    world_id: str,
    state: AllocationState,
    snapshots: SnapshotTable,
    settings: PolicySettings,
    now_ms: int,
    equity: Equity | None = None,
) -> PolicyOutlook:
    """What ``rule`` sees of the world now, and when it looks next; ``equity``: the
    portfolio's, when already measured (else measured here)."""
    interval = settings.check_interval_ms
    ws = state.world(rule.portfolio_id, world_id)
    memory = state.policy_memory(rule.portfolio_id, world_id)
    trigger = rule.trigger
    base = PolicyOutlook(
        policy=rule.name,
        trigger=trigger.kind,
        status="unmeasured",
        checks_every_ms=interval,
        next_check_at=_next_look(rule, ws.policy_triggers, memory, now_ms, interval),
    )
    measured = equity or portfolio_equity(state, snapshots, rule.portfolio_id)
    base = base.model_copy(
        update={
            "equity": measured.value,
            "equity_source": measured.source,
            "equity_detail": measured.detail,
        }
    )
    target = rule.target
    if not isinstance(target, WeightsTarget) or target.base == "allocation":
        if ws.alloc is None:
            return base.model_copy(update={"detail": "the service has no allocation for it"})
        if not measured.value > 0:
            detail = f"the portfolio's equity is not known: {measured.detail}"
            return base.model_copy(update={"detail": detail})
    held = holdings(snapshots.positions([world_id]), world_id)
    if held.missing_marks:
        missing = ", ".join(label(k) for k in held.missing_marks)
        return base.model_copy(update={"detail": f"no mark for {missing}"})
    weighed = PolicyRunner.measure(rule, ws, held, measured.value)
    if isinstance(weighed, str):
        return base.model_copy(update={"detail": weighed})
    weights, targets = weighed
    update: dict[str, object] = {"weights": weights, "targets": targets, "status": "calendar"}
    band = _look(rule, memory).band
    if band is not None:
        out = band.out_of_band(weights, targets)
        threshold = band.threshold
        update.update(
            drift=band.drift(weights, targets),
            band=dict(threshold) if not isinstance(threshold, int | float) else threshold,
            band_mode=band.mode,
            out_of_band=out,
            status="out_of_band" if out else "in_band",
        )
    if isinstance(trigger, RegimeTrigger):
        regime = regime_of(trigger, memory.samples)
        samples = len(memory.samples.times)
        update["detail"] = f"volatility regime {regime.name} ({samples} mark samples)"
    return base.model_copy(update=update)


def _look(rule: PolicyRule, memory: PolicyMemory) -> Look:
    """The rule's cadence and band now: a regime's from the mark samples in the world's
    policy memory (as the owner last took them), without taking one."""
    trigger = rule.trigger
    if isinstance(trigger, RegimeTrigger):
        regime = regime_of(trigger, memory.samples)
        return Look("regime", regime.cadence, DriftBand(regime.band, mode=trigger.mode))
    return PolicyRunner.look(rule)


def _next_look(
    rule: PolicyRule, triggers: list[int], memory: PolicyMemory, now_ms: int, interval: int
) -> int:
    """The start of the next period for a calendar-driven rule whose world was rebalanced by
    it this period, or (hybrid, regime) looked at in it; else the next check (at most
    ``interval`` from now)."""
    look = _look(rule, memory)
    cadence = look.cadence
    if cadence is None:
        return now_ms + interval
    now_period = period(now_ms, cadence)
    last = triggers[-1] if triggers else None
    seen = memory.looked
    looked = (
        look.kind != "calendar"
        and seen is not None
        and (seen.cadence, seen.period) == (cadence, now_period)
    )
    if looked or (last is not None and period(last, cadence) == now_period):
        return next_period_start(now_ms, cadence)
    return now_ms + interval


def world_outlooks(
    settings: PolicySettings,
    state: AllocationState,
    snapshots: SnapshotTable,
    portfolio_id: str,
    now_ms: int,
) -> dict[str, list[PolicyOutlook]]:
    """Per watched world of the portfolio, each rule's outlook (empty when policies are off)."""
    out: dict[str, list[PolicyOutlook]] = {}
    if not settings.enabled:
        return out
    equity: Equity | None = None
    for rule in settings.rules:
        if rule.portfolio_id != portfolio_id:
            continue
        equity = equity or portfolio_equity(state, snapshots, portfolio_id)  # once a read
        for world_id in rule.worlds:
            found = outlook(rule, world_id, state, snapshots, settings, now_ms, equity)
            out.setdefault(world_id, []).append(found)
    return out
