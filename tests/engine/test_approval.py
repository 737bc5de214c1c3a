"""Approval mode decided by the engine: plans proposed without intents, approved as proposed
(the same ids and bytes), expired and proposed again when what they were made from moved,
rejected, timed out, and four-eyes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.engine import EngineOptions, Outcome, RebalanceEngine, Work, intents_from_record
from service.engine.options import ApprovalRules
from service.state.allocations import HoldReason
from tests.engine.test_commands import command, decided
from tests.engine.test_engine import Harness, event, snap

RULES = ApprovalRules(portfolios=frozenset({"default"}), ttl_ms=60_000)


def seeded(rules: ApprovalRules = RULES) -> Harness:
    """Worlds a (s1 holds 0.6 X at 0.3) and b (s1 holds 0.4 X at 0.1), plans reached, with
    approval configured by ``rules`` from then on."""
    harness = Harness()
    for world, qty, before in (("a", 0.6, 0.3), ("b", 0.4, 0.1)):
        harness.snapshots.apply(snap("s1", qty, world=world))
        harness.send(
            event(
                event_id=f"seed-{world}",
                world_alloc_before={world: before},
                world_alloc_after={world: before},
            )
        )
    harness.engine = RebalanceEngine(
        harness.state, harness.snapshots, EngineOptions(approval=rules)
    )
    return harness


@pytest.fixture
def h() -> Harness:
    return seeded()


def as_bytes(data: Any) -> bytes:
    return orjson.dumps(data)


def propose(h: Harness, now: int = 2_000, **fields: Any) -> Work:
    base: dict[str, Any] = {
        "event_id": "e2",
        "occurred_at": now,
        "world_alloc_after": {"a": 0.15},
    }
    work = h.send(event(**{**base, **fields}), now=now)
    assert work.outcome is Outcome.PROPOSED
    return work


def test_a_plan_that_needs_approval_is_proposed_without_intents(h: Harness) -> None:
    work = propose(h)
    (record,) = work.records
    assert record["status"] == "proposed"
    assert record["approval"]["deadline"] == 2_000 + 60_000
    assert record["intent_ids"]  # what approval would publish
    assert not work.has_intents
    ws = h.state.world("default", "a")
    assert ws.proposal == record["plan_id"]
    assert ws.held is not None
    assert ws.held.reason is HoldReason.AWAITING_APPROVAL
    assert ws.alloc == 0.3  # the change is not carried out yet
    assert ("default", record["plan_id"]) in h.state.proposals
    assert h.engine.released_work(3_000) == []  # it waits for the approver, not for a check


def test_approval_publishes_the_intents_exactly_as_proposed(h: Harness) -> None:
    proposal = propose(h).records[0]
    # the plan the same event gives without approval, at the same moment
    plain = seeded(ApprovalRules())
    direct = plain.send(
        event(event_id="e2", occurred_at=2_000, world_alloc_after={"a": 0.15}), 2_000
    )
    assert direct.outcome is Outcome.PLANNED
    approve = command("approve", "c9", plan_id=proposal["plan_id"], requested_by="bob")
    work = h.run(h.engine.on_event(approve, 5_000))
    assert work.outcome is Outcome.COMMANDED
    (record,) = work.records
    assert (record["status"], record["approval"]["decided_by"]) == ("approved", "bob")
    assert record["intent_ids"] == proposal["intent_ids"] == direct.records[0]["intent_ids"]
    assert as_bytes(work.intents) == as_bytes(intents_from_record(proposal))
    assert as_bytes(work.intents) == as_bytes(direct.intents)
    ws = h.state.world("default", "a")
    assert (ws.alloc, ws.held, ws.proposal) == (0.15, None, None)
    assert ws.in_flight is not None
    assert ws.in_flight.plan_id == proposal["plan_id"]
    assert ws.in_flight.planned_at == 5_000  # the settle timeout counts from publication
    assert h.state.proposals == {}
    assert decided(h, "c9").outcome == "applied"
    # approved once: a second approval finds nothing to approve
    h.run(h.engine.on_event(command("approve", "c10", plan_id=proposal["plan_id"]), 5_100))
    assert decided(h, "c10").outcome == "refused"
    assert "awaits approval" in decided(h, "c10").detail


def test_an_approval_after_the_positions_moved_expires_and_proposes_again(h: Harness) -> None:
    first = propose(h).records[0]
    h.snapshots.apply(snap("s1", 0.5, as_of=2_500))  # world a's positions moved
    approve = command("approve", "c9", plan_id=first["plan_id"])
    work = h.run(h.engine.on_event(approve, 3_000))
    assert not work.has_intents
    (record,) = work.records
    assert record["status"] == "expired"
    assert (
        record["approval"]["reason"]
        == "world a's positions, trading mode or the portfolio's equity moved"
    )
    assert decided(h, "c9").outcome == "refused"
    assert decided(h, "c9").detail.endswith("its change is planned again")
    # the next release check plans the change again, on the positions of now, and proposes it
    (again,) = h.engine.released_work(3_500)
    h.run(again)
    assert again.outcome is Outcome.PROPOSED
    second = again.records[0]
    assert second["plan_id"] != first["plan_id"]
    assert second["coalesced_event_ids"] == ["e2"]
    # 0.3 -> 0.15 halves what a holds now (0.5)
    assert [d["delta_qty"] for d in second["per_world"]["a"]["deltas"]] == [-0.25]


def test_a_change_that_joins_a_proposal_makes_it_expire_on_approval(h: Harness) -> None:
    first = propose(h).records[0]
    joined = h.send(event(event_id="e3", occurred_at=2_100, world_alloc_after={"a": 0.1}), 2_100)
    assert joined.outcome is Outcome.HELD
    assert joined.records[0]["held_reason"] == "awaiting_approval: worlds a"
    h.run(h.engine.on_event(command("approve", "c9", plan_id=first["plan_id"]), 3_000))
    assert "world a's allocations changed" in decided(h, "c9").detail
    (again,) = h.engine.released_work(3_500)
    h.run(again)
    assert again.records[0]["coalesced_event_ids"] == ["e2", "e3"]
    assert again.records[0]["per_world"]["a"]["alloc_after"] == 0.1


def test_reject_drops_the_change_with_the_reason(h: Harness) -> None:
    first = propose(h).records[0]
    reject = command("reject", "c9", plan_id=first["plan_id"], reason="too big a move")
    work = h.run(h.engine.on_event(reject, 3_000))
    (record,) = work.records
    assert (record["status"], record["approval"]["reason"]) == ("rejected", "too big a move")
    assert not work.has_intents
    ws = h.state.world("default", "a")
    assert (ws.alloc, ws.held, ws.proposal) == (0.3, None, None)
    assert h.engine.released_work(4_000) == []


def test_a_proposal_not_approved_in_time_expires_and_its_change_is_dropped(h: Harness) -> None:
    first = propose(h).records[0]
    assert h.engine.released_work(2_000 + 59_999) == []
    (expired,) = h.engine.released_work(2_000 + 60_000)
    h.run(expired)
    assert expired.outcome is Outcome.EXPIRED
    (record,) = expired.records
    assert (record["plan_id"], record["status"]) == (first["plan_id"], "expired")
    assert record["approval"]["reason"] == "not approved within approval.ttl_ms (60000 ms)"
    ws = h.state.world("default", "a")
    assert (ws.alloc, ws.held, ws.proposal) == (0.3, None, None)
    assert h.engine.released_work(70_000) == []


def test_four_eyes_refuses_the_requester_and_takes_another_approver() -> None:
    h = seeded(ApprovalRules(portfolios=frozenset({"default"}), four_eyes=frozenset({"default"})))
    # world a drifted: a rebalance asked by alice is proposed, as alice's
    h.snapshots.apply(snap("s1", 4_000.0, as_of=1_500))
    work = h.run(h.engine.on_event(command("rebalance", world_id="a"), 2_000))
    (record,) = work.records
    assert (record["status"], record["approval"]["requested_by"]) == ("proposed", "alice")
    plan_id = record["plan_id"]
    h.run(h.engine.on_event(command("approve", "c2", plan_id=plan_id), 2_100))
    assert decided(h, "c2").outcome == "refused"
    assert decided(h, "c2").detail.startswith("approve: four-eyes: alice asked for plan")
    work = h.run(
        h.engine.on_event(command("approve", "c3", plan_id=plan_id, requested_by="bob"), 2_200)
    )
    assert decided(h, "c3").outcome == "applied"
    assert work.has_intents


def test_without_four_eyes_the_requester_may_approve(h: Harness) -> None:
    h.snapshots.apply(snap("s1", 4_000.0, as_of=1_500))
    record = h.run(h.engine.on_event(command("rebalance", world_id="a"), 2_000)).records[0]
    h.run(h.engine.on_event(command("approve", "c2", plan_id=record["plan_id"]), 2_100))
    assert decided(h, "c2").outcome == "applied"


def test_a_paused_world_is_not_approved_until_resumed(h: Harness) -> None:
    first = propose(h).records[0]
    h.run(h.engine.on_event(command("pause", "c2"), 2_100))
    h.run(h.engine.on_event(command("approve", "c3", plan_id=first["plan_id"]), 2_200))
    assert decided(h, "c3").detail == (
        f"approve: world a is paused; resume it before approving plan {first['plan_id']}"
    )
    assert ("default", first["plan_id"]) in h.state.proposals


def test_flatten_withdraws_the_proposals_in_its_scope(h: Harness) -> None:
    first = propose(h).records[0]
    work = h.run(h.engine.on_event(command("flatten", "c2"), 3_000))
    statuses = [(r["plan_id"] == first["plan_id"], r["status"]) for r in work.records]
    assert statuses == [(True, "expired"), (False, "planned")]  # flatten needs no approval
    assert work.has_intents
    assert h.state.proposals == {}
    assert h.state.world("default", "a").proposal is None
    assert decided(h, "c2").detail.endswith(f"proposals {first['plan_id']} withdrawn")


def test_commands_switch_approval_per_world_and_portfolio() -> None:
    h = seeded(ApprovalRules())
    h.run(h.engine.on_event(command("require-approval", world_id="b"), 1_500))
    assert decided(h, "c1").detail == "plans of world b of default need approval"
    planned = h.send(event(event_id="e2", occurred_at=2_000, world_alloc_after={"a": 0.2}), 2_000)
    assert planned.outcome is Outcome.PLANNED
    proposed = h.send(event(event_id="e3", occurred_at=2_000, world_alloc_after={"b": 0.2}), 2_000)
    assert proposed.outcome is Outcome.PROPOSED
    h.run(h.engine.on_event(command("waive-approval", "c2", world_id="b"), 2_500))
    h.run(h.engine.on_event(command("reject", "c3", plan_id=proposed.records[0]["plan_id"]), 2_600))
    again = h.send(event(event_id="e4", occurred_at=3_000, world_alloc_after={"b": 0.2}), 3_000)
    assert again.outcome is Outcome.PLANNED


def test_approve_and_reject_name_a_plan() -> None:
    with pytest.raises(ValueError, match="plan_id: approve names the proposed plan"):
        command("approve")
    with pytest.raises(ValueError, match="only approve and reject name a plan"):
        command("pause", plan_id="p1")


def test_a_crash_while_proposing_or_approving_finishes_as_it_was(h: Harness) -> None:
    work = h.engine.on_event(
        event(event_id="e2", occurred_at=2_000, world_alloc_after={"a": 0.15}), 2_000
    )
    assert work.pending is not None
    h.state.apply(*work.pending)  # the write-ahead landed, then the process died
    resumed = h.run(RebalanceEngine.resume(h.state.pending_plan("default")))
    assert not resumed.has_intents  # a proposal resumed is still only a proposal
    assert as_bytes(resumed.records) == as_bytes(work.records)
    plan_id = work.records[0]["plan_id"]
    assert ("default", plan_id) in h.state.proposals
    approve = h.engine.on_event(command("approve", "c9", plan_id=plan_id), 3_000)
    assert approve.pending is not None
    h.state.apply(*approve.pending)
    finished = h.run(RebalanceEngine.resume(h.state.pending_plan("default")))
    assert as_bytes(finished.intents) == as_bytes(approve.intents)
    assert h.state.proposals == {}
    assert h.state.world("default", "a").alloc == 0.15


def test_a_world_put_in_reduce_only_after_its_proposal_is_proposed_again(h: Harness) -> None:
    first = propose(h, world_alloc_after={"a": 0.45}).records[0]  # a growth
    h.run(h.engine.on_event(command("reduce-only", "c2", world_id="a"), 2_100))
    h.run(h.engine.on_event(command("approve", "c3", plan_id=first["plan_id"]), 2_200))
    assert decided(h, "c3").outcome == "refused"
    (again,) = h.engine.released_work(2_500)
    h.run(again)
    (record,) = again.records
    # reduce-only holds the growth: nothing to trade, nothing to approve
    assert (record["status"], record["intent_ids"]) == ("planned", [])
    assert [d["reason"] for d in record["per_world"]["a"]["dropped"]] == ["held"]
    assert h.state.world("default", "a").proposal is None
