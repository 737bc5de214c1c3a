"""The policy runner's decisions, pure: bands, calendars, limits, stale and missing marks,
ownership, and event ids that a restart or a second instance reproduces."""

from __future__ import annotations

from typing import Any

import pytest

from service.live.config import PolicySettings
from service.live.runner import DAY_MS, Evaluation, PolicyRunner, period
from service.planner import PlannerOptions
from service.policies.measure import holdings
from service.state.allocations import encode, world_key
from service.state.policy_memory import MarkSamples
from tests.engine.test_engine import Harness, event
from tests.engine.test_policy_engine import snap

NOW = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC, a Tuesday
INTERVAL = 60_000


def settings(
    trigger: dict[str, Any], target: dict[str, Any] | None = None, **rule: Any
) -> PolicySettings:
    return PolicySettings.model_validate(
        {
            "enabled": True,
            "check_interval_ms": INTERVAL,
            "max_snapshot_age_ms": 300_000,
            "rules": [
                {
                    "name": "keep",
                    "worlds": ["a"],
                    "trigger": trigger,
                    "target": target or {"kind": "allocation"},
                    **rule,
                }
            ],
        }
    )


BAND = {"kind": "band", "mode": "absolute", "threshold": 0.05}


class Rig:
    """World a at 0.2 of 1,000 equity holding 2 X (value 200 at a mark of 100); the rest of
    the portfolio is world ``reserve``'s 800 in cash, so the measured equity is 1,000 at a
    mark of 100 and follows X's mark on a's share of it."""

    def __init__(self, policies: PolicySettings) -> None:
        self.h = Harness(planner=PlannerOptions(lot_size_by_symbol={"X": 0.001}))
        self.price(100.0, NOW - 10_000)
        self.h.snapshots.apply(snap("cash", [], as_of=NOW - 10_000, world="reserve", cash=800.0))
        allocs = {"a": 0.2, "reserve": 0.8}
        self.h.send(
            event(world_alloc_before=allocs, world_alloc_after=allocs, total_equity=1e3),
            NOW - 10_000,
        )
        self.runner = PolicyRunner(policies, self.h.engine)

    def price(self, mark: float | None, as_of: int, **fields: Any) -> None:
        self.h.snapshots.apply(snap("s1", [("X", 2.0, mark)], as_of=as_of, **fields))

    def at(self, now: int, *, mark: float | None = None) -> Evaluation:
        """Evaluate, and write what it looked at to the state, as the policy loop does."""
        if mark is not None:
            self.price(mark, now)
        (evaluation,) = self.runner.evaluate(now, lambda _: True)
        self.remember(evaluation)
        return evaluation

    def remember(self, *evaluations: Evaluation) -> None:
        memories = [e.memory for e in evaluations if e.memory is not None]
        for work in self.h.engine.remember(memories):
            self.h.run(work)

    def triggers(self, *times: int) -> None:
        """Let the world's state remember earlier policy triggers."""
        ws = self.h.state.world("default", "a")
        ws = ws.model_copy(update={"policy_triggers": list(times)})
        self.h.state.apply(world_key("default", "a"), encode(ws))


def test_band_inside_and_outside() -> None:
    rig = Rig(settings(BAND))
    inside = rig.at(NOW, mark=120.0)  # 240 of 1,040: 0.2308 against 0.2, inside 0.05
    assert inside.outcome == "in_band"
    assert inside.event is None
    assert "world 0.230769 vs 0.2" in inside.detail
    assert inside.equity is not None
    assert (inside.equity.value, inside.equity.source) == (1_040.0, "measured")
    out = rig.at(NOW + 1_000, mark=150.0)  # 300 of 1,100: 0.2727
    assert out.outcome == "triggered"
    ev = out.event
    assert ev is not None
    assert ev.event_id == f"policy:keep:a:t{(NOW + 1_000) // INTERVAL * INTERVAL}"
    assert (ev.world_id, ev.policy, ev.trigger, ev.occurred_at) == (
        "a",
        "keep",
        "band",
        NOW + 1_000,
    )
    assert ev.measured == pytest.approx({"world": 300 / 1_100})
    assert ev.targets == {"world": 0.2}
    assert ev.target.kind == "allocation"
    assert ev.reason == "out of band: world 0.272727 vs 0.2 (absolute band 0.05)"


def test_relative_band_and_a_shrinking_world() -> None:
    rig = Rig(settings({"kind": "band", "mode": "relative", "threshold": 0.25}))
    assert rig.at(NOW, mark=80.0).outcome == "in_band"  # 160 of 960: 16.7 % under
    assert rig.at(NOW + 1, mark=70.0).outcome == "triggered"  # 140 of 940: 25.5 % under


def test_ids_are_deterministic_per_bucket_so_a_restart_or_second_instance_does_not_repeat() -> None:
    rig = Rig(settings(BAND))
    rig.price(150.0, NOW)
    bucket = NOW // INTERVAL * INTERVAL
    first = rig.runner.evaluate(bucket + 5, lambda _: True)[0].event
    other = PolicyRunner(rig.runner.settings, rig.h.engine)  # a restart, or another instance
    second = other.evaluate(bucket + INTERVAL - 1, lambda _: True)[0].event
    assert first is not None
    assert second is not None
    assert first.event_id == second.event_id
    later = other.evaluate(bucket + INTERVAL, lambda _: True)[0].event
    assert later is not None
    assert later.event_id != first.event_id
    # once the engine applied the first, the same id is a duplicate, and the world is busy
    rig.h.send(first, bucket + 10)
    assert rig.h.engine.on_event(second, bucket + 20).duplicate
    assert other.evaluate(bucket + INTERVAL, lambda _: True)[0].outcome == "busy"


def test_a_published_event_blocks_its_world_until_it_is_applied() -> None:
    rig = Rig(settings(BAND))
    triggered = rig.at(NOW, mark=150.0)
    assert triggered.event is not None
    rig.runner.published(triggered.event, NOW)
    pending = rig.at(NOW + INTERVAL)
    assert pending.outcome == "pending"
    assert triggered.event.event_id in pending.detail
    rig.h.send(triggered.event, NOW + INTERVAL + 1)
    assert rig.at(NOW + INTERVAL + 2).outcome == "busy"  # its plan is in flight
    # an event that never gets applied (dead-lettered) stops blocking after a while
    lost = Rig(settings(BAND))
    ev = lost.at(NOW, mark=150.0).event
    assert ev is not None
    lost.runner.published(ev, NOW)
    assert lost.at(NOW + lost.runner.outstanding_ms).outcome == "pending"
    assert lost.at(NOW + lost.runner.outstanding_ms + 1).outcome == "triggered"


def test_the_world_is_free_again_once_its_correction_is_reached() -> None:
    rig = Rig(settings(BAND))
    ev = rig.at(NOW, mark=150.0).event
    assert ev is not None
    work = rig.h.send(ev, NOW + 1)
    plan_id = work.records[0]["plan_id"]
    assert rig.at(NOW + 2).outcome == "busy"
    rig.h.snapshots.apply(
        snap("s1", [("X", 1.466, 150.0)], as_of=NOW + 3, converged_plan_id=plan_id)
    )
    assert rig.at(NOW + 4).outcome == "in_band"


def test_cooldown() -> None:
    rig = Rig(settings(BAND, cooldown_ms=3_600_000))
    rig.triggers(NOW - 3_000_000)
    throttled = rig.at(NOW, mark=150.0)
    assert throttled.outcome == "throttled"
    assert "cooldown" in throttled.detail
    assert rig.at(NOW + 600_000, mark=150.0).outcome == "triggered"


def test_max_trades_per_period() -> None:
    rig = Rig(settings(BAND, max_trades=2, per="daily"))
    today = NOW // DAY_MS * DAY_MS
    rig.triggers(today + 1, today + 2)
    throttled = rig.at(NOW, mark=150.0)
    assert throttled.outcome == "throttled"
    assert "max_trades: 2 this daily period (limit 2)" in throttled.detail
    rig.triggers(today - 2, today + 1)  # one today: one more is allowed
    assert rig.at(NOW + 1, mark=150.0).outcome == "triggered"


def test_stale_or_missing_marks_never_trigger() -> None:
    rig = Rig(settings(BAND))
    stale = rig.at(NOW + 290_001)  # its snapshot is from NOW - 10,000
    assert stale.outcome == "stale"
    assert "300001 ms old" in stale.detail
    rig.price(None, NOW)  # fresh, without a mark
    missing = rig.at(NOW)
    assert missing.outcome == "missing_mark"
    assert "v:X" in missing.detail


def test_calendar_due_once_per_period() -> None:
    rig = Rig(settings({"kind": "calendar", "every": "monthly"}))
    rig.price(100.0, NOW)
    due = rig.at(NOW)  # exactly on target: a calendar rebalances anyway
    assert due.outcome == "triggered"
    assert due.event is not None
    assert due.event.event_id == f"policy:keep:a:monthly{period(NOW, 'monthly')}"
    assert due.event.reason == "monthly calendar"
    rig.triggers(NOW)
    not_due = rig.at(NOW + DAY_MS)  # Nov 15: same month
    assert not_due.outcome == "not_due"
    assert "already rebalanced this monthly period" in not_due.detail
    december = NOW + 17 * DAY_MS
    assert rig.at(december, mark=100.0).outcome == "triggered"


def test_hybrid_looks_once_per_period_and_acts_only_out_of_band() -> None:
    hybrid = {"kind": "hybrid", "every": "weekly", "mode": "absolute", "threshold": 0.05}
    rig = Rig(settings(hybrid))
    assert rig.at(NOW, mark=110.0).outcome == "in_band"  # this week's look
    later = rig.at(NOW + 3_600_000, mark=150.0)  # out of band, but the week was looked at
    assert later.outcome == "not_due"
    assert "already looked this weekly period" in later.detail
    next_week = NOW + 6 * DAY_MS  # Monday Nov 20
    assert rig.at(next_week, mark=150.0).outcome == "triggered"


def test_a_look_that_could_not_measure_does_not_count() -> None:
    hybrid = {"kind": "hybrid", "every": "weekly", "mode": "absolute", "threshold": 0.05}
    rig = Rig(settings(hybrid))
    assert rig.at(NOW + 300_000).outcome == "stale"  # no look this week yet
    assert rig.at(NOW + 300_001, mark=150.0).outcome == "triggered"


def test_volatility_regime_sets_cadence_and_band() -> None:
    regime = {"kind": "regime", "mode": "absolute", "window": 4, "sample_ms": DAY_MS}
    rig = Rig(settings(regime))
    rule = rig.runner.rules[0]

    samples = MarkSamples()

    def regime_on(day: int, mark: float) -> str:
        nonlocal samples
        rig.price(mark, NOW + day * DAY_MS)
        table = rig.h.snapshots.positions(["a"])
        held = holdings(table, "a")
        regime, samples = rig.runner.regime(rule, samples, held, NOW + day * DAY_MS)
        return regime.name

    assert regime_on(0, 100.0) == "low"  # no returns yet
    assert regime_on(1, 100.1) == "low"
    assert regime_on(2, 100.0) == "low"  # calm: well under 15 % a year
    assert regime_on(3, 110.0) == "extreme"  # +-10 % a day is far above 60 % a year
    assert regime_on(3, 140.0) == "extreme"  # same day: no new sample
    assert samples.samples() == [
        (NOW + day * DAY_MS, {"v:X": mark})
        for day, mark in ((0, 100.0), (1, 100.1), (2, 100.0), (3, 110.0))
    ]
    for day in range(4, 8):
        regime_on(day, 110.0)
    assert len(samples.times) == 5  # window + 1: the oldest dropped


def test_only_owned_portfolios_and_the_asked_worlds_are_evaluated() -> None:
    rig = Rig(settings(BAND))
    rig.price(150.0, NOW)
    assert rig.runner.evaluate(NOW, lambda _: False) == []
    assert rig.runner.evaluate(NOW, lambda _: True, worlds={"b"}) == []
    assert [e.outcome for e in rig.runner.evaluate(NOW, lambda _: True, worlds={"a"})] == [
        "triggered"
    ]
    assert rig.runner.worlds == {"a"}


def test_worlds_the_service_cannot_weigh_are_reported() -> None:
    rig = Rig(settings(BAND))
    fresh = PolicyRunner(settings(BAND), Harness().engine)
    assert fresh.evaluate(NOW, lambda _: True)[0].outcome == "no_allocation"
    rig.h.snapshots.apply(snap("s1", [("X", 0.0, 100.0)], as_of=NOW))
    empty = rig.at(NOW)
    assert empty.outcome == "no_positions"


def test_weights_target_measures_each_asset() -> None:
    target = {
        "kind": "weights",
        "base": "holdings",
        "weights": [
            {"venue": "v", "symbol": "X", "weight": 0.5},
            {"venue": "v", "symbol": "Y", "weight": 0.5},
        ],
    }
    rig = Rig(settings({"kind": "band", "mode": "absolute", "threshold": 0.1}, target))
    rig.h.snapshots.apply(snap("s1", [("X", 2.0, 100.0), ("Y", 3.0, 50.0)], as_of=NOW))
    inside = rig.at(NOW)  # 200 and 150 of 350: 0.571 and 0.429
    assert inside.outcome == "in_band"
    rig.h.snapshots.apply(snap("s1", [("X", 2.0, 100.0), ("Y", 1.0, 50.0)], as_of=NOW + 1))
    out = rig.at(NOW + 2)  # 200 and 50 of 250: 0.8 and 0.2
    assert out.outcome == "triggered"
    assert out.event is not None
    assert out.event.measured == pytest.approx({"v:X": 0.8, "v:Y": 0.2})
    assert out.event.targets == {"v:X": 0.5, "v:Y": 0.5}
    assert "v:X 0.8 vs 0.5, v:Y 0.2 vs 0.5" in out.event.reason
    rig.h.snapshots.apply(snap("s1", [("X", 2.0, 100.0)], as_of=NOW + 3))
    unpriced = rig.at(NOW + 4)
    assert unpriced.outcome == "missing_mark"
    assert "v:Y" in unpriced.detail
