"""What the live policies remember of a world (the period a hybrid or regime rule looked at it
in, a regime's mark samples) is kept in the changelog: a new owner, or the same instance after
a restart, reads it back and repeats no check."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from service.engine import Outcome, RebalanceEngine
from service.live.config import PolicySettings
from service.live.outlook import next_period_start, outlook
from service.live.runner import DAY_MS, PolicyRunner, period
from service.state.allocations import (
    AllocationState,
    ChangelogError,
    Record,
    encode,
    portfolio_key,
    world_key,
)
from service.state.policy_memory import (
    MARK_SAMPLES_KEPT,
    MarkSamples,
    PolicyLook,
    PolicyMemory,
    policy_key,
)
from tests.policies.test_policy_runner import NOW, Rig, settings

HYBRID = {"kind": "hybrid", "every": "weekly", "mode": "absolute", "threshold": 0.05}
REGIME = {"kind": "regime", "mode": "absolute", "window": 4, "sample_ms": DAY_MS}


def changelog(state: AllocationState) -> list[Record]:
    """The changelog as compaction leaves it: the latest record of every key."""
    records: list[Record] = []
    for (p, w), ws in state.worlds.items():
        records.append((world_key(p, w), encode(ws)))
    for p, portfolio in state.portfolios.items():
        records.append((portfolio_key(p), encode(portfolio)))
    for (p, w), memory in state.policy_memories.items():
        records.append((policy_key(p, w), encode(memory)))
    return records


def new_owner(rig: Rig, policies: PolicySettings, *, forget: bool = False) -> PolicyRunner:
    """A runner of another instance (or of this one restarted): its state read back from the
    changelog, the same snapshots. ``forget``: without the policy memories (as before)."""
    state = AllocationState()
    state.apply_all(
        (k, v) for k, v in changelog(rig.h.state) if not (forget and k.startswith(b"policy|"))
    )
    return PolicyRunner(policies, RebalanceEngine(state, rig.h.snapshots, rig.h.engine.options))


def test_a_new_owner_does_not_look_again_in_a_period_looked_at() -> None:
    policies = settings(HYBRID)
    rig = Rig(policies)
    looked = rig.at(NOW, mark=110.0)
    assert looked.outcome == "in_band"
    assert looked.memory == PolicyMemory(
        portfolio_id="default",
        world_id="a",
        looked=PolicyLook(cadence="weekly", period=period(NOW, "weekly")),
    )
    rig.price(150.0, NOW + 3_600_000)  # out of band now
    (again,) = new_owner(rig, policies).evaluate(NOW + 3_600_000, lambda _: True)
    assert (again.outcome, again.detail) == ("not_due", "already looked this weekly period")
    assert again.memory is None  # nothing new to write
    # the control: an owner that forgot the look would check again, and trigger
    (forgot,) = new_owner(rig, policies, forget=True).evaluate(NOW + 3_600_000, lambda _: True)
    assert forgot.outcome == "triggered"
    # next week the new owner looks again
    rig.price(150.0, NOW + 6 * DAY_MS)
    (next_week,) = new_owner(rig, policies).evaluate(NOW + 6 * DAY_MS, lambda _: True)
    assert next_week.outcome == "triggered"


def test_a_new_owner_goes_on_with_the_regime_samples() -> None:
    policies = settings(REGIME)
    rig = Rig(policies)
    outcomes = [rig.at(NOW + d * DAY_MS, mark=m).outcome for d, m in enumerate(MARKS)]
    # day 0 looks (low regime: monthly), days 1-2 sample within that month, day 3's jump makes
    # the regime extreme (daily) and is looked at
    assert outcomes == ["in_band", "not_due", "not_due", "in_band"]
    memory = rig.h.state.policy_memory("default", "a")
    assert memory.samples.samples() == [(NOW + d * DAY_MS, {"v:X": m}) for d, m in enumerate(MARKS)]
    assert memory.looked == PolicyLook(cadence="daily", period=period(NOW + 3 * DAY_MS, "daily"))
    later = NOW + 3 * DAY_MS + 3_600_000
    rig.price(110.0, later)  # fresh, the same mark (no sample due within the day)
    (again,) = new_owner(rig, policies).evaluate(later, lambda _: True)
    # only the samples read back put it in the daily regime that was looked at today
    assert (again.outcome, again.detail) == ("not_due", "already looked this daily period")
    (forgot,) = new_owner(rig, policies, forget=True).evaluate(later, lambda _: True)
    assert forgot.outcome == "in_band"  # one sample: the low regime, not looked this month


MARKS = (100.0, 100.1, 100.0, 110.0)


def test_the_reads_follow_the_memory_any_instance_has() -> None:
    hybrid = Rig(settings(HYBRID))
    hybrid.at(NOW, mark=110.0)
    (rule,) = hybrid.runner.rules
    found = outlook(rule, "a", hybrid.h.state, hybrid.h.snapshots, hybrid.runner.settings, NOW + 1)
    assert found.next_check_at == next_period_start(NOW, "weekly")  # looked at this week
    regime = Rig(settings(REGIME))
    for d, m in enumerate(MARKS):
        regime.at(NOW + d * DAY_MS, mark=m)
    (rule,) = regime.runner.rules
    now = NOW + 3 * DAY_MS
    found = outlook(rule, "a", regime.h.state, regime.h.snapshots, regime.runner.settings, now)
    assert (found.status, found.band, found.band_mode) == ("in_band", 0.15, "absolute")
    assert found.detail == "volatility regime extreme (4 mark samples)"
    assert found.next_check_at == next_period_start(now, "daily")


def test_the_engine_writes_memories_per_portfolio_as_state_only() -> None:
    memories = [
        PolicyMemory(portfolio_id=p, world_id=w) for p, w in (("p1", "a"), ("p2", "b"), ("p1", "c"))
    ]
    works = RebalanceEngine.remember(memories)
    assert [(w.outcome, w.portfolio_id) for w in works] == [
        (Outcome.REMEMBERED, "p1"),
        (Outcome.REMEMBERED, "p2"),
    ]
    assert [k for k, _ in works[0].state] == [b"policy|p1|a", b"policy|p1|c"]
    assert all(not w.records and w.pending is None and not w.has_intents for w in works)
    assert RebalanceEngine.remember([]) == []


def test_samples_are_stored_by_column_and_read_back() -> None:
    rows = [(1, {"v:X": 10.0, "v:Y": 2.0}), (5, {"v:X": 11.0}), (9, {"v:Y": 3.0, "w:Z": 1.5})]
    samples = MarkSamples.of(rows)
    assert samples.labels == ["v:X", "v:Y", "w:Z"]
    assert samples.marks == [[10.0, 2.0, None], [11.0, None, None], [None, 3.0, 1.5]]
    assert samples.samples() == rows
    stored = PolicyMemory(portfolio_id="p", world_id="w", samples=samples)
    state = AllocationState()
    state.apply(policy_key("p", "w"), encode(stored))
    assert state.policy_memory("p", "w") == stored
    assert orjson.loads(encode(stored))["samples"]["labels"] == ["v:X", "v:Y", "w:Z"]
    state.apply(policy_key("p", "w"), None)
    assert state.policy_memory("p", "w") == PolicyMemory(portfolio_id="p", world_id="w")


def test_a_sample_is_taken_when_due_and_the_window_is_bounded() -> None:
    samples = MarkSamples()
    for t in range(0, 50, 10):
        taken = samples.taken(t, {"a": 1.0 + t}, every_ms=10, keep=3)
        assert taken is not None
        samples = taken
    assert samples.times == [20, 30, 40]
    assert samples.taken(49, {"a": 9.0}, every_ms=10, keep=3) is None
    many = MarkSamples.of([(t, {"a": 1.0}) for t in range(MARK_SAMPLES_KEPT + 5)])
    assert len(many.times) == MARK_SAMPLES_KEPT
    assert many.times[0] == 5


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"labels": ["a"], "times": [1, 2], "marks": [[1.0]]}, "2 times but 1 rows of marks"),
        ({"labels": ["a"], "times": [1], "marks": [[1.0, 2.0]]}, "marks.0: 2 marks for 1 labels"),
        ({"labels": ["a"], "times": [2, 2], "marks": [[1.0], [1.0]]}, "times must increase"),
        ({"labels": ["a"], "times": [1], "marks": [[-1.0]]}, "greater than 0"),
    ],
)
def test_bad_samples_are_refused(body: dict[str, object], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        MarkSamples.model_validate(body)


def test_an_unreadable_memory_stops_the_service_naming_its_key() -> None:
    with pytest.raises(ChangelogError, match=r"changelog record b'policy\|p\|w'"):
        AllocationState().apply(policy_key("p", "w"), b'{"portfolio_id": "p"}')


def test_a_regime_window_the_memory_cannot_keep_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="window"):
        settings({**REGIME, "window": MARK_SAMPLES_KEPT})
    assert settings({**REGIME, "window": MARK_SAMPLES_KEPT - 1}).rules[0].trigger.kind == "regime"
