"""Notifications derived from the engine's work: one per plan or held record and per command,
ids that do not depend on when they were derived, reached once per plan."""

from __future__ import annotations

import orjson
import pytest

from service.engine import Outcome, RebalanceEngine, Work, notices
from service.messages import Notification
from service.state.allocations import PendingPlan
from tests.engine.test_approval import propose, seeded
from tests.engine.test_commands import _seeded, command
from tests.engine.test_engine import Harness, event, snap
from tests.engine.test_policy_engine import T0, policy


def kinds(notes: list[Notification]) -> list[str]:
    return [n.kind for n in notes]


def test_a_plan_notifies_planned_with_its_intents_and_ids_that_repeat() -> None:
    h = Harness()
    h.snapshots.apply(snap("s1", 0.6))
    work = h.engine.on_event(event(world_alloc_before={"a": 0.3}), 1_000)
    (note,) = notices.of_work(work)
    assert (note.kind, note.trigger, note.risk) == ("planned", "allocation", False)
    assert note.plan_id == work.records[0]["plan_id"]
    assert (note.world_ids, note.event_ids, note.intents) == (["a"], ["e1"], 1)
    assert note.text.startswith("[default] plan ")
    assert "planned for world a (allocation change): 1 intent(s)" in note.text
    # the same work derived again (a restart re-plans the event) gives the same bytes
    again = Harness()
    again.snapshots.apply(snap("s1", 0.6))
    replanned = again.engine.on_event(event(world_alloc_before={"a": 0.3}), 1_000)
    assert notices.of_work(replanned)[0].model_dump_json() == note.model_dump_json()


def test_pause_and_resume_notify_the_command_and_held_changes_notify_held() -> None:
    h = _seeded()
    pause = h.run(h.engine.on_event(command("pause", "c1"), 2_000))
    (paused,) = notices.of_work(pause)
    assert (paused.kind, paused.action, paused.outcome) == ("command", "pause", "applied")
    assert paused.requested_by == "alice"
    assert paused.reason == "desk review"
    assert "pause applied on all worlds by alice" in paused.text
    held = h.send(event(event_id="e9", world_alloc_after={"a": 0.1}), now=2_100)
    assert held.outcome is Outcome.HELD
    (note,) = notices.of_work(held)
    assert (note.kind, note.world_ids) == ("held", ["a"])
    assert note.reason == "paused: worlds a"
    resume = h.run(h.engine.on_event(command("resume", "c2"), 2_200))
    assert kinds(notices.of_work(resume)) == ["command"]
    assert notices.of_work(resume)[0].notification_id != paused.notification_id


def test_a_refused_command_notifies_why() -> None:
    h = _seeded()
    work = h.run(h.engine.on_event(command("resume", "c1"), 2_000))
    notes = notices.of_work(work)
    assert kinds(notes) == ["command"]
    assert notes[0].outcome in ("applied", "refused")


def test_flatten_is_risk_driven_and_notifies_its_plan_then_the_command() -> None:
    h = _seeded()
    work = h.run(h.engine.on_event(command("flatten", "c5"), 2_000))
    notes = notices.of_work(work)
    assert kinds(notes) == ["planned", "command"]
    plan, done = notes
    assert (plan.trigger, plan.action, plan.risk) == ("command", "flatten", True)
    assert plan.world_ids == ["a", "b"]
    assert "[default] [risk] plan" in plan.text
    assert (done.action, done.risk) == ("flatten", True)


def test_proposed_approved_rejected_and_expired_are_notified() -> None:
    h = seeded()
    proposed = propose(h)
    (note,) = notices.of_work(proposed)
    assert (note.kind, note.intents) == ("proposed", 0)
    plan_id = note.plan_id
    approve = h.run(h.engine.on_event(command("approve", "c7", plan_id=plan_id), 3_000))
    approved, applied = notices.of_work(approve)
    assert (approved.kind, approved.plan_id, approved.requested_by) == (
        "approved",
        plan_id,
        "alice",
    )
    assert approved.intents > 0
    assert (applied.kind, applied.action) == ("command", "approve")

    h = seeded()
    first = propose(h).records[0]
    reject = command("reject", "c9", plan_id=first["plan_id"], reason="too big a move")
    rejected = notices.of_work(h.run(h.engine.on_event(reject, 3_000)))[0]
    assert (rejected.kind, rejected.reason) == ("rejected", "too big a move")

    h = seeded()
    propose(h)
    (expired_work,) = h.engine.released_work(2_000 + 60_000)
    (expired,) = notices.of_work(h.run(expired_work))
    assert expired.kind == "expired"
    assert expired.reason == "not approved within approval.ttl_ms (60000 ms)"


def test_a_reached_plan_is_notified_once_and_remembered_in_the_world() -> None:
    h = Harness()
    h.snapshots.apply(snap("s1", 0.6))
    work = h.send(event(world_alloc_before={"a": 0.3}))
    plan_id = work.records[0]["plan_id"]
    assert h.engine.reached_work(1_500) == []  # not reached yet
    h.snapshots.apply(snap("s1", 0.4, as_of=1_600, converged_plan_id=plan_id))
    (reached,) = h.engine.reached_work(1_700)
    assert reached.outcome is Outcome.REACHED
    (note,) = notices.of_work(reached)
    assert (note.kind, note.plan_id, note.world_ids) == ("reached", plan_id, ["a"])
    assert note.text == f"[default] plan {plan_id} reached in world a"
    assert h.engine.reached_work(1_800, portfolios=["other"]) == []
    h.run(reached)
    assert h.state.world("default", "a").reached_notified == plan_id
    assert h.engine.reached_work(1_900) == []  # once


def resumed(work: Work) -> Work:
    """The work a restart finishes from the write-ahead ``work`` wrote."""
    assert work.pending is not None
    return RebalanceEngine.resume(PendingPlan.model_validate(orjson.loads(work.pending[1])))


@pytest.mark.parametrize("action", ["flatten", "rebalance"])
def test_a_commanded_plan_resumed_after_a_crash_notifies_the_same(action: str) -> None:
    h = _seeded()
    fields = {"world_id": "a"} if action == "rebalance" else {}
    work = h.engine.on_event(command(action, "c5", **fields), 2_000)
    first = notices.of_work(work)
    assert [n.kind for n in first] == ["planned", "command"]
    assert [n.model_dump() for n in notices.of_work(resumed(work))] == [
        n.model_dump() for n in first
    ]


def test_an_approval_resumed_after_a_crash_notifies_the_same() -> None:
    h = seeded()
    plan_id = propose(h).records[0]["plan_id"]
    work = h.engine.on_event(command("approve", "c7", plan_id=plan_id), 3_000)
    first = notices.of_work(work)
    assert [n.kind for n in first] == ["approved", "command"]
    assert notices.of_work(resumed(work)) == first


def test_an_event_resumed_after_a_crash_notifies_no_older_command() -> None:
    h = _seeded()
    h.run(h.engine.on_event(command("pause", "c1"), 2_000))
    h.run(h.engine.on_event(command("resume", "c2"), 2_100))
    work = h.engine.on_event(event(event_id="e5", world_alloc_after={"a": 0.1}), 2_100)
    assert [n.kind for n in notices.of_work(resumed(work))] == ["planned"]


def test_a_policy_correction_is_risk_driven_and_names_its_policy() -> None:
    h = Harness()
    h.snapshots.apply(snap("s1", 2.0, as_of=T0 - 5))
    h.send(event(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.2}, total_equity=1_000.0))
    h.snapshots.apply(snap("s1", 2.0, as_of=T0, positions=[position(130.0)]))
    (note,) = notices.of_work(h.send(policy(), T0 + 20))
    assert (note.kind, note.trigger, note.risk, note.policy) == ("planned", "policy", True, "keep")
    assert note.event_ids == ["policy:keep:a:t1"]
    assert "[default] [risk] plan" in note.text
    assert "(policy keep): 1 intent(s)" in note.text


def position(mark: float) -> dict[str, object]:
    return {"venue": "v", "symbol": "X", "qty": 2.0, "mark": mark}
