"""The policy runner: evaluates the configured policies against the live state, pure.

On every check (a timer, and a world's snapshot updates) it answers, per rule and watched
world of a portfolio this instance owns, one ``Evaluation``: triggered (with the event to
publish) or why not. It never plans: a triggered policy becomes a ``policy_rebalance`` event
that the service publishes to the allocation topic, so the engine plans, holds, records and
recovers it like any change. What keeps a policy from firing twice:

- a world with work under way (held change, plan not yet reached) is not evaluated, nor one
  whose last published event has not been applied yet;
- event ids are deterministic per policy, world and time bucket (the calendar period, or the
  check interval for a band), so a second instance or a restart in the same bucket publishes
  an id the engine already applied;
- the engine drops a policy event measured before its world's latest plan;
- cooldowns and trade limits count the triggers the world's state remembers (changelog);
- which period a hybrid or regime rule looked at the world in, a regime's mark samples, and
  a risk-based target's samples and drawdown trough are the world's policy memory
  (``state.policy_memory``): read from the state, changed ones handed back in
  ``Evaluation.memory`` (whatever the outcome) and written to the changelog by the service,
  so a restart or a new owner repeats no check and goes on with the windows.

A risk-based target (``kelly``, ``risk_parity``, ``equal``) is weighed on the world's mark
samples (``sampling``, ``estimate``), taken on every evaluation a sample is due in, even one
that goes no further (busy, not due); until there are enough, the world is ``estimating`` and
never triggers. Its event carries the computed weights as a plain ``weights`` target.

Stale or missing marks never trigger: a world whose oldest snapshot is older than
``max_snapshot_age_ms``, or that holds a key without a mark, is reported and skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..engine import RebalanceEngine
from ..engine.equity import Equity
from ..messages import (
    AllocationTarget,
    AssetWeight,
    PolicyEstimate,
    PolicyRebalance,
    PolicyTarget,
    WeightsTarget,
)
from ..planner.ids import hex_id
from ..policies.calendar import Cadence, period_numbers
from ..policies.errors import PolicyError
from ..policies.measure import WorldHoldings, holdings, label
from ..policies.regimes import Regime, VolatilityRegimes
from ..policies.risk import DrawdownState
from ..policies.triggers import DriftBand
from ..state.allocations import WorldState
from ..state.policy_memory import (
    MARK_LABELS_KEPT,
    MarkSamples,
    PolicyLook,
    PolicyMemory,
    TargetMemory,
)
from .config import (
    BandTrigger,
    CalendarTrigger,
    HybridTrigger,
    PolicyRule,
    PolicySettings,
    RegimeTrigger,
    RiskTarget,
)
from .estimate import Estimating, RiskWeights, risk_weights, samples_needed
from .sampling import basket_returns

Outcome = Literal[
    "triggered",
    "in_band",
    "not_due",
    "throttled",
    "busy",
    "pending",
    "stale",
    "missing_mark",
    "no_allocation",
    "no_equity",
    "no_positions",
    "estimating",
    "no_estimate",
]
DAY_MS = 86_400_000
WORLD = "world"
"""The one 'asset' of an allocation target: the world's weight of total equity."""


@dataclass(frozen=True)
class Evaluation:
    """One rule's answer for one world at one moment."""

    policy: str
    portfolio_id: str
    world_id: str
    outcome: Outcome
    detail: str = ""
    event: PolicyRebalance | None = None
    equity: Equity | None = None
    """The portfolio equity the world was weighed against (measured, else the event's)."""
    memory: PolicyMemory | None = None
    """The world's policy memory when this evaluation changed it (a look, a mark sample, a
    drawdown trough), whatever its outcome: the service writes it to the changelog
    (``RebalanceEngine.remember``)."""


@dataclass(frozen=True)
class Look:
    """What a trigger does now: look on a calendar (``cadence``), act out of a band."""

    kind: Literal["band", "calendar", "hybrid", "regime"]
    cadence: Cadence | None
    band: DriftBand | None


def period(now_ms: int, cadence: Cadence) -> int:
    """The calendar period (UTC) that ``now_ms`` falls in."""
    day = np.array([now_ms // DAY_MS], dtype="datetime64[D]")
    return int(period_numbers(day, cadence)[0])


def event_id(rule: str, world_id: str, bucket: str) -> str:
    """``policy:{rule}:{world}:{bucket}``, the world hashed if the id would be too long."""
    eid = f"policy:{rule}:{world_id}:{bucket}"
    if len(eid) <= 200:
        return eid
    digest = hex_id(world_id.encode(), 16)
    return f"policy:{rule}:{digest}:{bucket}"


class PolicyRunner:
    """Evaluates every configured policy; remembers only what it published. What it looked at
    (periods, mark samples, a drawdown trough) it reads from the state's policy memory and
    hands back as ``Evaluation.memory`` for the service to write to the changelog."""

    def __init__(self, settings: PolicySettings, engine: RebalanceEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.rules = settings.rules
        self.worlds = {w for rule in self.rules for w in rule.worlds}
        """Every watched world id (snapshots of other worlds never cause an evaluation)."""
        self.outstanding_ms = max(2 * settings.check_interval_ms, 30_000)
        """How long a published event blocks its world before it is given up on (one that
        was dead-lettered is never applied)."""
        self._published: dict[tuple[str, str], tuple[str, int]] = {}

    def published(self, event: PolicyRebalance, now_ms: int) -> None:
        """Note an event as published: its world waits until the engine has applied it."""
        self._published[(event.portfolio_id, event.world_id)] = (event.event_id, now_ms)

    def evaluate(
        self,
        now_ms: int,
        owns: Callable[[str], bool],
        worlds: Collection[str] | None = None,
    ) -> list[Evaluation]:
        """Evaluate the rules of owned portfolios, for ``worlds`` only when given."""
        out = []
        equities: dict[str, Equity] = {}  # measured once per portfolio and evaluation
        for rule in self.rules:
            if not owns(rule.portfolio_id):
                continue
            for world_id in rule.worlds:
                if worlds is None or world_id in worlds:
                    pid = rule.portfolio_id
                    if pid not in equities:
                        equities[pid] = self.engine.equity(pid)
                    out.append(self._evaluate(rule, world_id, now_ms, equities[pid]))
        return out

    # -- one world ------------------------------------------------------------------------------

    def _evaluate(
        self, rule: PolicyRule, world_id: str, now_ms: int, portfolio_equity: Equity
    ) -> Evaluation:
        portfolio_id = rule.portfolio_id
        key = (portfolio_id, world_id)
        state = self.engine.state
        remembered = state.policy_memory(portfolio_id, world_id)
        memory = remembered

        def answer(outcome: Outcome, detail: str = "") -> Evaluation:
            changed = memory if memory != remembered else None
            return Evaluation(
                rule.name, portfolio_id, world_id, outcome, detail, None, portfolio_equity, changed
            )

        risk = rule.target if isinstance(rule.target, RiskTarget) else None
        if risk is not None:  # samples accrue whatever the world's state, for when it is due
            memory = self._sample(risk, memory, world_id, now_ms)
        sent = self._published.get(key)
        if sent is not None:
            eid, at = sent
            if state.was_applied(portfolio_id, eid) or now_ms - at > self.outstanding_ms:
                del self._published[key]
            else:
                return answer("pending", f"event {eid} published, not applied yet")
        ws = state.world(portfolio_id, world_id)
        if self.engine.busy(ws, now_ms):
            return answer("busy", "a held change or a plan not yet reached")
        target = rule.target
        equity = portfolio_equity.value
        if not isinstance(target, WeightsTarget) or target.base == "allocation":
            if ws.alloc is None:
                return answer("no_allocation", "the service has no allocation for the world")
            if not equity > 0:
                return answer(
                    "no_equity", f"the portfolio's equity is not known: {portfolio_equity.detail}"
                )
        last = ws.policy_triggers[-1] if ws.policy_triggers else None
        look = None if isinstance(rule.trigger, RegimeTrigger) else self.look(rule)
        if look is not None and (why := self._not_due(look, memory, last, now_ms)):
            return answer("not_due", why)
        oldest = self.engine.snapshots.oldest_as_of(world_id)
        age_limit = self.settings.max_snapshot_age_ms
        if oldest is not None and now_ms - oldest > age_limit:
            return answer("stale", f"oldest snapshot is {now_ms - oldest} ms old (> {age_limit})")
        held = holdings(self.engine.snapshots.positions([world_id]), world_id)
        if held.missing_marks:
            missing = ", ".join(label(k) for k in held.missing_marks)
            return answer("missing_mark", f"no mark for {missing}")
        estimate: PolicyEstimate | None = None
        concrete: PolicyTarget
        if risk is not None:
            found = self.estimate(risk, memory, held)
            if isinstance(found, RiskWeights):
                memory = _with_trough(memory, risk, found.guard.trough)
            if isinstance(found, Estimating):
                return answer("estimating", f"{risk.kind}: {found.detail}, not ready")
            if isinstance(found, str):
                return answer("no_estimate", found)
            concrete, estimate = _weights_target(risk, found)
        else:
            assert not isinstance(target, RiskTarget)
            concrete = target
        measured = self.measure_target(concrete, ws, held, equity)
        if isinstance(measured, str):
            outcome: Outcome = "missing_mark" if measured.startswith("no mark") else "no_positions"
            return answer(outcome, measured)
        weights, targets = measured
        if look is None:  # a regime: its cadence and band come from the marks just measured
            assert isinstance(rule.trigger, RegimeTrigger)
            regime, samples = self.regime(rule, memory.samples, held, now_ms)
            memory = memory.model_copy(update={"samples": samples})
            look = Look("regime", regime.cadence, DriftBand(regime.band, mode=rule.trigger.mode))
            if why := self._not_due(look, memory, last, now_ms):
                return answer("not_due", why)
        if look.cadence is not None and look.kind in ("hybrid", "regime"):
            this_period = PolicyLook(cadence=look.cadence, period=period(now_ms, look.cadence))
            memory = memory.model_copy(update={"looked": this_period})
        reason = f"{look.kind} trigger"
        if look.band is not None:
            out = look.band.out_of_band(weights, targets)
            if not out:
                return answer("in_band", _describe(weights, targets, look.band))
            reason = f"out of band: {_describe(weights, targets, look.band, out)}"
        elif look.cadence is not None:
            reason = f"{look.cadence} calendar"
        if estimate is not None:
            overlays = "".join(f" + {o}" for o in estimate.overlays)
            reason += f"; {estimate.method}{overlays} weights from {estimate.samples} mark samples"
        uses_equity = not isinstance(target, WeightsTarget) or target.base == "allocation"
        if uses_equity and portfolio_equity.source != "measured":
            reason += f"; weighed against the event's {portfolio_equity.describe()}"
        throttled = self._throttled(rule, ws, now_ms)
        if throttled:
            return answer("throttled", throttled)
        interval = self.settings.check_interval_ms
        bucket = (
            f"{look.cadence}{period(now_ms, look.cadence)}"
            if look.cadence is not None
            else f"t{now_ms // interval * interval}"
        )
        event = PolicyRebalance(
            type="policy_rebalance",
            event_id=event_id(rule.name, world_id, bucket),
            portfolio_id=portfolio_id,
            occurred_at=now_ms,
            world_id=world_id,
            policy=rule.name,
            trigger=rule.trigger.kind,
            reason=reason[:1000],
            target=concrete,
            measured=weights,
            targets=targets,
            estimate=estimate,
        )
        changed = memory if memory != remembered else None
        return Evaluation(
            rule.name, portfolio_id, world_id, "triggered", reason, event, portfolio_equity, changed
        )

    def _sample(
        self, target: RiskTarget, memory: PolicyMemory, world_id: str, now_ms: int
    ) -> PolicyMemory:
        """The world's memory with a sample for its risk-based target taken now, if one is due
        and the marks can be trusted (fresh snapshots, a mark for every target asset): the
        marks of the target assets and of what else the world holds (its drawdown is valued
        on them; the target's first if more than ``MARK_LABELS_KEPT``), ``window + 1`` kept.
        Samples of another spacing are not this window: they are dropped, the trough kept."""
        need = samples_needed(target)
        kept = memory.target
        if not need:  # equal weights alone: nothing to remember
            return memory if kept is None else memory.model_copy(update={"target": None})
        if kept is None or kept.sample_ms != target.sample_ms:
            trough = kept.trough if kept is not None else 0.0
            kept = TargetMemory(sample_ms=target.sample_ms, trough=trough)
        taken = self._marks_taken(target, kept.samples, world_id, now_ms, need)
        if taken is not None:
            kept = kept.model_copy(update={"samples": taken})
        if memory.target is None and kept == TargetMemory(sample_ms=target.sample_ms):
            return memory  # nothing sampled, nothing to write
        return memory if kept == memory.target else memory.model_copy(update={"target": kept})

    def _marks_taken(
        self, target: RiskTarget, samples: MarkSamples, world_id: str, now_ms: int, keep: int
    ) -> MarkSamples | None:
        """``samples`` with the world's marks taken now (None: not due, or not trusted)."""
        if not samples.due(now_ms, target.sample_ms):
            return None
        oldest = self.engine.snapshots.oldest_as_of(world_id)
        if oldest is None or now_ms - oldest > self.settings.max_snapshot_age_ms:
            return None
        held = holdings(self.engine.snapshots.positions([world_id]), world_id)
        marks = {label(k): m for k, m in held.marks().items()}
        labels = [label((a.venue, a.symbol)) for a in target.assets]
        if not all(name in marks for name in labels):
            return None
        return samples.taken(now_ms, marks, target.sample_ms, keep, first=labels)

    @staticmethod
    def estimate(
        target: RiskTarget, memory: PolicyMemory, held: WorldHoldings
    ) -> RiskWeights | Estimating | str:
        """The risk-based target's weights from the world's samples and drawdown trough (its
        policy memory); ``Estimating`` until there are enough, or why the policy function
        refused them."""
        kept = memory.target
        usable = kept is not None and kept.sample_ms == target.sample_ms
        samples = kept.samples.samples() if kept is not None and usable else []
        guard = DrawdownState(kept.trough) if kept is not None else DrawdownState()
        qty = {label(k): float(q) for k, q in zip(held.keys, held.qty.tolist(), strict=True)}
        try:
            return risk_weights(target, samples, qty, guard)
        except PolicyError as exc:
            return f"{target.kind}: {exc}"

    @staticmethod
    def measure(
        rule: PolicyRule, ws: WorldState, held: WorldHoldings, equity: float
    ) -> tuple[dict[str, float], dict[str, float]] | str:
        """The world's weights and their targets, by asset label, for a fixed target (a
        risk-based target's weights are estimated by the runner that owns the world)."""
        if isinstance(rule.target, RiskTarget):
            return (
                f"its {rule.target.kind} weights are estimated from mark samples by the "
                "instance that owns the portfolio"
            )
        return PolicyRunner.measure_target(rule.target, ws, held, equity)

    @staticmethod
    def measure_target(
        target: PolicyTarget, ws: WorldState, held: WorldHoldings, equity: float
    ) -> tuple[dict[str, float], dict[str, float]] | str:
        """The world's weights and their targets, by asset label; or why they cannot be had.

        Allocation target: one entry, the world's value over total equity vs its allocation.
        Weights target: every held or targeted asset's value over the base vs its weight.
        """
        if isinstance(target, AllocationTarget):
            value = held.value(target.measure)
            if not value > 0:
                return f"the world's {target.measure} value is {value:.12g}: nothing to scale"
            return {WORLD: value / equity}, {WORLD: ws.alloc or 0.0}
        base = (ws.alloc or 0.0) * equity if target.base == "allocation" else held.value("net")
        if not base > 0:
            return f"the world's {target.base} base is {base:.12g}"
        marks = held.marks()
        unpriced = [
            label((w.venue, w.symbol)) for w in target.weights if (w.venue, w.symbol) not in marks
        ]
        if unpriced:
            return f"no mark for target asset(s) {', '.join(unpriced)}"
        weights = {label(k): w for k, w in held.weights(base).items()}
        targets = {label((w.venue, w.symbol)): w.weight for w in target.weights}
        for name in set(weights) | set(targets):
            weights.setdefault(name, 0.0)
            targets.setdefault(name, 0.0)
        return dict(sorted(weights.items())), dict(sorted(targets.items()))

    @staticmethod
    def look(rule: PolicyRule) -> Look:
        trigger = rule.trigger
        if isinstance(trigger, BandTrigger):
            return Look("band", None, DriftBand(trigger.threshold, mode=trigger.mode))
        if isinstance(trigger, CalendarTrigger):
            return Look("calendar", trigger.every, None)
        assert isinstance(trigger, HybridTrigger)
        return Look("hybrid", trigger.every, DriftBand(trigger.threshold, mode=trigger.mode))

    @staticmethod
    def _not_due(look: Look, memory: PolicyMemory, last: int | None, now_ms: int) -> str:
        """Why a calendar-driven look is not due now ('' when it is): the world was already
        rebalanced by its policy this period, or (hybrid, regime) already looked at, as the
        world's policy memory says (kept in the changelog: a restart does not look again)."""
        if look.cadence is None:
            return ""
        now_period = period(now_ms, look.cadence)
        if last is not None and period(last, look.cadence) == now_period:
            return f"already rebalanced this {look.cadence} period"
        seen = memory.looked
        if (
            look.kind != "calendar"
            and seen is not None
            and (seen.cadence, seen.period) == (look.cadence, now_period)
        ):
            return f"already looked this {look.cadence} period"
        return ""

    def regime(
        self, rule: PolicyRule, samples: MarkSamples, held: WorldHoldings, now_ms: int
    ) -> tuple[Regime, MarkSamples]:
        """The world's volatility regime, and its samples with this moment's taken if due:
        marks of its basket (target assets, else what it holds; the first ``MARK_LABELS_KEPT``
        by label) sampled every ``sample_ms``, ``window + 1`` kept; equal-weight basket
        returns between samples. The samples live in the world's policy memory (changelog),
        so a restart or a new owner goes on with the window (first regime until there are two
        returns)."""
        trigger = rule.trigger
        assert isinstance(trigger, RegimeTrigger)
        target = rule.target
        marks = held.marks()
        if isinstance(target, AllocationTarget):
            basket = [k for k in held.keys if k in marks]
        elif isinstance(target, RiskTarget):
            basket = [(a.venue, a.symbol) for a in target.assets]
        else:
            basket = [(w.venue, w.symbol) for w in target.weights]
        now = dict(sorted((label(k), marks[k]) for k in basket if k in marks))
        now = dict(list(now.items())[:MARK_LABELS_KEPT])
        taken = samples.taken(now_ms, now, trigger.sample_ms, trigger.window + 1)
        samples = taken or samples
        return regime_of(trigger, samples), samples

    @staticmethod
    def _throttled(rule: PolicyRule, ws: WorldState, now_ms: int) -> str:
        """Why the rule's limits forbid a trigger now ('' when they allow it)."""
        history = ws.policy_triggers
        if rule.cooldown_ms and history and now_ms - history[-1] < rule.cooldown_ms:
            return f"cooldown: last trigger {now_ms - history[-1]} ms ago (< {rule.cooldown_ms})"
        if rule.max_trades is not None:
            current = period(now_ms, rule.per)
            count = sum(1 for t in history if period(t, rule.per) == current)
            if count >= rule.max_trades:
                return f"max_trades: {count} this {rule.per} period (limit {rule.max_trades})"
        return ""


def regime_of(trigger: RegimeTrigger, samples: MarkSamples) -> Regime:
    """The regime the samples put the world in: annualized volatility of the equal-weight
    basket's returns between samples (the assets both samples have)."""
    regimes = VolatilityRegimes(
        regimes=tuple(Regime(r.name, r.from_volatility, r.every, r.band) for r in trigger.regimes),
        window=trigger.window,
        periods_per_year=trigger.periods_per_year,
    )
    return regimes.current(basket_returns(samples.samples()))


def _describe(
    weights: dict[str, float],
    targets: dict[str, float],
    band: DriftBand,
    out: list[str] | None = None,
) -> str:
    """``asset weight vs target`` for the assets out of band (or the widest drift)."""
    drift = band.drift(weights, targets)
    names = out or ([max(drift, key=lambda a: drift[a])] if drift else [])
    parts = [f"{a} {weights.get(a, 0.0):.6g} vs {targets.get(a, 0.0):.6g}" for a in names]
    limit = band.threshold if not isinstance(band.threshold, dict) else "per asset"
    return f"{', '.join(parts)} ({band.mode} band {limit})"


def _with_trough(memory: PolicyMemory, target: RiskTarget, trough: float) -> PolicyMemory:
    """The memory with the drawdown guard's trough after an estimate (unchanged if it is)."""
    kept = memory.target or TargetMemory(sample_ms=target.sample_ms)
    if kept.trough == trough:
        return memory
    return memory.model_copy(update={"target": kept.model_copy(update={"trough": trough})})


def _weights_target(target: RiskTarget, found: RiskWeights) -> tuple[WeightsTarget, PolicyEstimate]:
    """The concrete weights an estimate gives, as the event's target, and its audit."""
    keys = [(a.venue, a.symbol) for a in target.assets]
    concrete = WeightsTarget(
        kind="weights",
        weights=[
            AssetWeight(venue=k[0], symbol=k[1], weight=float(w))
            for k, w in zip(keys, found.weights.tolist(), strict=True)
        ],
        base="allocation",
        strategy_id=target.strategy_id,
    )
    estimate = PolicyEstimate(
        method=target.kind,
        overlays=list(target.overlays),
        samples=found.samples,
        sample_ms=target.sample_ms,
        first_sample_at=found.first_at,
        last_sample_at=found.last_at,
        before_overlays={
            label(k): float(w) for k, w in zip(keys, found.before_overlays.tolist(), strict=True)
        },
        drawdown=found.drawdown,
        exposure=found.exposure,
    )
    return concrete, estimate


__all__ = ["Evaluation", "Outcome", "PolicyRunner", "event_id", "period", "regime_of"]
