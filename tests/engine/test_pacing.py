"""Pacing in the engine: a large move as front-loaded steps, each planned once the last is
reached, the remaining steps in the changelog state, superseded by a newer change."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from service.engine import EngineOptions, RebalanceEngine, Work
from service.engine.options import PaceRule, PacingRules
from service.planner.netting import FLAT_TOLERANCE
from service.policies.pacing import pace_quantity
from service.state.allocations import AllocationState, HoldReason, Record
from service.state.snapshots import SnapshotTable
from tests.engine.test_engine import event, published, snap
from tests.examples import examples

RULE = PacingRules(default=PaceRule(max_step_share=0.5, steps=3))


class Recorder:
    """An engine whose work is applied to its state, every changelog write kept in order (so
    another engine can be rebuilt from them, as a restarted or new owner is)."""

    def __init__(self, records: list[Record] | None = None, **options: Any) -> None:
        self.state = AllocationState()
        self.snapshots = SnapshotTable()
        self.log: list[Record] = []
        for key, value in records or []:
            self.write(key, value)
        options.setdefault("pacing", RULE)
        self.engine = RebalanceEngine(self.state, self.snapshots, EngineOptions(**options))

    def write(self, key: bytes, value: bytes | None) -> None:
        self.state.apply(key, value)
        self.log.append((key, value))

    def run(self, work: Work) -> Work:
        if work.pending:
            self.write(*work.pending)
        for key, value in work.state:
            self.write(key, value)
        return work

    def send(self, **fields: Any) -> Work:
        return self.run(self.engine.on_event(event(**fields), fields.get("occurred_at", 1_000)))

    def release(self, now: int) -> list[Work]:
        return [self.run(w) for w in self.engine.released_work(now)]

    def reach(self, qty: float, plan_id: str, as_of: int) -> None:
        self.snapshots.apply(snap("s1", qty, as_of=as_of, converged_plan_id=plan_id))


def started(**options: Any) -> Recorder:
    r = Recorder(**options)
    r.snapshots.apply(snap("s1", 120.0))
    return r


def deltas(work: Work) -> list[float]:
    return [i["delta_qty"] for i in work.intents]


def test_a_large_move_goes_in_three_steps_each_after_the_previous_is_reached() -> None:
    r = started()
    first = r.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5})
    expected = pace_quantity(180.0, 3)
    assert expected == [90.0, 60.0, 30.0]
    assert deltas(first) == [expected[0]]
    world = r.state.world("default", "a")
    assert world.alloc == pytest.approx(0.35)
    assert world.held is not None
    assert world.held.pacing is not None
    assert (world.held.reason, world.held.pacing.step, world.held.pacing.steps) == (
        HoldReason.PLAN_IN_FLIGHT,
        2,
        3,
    )
    assert r.release(2_000) == []  # step 1 not reached: step 2 waits
    r.reach(210.0, first.intents[0]["plan_id"], 2_000)
    [second] = r.release(2_500)
    assert deltas(second) == [expected[1]]
    assert second.intents[0]["plan_id"] != first.intents[0]["plan_id"]
    assert r.release(3_000) == []
    r.reach(270.0, second.intents[0]["plan_id"], 3_000)
    [third] = r.release(3_500)
    assert deltas(third) == [expected[2]]
    world = r.state.world("default", "a")
    assert world.alloc == 0.5
    assert world.held is None
    assert sum(deltas(first) + deltas(second) + deltas(third)) == 180.0
    r.reach(300.0, third.intents[0]["plan_id"], 4_000)
    assert r.release(4_500) == []


def test_a_geometric_ratio_and_a_per_world_rule_are_followed() -> None:
    rules = PacingRules(
        default=PaceRule(max_step_share=10.0),  # this world's rule wins
        worlds={("default", "a"): PaceRule(max_step_share=0.5, steps=2, ratio=0.5)},
    )
    r = started(pacing=rules)
    first = r.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5})
    assert deltas(first) == [pytest.approx(120.0)]  # 2/3 of 180
    r.reach(240.0, first.intents[0]["plan_id"], 2_000)
    [second] = r.release(2_500)
    assert deltas(second) == [pytest.approx(60.0)]
    assert r.state.world("default", "a").held is None


def test_a_small_move_is_planned_whole_with_the_plan_id_it_has_without_pacing() -> None:
    paced, plain = started(), started(pacing=PacingRules())
    a = paced.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.25})
    b = plain.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.25})
    assert published(a.intents) == published(b.intents)
    assert published(a.records) == published(b.records)
    assert paced.state.world("default", "a").held is None


def test_pacing_off_plans_the_whole_move_at_once() -> None:
    r = started(pacing=PacingRules())
    work = r.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5})
    assert deltas(work) == [180.0]


def test_a_new_owner_rebuilt_from_the_changelog_goes_on_with_the_same_step() -> None:
    r = started()
    first = r.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5})
    r.reach(210.0, first.intents[0]["plan_id"], 2_000)
    heir = Recorder(r.log)
    heir.snapshots.apply(snap("s1", 210.0, as_of=2_000, converged_plan_id=first.plan.plan_id))  # type: ignore[union-attr]
    [theirs] = heir.release(2_500)
    [ours] = r.release(2_500)
    assert published(theirs.records) == published(ours.records)
    assert published(theirs.intents) == published(ours.intents)
    assert deltas(theirs) == [60.0]


def test_a_crash_while_a_step_is_published_resumes_that_step_byte_for_byte() -> None:
    r = started()
    first = r.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5})
    r.reach(210.0, first.intents[0]["plan_id"], 2_000)
    [second] = r.engine.released_work(2_500)
    assert second.pending is not None
    r.write(*second.pending)  # the write-ahead is out, then the service dies
    heir = Recorder(r.log)
    resumed = heir.run(RebalanceEngine.resume(heir.state.pending_plan("default")))
    assert published(resumed.records) == published(second.records)
    assert published(resumed.intents) == published(second.intents)
    world = heir.state.world("default", "a")
    assert world.held is not None
    assert world.held.pacing is not None
    assert world.held.pacing.step == 3


def test_a_newer_change_supersedes_the_remaining_steps() -> None:
    r = started()
    first = r.send(
        world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5}, min_trade_notional=5.0
    )
    held = r.send(event_id="e2", occurred_at=1_500, world_alloc_after={"a": 0.3})
    assert held.held_worlds == ["a"]
    world = r.state.world("default", "a")
    assert world.held is not None
    assert world.held.pacing is None
    assert world.held.event_ids == ["e2"]
    assert world.held.min_trade_notional == 5.0  # the paced move's options, the newer's win
    r.reach(210.0, first.intents[0]["plan_id"], 2_000)
    [work] = r.release(2_500)
    assert deltas(work) == [pytest.approx(-30.0)]  # from step 1's 0.35 to 0.3, whole
    world = r.state.world("default", "a")
    assert world.alloc == 0.3
    assert world.held is None


def test_a_strategy_weights_change_mid_pacing_keeps_the_paced_move_end() -> None:
    r = started()
    first = r.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5})
    weights = {
        "type": "strategy_weights_updated",
        "event_id": "e2",
        "occurred_at": 1_500,
        "world_id": "a",
        "strategy_alloc_after_total": {"s1": 0.5},
    }
    from service.messages import allocation_event_adapter

    r.run(r.engine.on_event(allocation_event_adapter.validate_python(weights), 1_500))
    world = r.state.world("default", "a")
    assert world.held is not None
    assert world.held.alloc_after == 0.5  # the paced move's end, not the step's
    assert world.held.final_alloc() == 0.5
    r.reach(210.0, first.intents[0]["plan_id"], 2_000)
    [work] = r.release(2_500)
    assert work.plan is not None
    world = r.state.world("default", "a")
    # the strategy's move is large (weights are of total equity): paced again, to 0.5
    assert world.held is not None
    assert world.held.pacing is not None
    assert world.held.final_alloc() == 0.5
    assert world.held.event_ids == ["e2"]


def test_the_sum_check_counts_a_paced_world_at_its_end() -> None:
    r = started()
    r.send(world_alloc_before={"a": 0.2, "b": 0.0}, world_alloc_after={"a": 0.5})
    from service.errors import InputError

    with pytest.raises(InputError, match=r"add up to 1\.1"):
        r.engine.on_event(event(event_id="e2", world_alloc_after={"b": 0.6}), 2_000)


def test_an_approved_step_keeps_the_steps_after_it() -> None:
    from service.engine import Outcome
    from service.engine.options import ApprovalRules
    from tests.engine.test_commands import command

    r = started(approval=ApprovalRules(portfolios=frozenset({"default"}), ttl_ms=60_000))
    proposed = r.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5})
    assert proposed.outcome is Outcome.PROPOSED
    assert [leg["delta_qty"] for leg in proposed.records[0]["per_world"]["a"]["deltas"]] == [90.0]
    plan_id = proposed.records[0]["plan_id"]
    approved = r.run(r.engine.on_event(command("approve", "c1", plan_id=plan_id), 2_000))
    assert deltas(approved) == [90.0]
    world = r.state.world("default", "a")
    assert world.held is not None
    assert world.held.pacing is not None
    assert world.held.pacing.step == 2
    r.reach(210.0, plan_id, 2_500)
    [second] = r.release(3_000)
    assert second.outcome is Outcome.PROPOSED  # each step is a plan, approved on its own
    assert [d["delta_qty"] for d in second.records[0]["per_world"]["a"]["deltas"]] == [60.0]


def test_a_flatten_command_drops_the_remaining_steps() -> None:
    from tests.engine.test_commands import command

    r = started()
    first = r.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5})
    r.reach(210.0, first.intents[0]["plan_id"], 2_000)
    flat = r.run(r.engine.on_event(command("flatten", "c1", world_id="a"), 2_500))
    assert [i["target_qty"] for i in flat.intents] == [0.0]
    assert r.state.world("default", "a").held is None


@given(
    before=st.floats(0.05, 0.6),
    after=st.floats(0.0, 0.9),
    lots=st.integers(1, 500),
    steps=st.integers(2, 6),
    ratio=st.one_of(st.none(), st.floats(0.2, 1.0)),
)
@example(before=0.1, after=1e-13, lots=77, steps=2, ratio=None)  # flat in one plan only
@settings(max_examples=examples(100), deadline=None)
def test_the_steps_end_where_the_whole_move_ends_each_a_front_loaded_share(
    before: float, after: float, lots: int, steps: int, ratio: float | None
) -> None:
    """Through every step (each reached as planned), the world ends on the target the unpaced
    plan gives (to the planner's 12 decimals: each step scales the last one's quantities),
    and each step moves its front-loaded share of the move."""
    move = {"world_alloc_before": {"a": before}, "world_alloc_after": {"a": after}}
    whole = Recorder(pacing=PacingRules())
    whole.snapshots.apply(snap("s1", float(lots)))
    intents = whole.send(**move).intents
    assume(len(intents) == 1)
    (unpaced,) = intents
    rule = PaceRule(max_step_share=1e-9, steps=steps, ratio=ratio)
    r = Recorder(pacing=PacingRules(default=rule))
    r.snapshots.apply(snap("s1", float(lots)))
    work, now, done = r.send(**move), 2_000, []
    while True:
        done += work.intents
        if r.state.world("default", "a").held is None:
            break
        plan_id = work.plan.plan_id  # type: ignore[union-attr]
        position = work.intents[-1]["target_qty"] if work.intents else done[-1]["target_qty"]
        r.reach(position, plan_id, now)
        (work,) = r.release(now + 1)
        now += 1_000
    assert len({i["plan_id"] for i in done}) == len(done) <= steps
    # the netting closes a target within FLAT_TOLERANCE of the current gross quantity exactly;
    # the unpaced plan measures that against the whole position, the last step against what
    # the steps before left (an allocation of 1e-13 closes in one, not in the other)
    flat = FLAT_TOLERANCE * lots
    assert done[-1]["target_qty"] == pytest.approx(
        unpaced["target_qty"], rel=1e-11, abs=1e-11 + flat
    )
    expected = pace_quantity(unpaced["delta_qty"], steps, ratio=ratio)
    moved = [i["delta_qty"] for i in done]
    assert moved == pytest.approx([d for d in expected if abs(d) > 1e-9], rel=1e-9, abs=1e-9)
    assert r.state.world("default", "a").alloc == after
