"""The service's decisions without Kafka: duplicates, validation against state, holding and
coalescing, release by convergence, timeout and fresh snapshots, and crash recovery."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.engine import EngineOptions, RebalanceEngine, Work, intents_from_record
from service.errors import InputError
from service.messages import PositionSnapshot, allocation_event_adapter
from service.messages.allocation import AllocationEvent
from service.planner import PlannerOptions
from service.state.allocations import AllocationState, PendingPlan
from service.state.snapshots import ApplyResult, SnapshotTable


def event(**fields: Any) -> AllocationEvent:
    base: dict[str, Any] = {
        "type": "world_allocations_changed",
        "event_id": "e1",
        "occurred_at": 1_000,
        "total_equity": 1_000_000.0,
        "world_alloc_after": {"a": 0.2},
    }
    return allocation_event_adapter.validate_python({**base, **fields})


def snap(
    strategy: str, qty: float, *, world: str = "a", as_of: int = 500, **fields: Any
) -> PositionSnapshot:
    return PositionSnapshot.model_validate(
        {
            "world_id": world,
            "strategy_id": strategy,
            "as_of": as_of,
            "positions": [{"venue": "v", "symbol": "X", "qty": qty, "mark": 100.0}],
            **fields,
        }
    )


def published(data: Any) -> Any:
    """What the edges publish of ``data`` (intents carry pre-serialised breakdowns)."""
    return orjson.loads(orjson.dumps(data))


class Harness:
    """An engine whose work is 'carried out' by applying its state writes, as the edges do."""

    def __init__(self, **options: Any) -> None:
        self.state = AllocationState()
        self.snapshots = SnapshotTable()
        self.engine = RebalanceEngine(self.state, self.snapshots, EngineOptions(**options))

    def run(self, work: Work) -> Work:
        if work.pending:
            self.state.apply(*work.pending)
        self.state.apply_all(work.state)
        return work

    def send(self, ev: AllocationEvent, now: int = 1_000) -> Work:
        return self.run(self.engine.on_event(ev, now))


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.snapshots.apply(snap("s1", 0.6))
    harness.snapshots.apply(snap("s2", 0.9))
    return harness


def test_first_event_plans_and_records_the_allocation(h: Harness) -> None:
    work = h.send(event(world_alloc_before={"a": 0.3}))
    assert [i["delta_qty"] for i in work.intents] == [-0.5]
    world = h.state.world("default", "a")
    assert world.alloc == 0.2
    assert world.in_flight is not None
    assert world.in_flight.plan_id == work.intents[0]["plan_id"]
    assert world.in_flight.strategies == ["s1", "s2"]
    assert h.state.pending == {}
    assert h.state.was_applied("default", "e1")


def test_redelivered_event_is_recognised(h: Harness) -> None:
    h.send(event(world_alloc_before={"a": 0.3}))
    again = h.engine.on_event(event(world_alloc_before={"a": 0.3}), 2_000)
    assert again.duplicate
    assert again.intents == []


def test_unknown_before_is_refused(h: Harness) -> None:
    with pytest.raises(InputError, match=r"world_alloc_before\.a: missing"):
        h.engine.on_event(event(), 1_000)


def test_state_before_wins_over_the_event_and_mismatch_is_counted(h: Harness) -> None:
    h.send(event(world_alloc_before={"a": 0.3}))
    h.snapshots.apply(
        snap(
            "s1", 0.4, as_of=600, converged_plan_id=h.state.world("default", "a").in_flight.plan_id
        )
    )  # type: ignore[union-attr]
    h.snapshots.apply(
        snap(
            "s2", 0.6, as_of=600, converged_plan_id=h.state.world("default", "a").in_flight.plan_id
        )
    )  # type: ignore[union-attr]
    work = h.send(
        event(event_id="e2", world_alloc_before={"a": 0.25}, world_alloc_after={"a": 0.1}), 2_000
    )
    assert work.before_mismatches == 1
    # planned from the state's 0.2, not the event's 0.25: 1.0 BTC halves
    assert [i["delta_qty"] for i in work.intents] == [-0.5]


def test_sums_are_checked_against_the_worlds_the_event_leaves_alone(h: Harness) -> None:
    h.send(event(world_alloc_before={"a": 0.3, "b": 0.0}, world_alloc_after={"a": 0.2, "b": 0.7}))
    with pytest.raises(InputError, match=r"add up to 1\.1"):
        h.engine.on_event(event(event_id="e2", world_alloc_after={"a": 0.4}), 2_000)
    h.send(event(event_id="e3", world_alloc_after={"b": 0.5}), 2_000)
    with pytest.raises(InputError, match="above world 'b'"):
        h.engine.on_event(
            allocation_event_adapter.validate_python(
                {
                    "type": "strategy_weights_updated",
                    "event_id": "w1",
                    "occurred_at": 1,
                    "world_id": "b",
                    "strategy_alloc_after_total": {"x": 0.6},
                }
            ),
            3_000,
        )


def test_change_during_flight_is_held_and_coalesced_then_released_by_convergence(
    h: Harness,
) -> None:
    first = h.send(event(world_alloc_before={"a": 0.3}))
    plan_id = first.intents[0]["plan_id"]
    second = h.send(event(event_id="e2", world_alloc_after={"a": 0.15}), 2_000)
    assert second.held_worlds == ["a"]
    assert second.intents == []
    (held_record,) = second.records
    assert held_record["status"] == "held"
    assert "plan_in_flight" in held_record["held_reason"]
    third = h.send(event(event_id="e3", world_alloc_after={"a": 0.1}), 3_000)
    assert third.held_worlds == ["a"]
    held = h.state.world("default", "a").held
    assert held is not None
    assert held.event_ids == ["e2", "e3"]
    assert held.alloc_after == 0.1
    assert h.engine.released_work(4_000) == []
    # the execution node reaches the plan: both strategies report it
    h.snapshots.apply(snap("s1", 0.4, as_of=700, converged_plan_id=plan_id))
    assert h.engine.released_work(4_000) == []
    h.snapshots.apply(snap("s2", 0.6, as_of=700, converged_plan_id=plan_id))
    (released,) = [h.run(w) for w in h.engine.released_work(5_000)]
    # planned from 0.2 (what positions now reflect) to 0.1, once: 1.0 -> 0.5
    assert [i["delta_qty"] for i in released.intents] == [-0.5]
    assert released.records[0]["coalesced_event_ids"] == ["e2", "e3"]
    world = h.state.world("default", "a")
    assert world.alloc == 0.1
    assert world.held is None


def test_held_change_is_released_when_the_settle_timeout_passes() -> None:
    h = Harness(plan_settle_timeout_ms=10_000)
    h.snapshots.apply(snap("s1", 1.0))
    h.send(event(world_alloc_before={"a": 0.3}))
    h.send(event(event_id="e2", world_alloc_after={"a": 0.1}), 2_000)
    assert h.engine.released_work(10_999) == []
    (released,) = h.engine.released_work(11_000)
    assert released.records[0]["coalesced_event_ids"] == ["e2"]


def test_stale_snapshots_hold_until_fresh_ones_arrive() -> None:
    fresh = Harness(max_snapshot_age_ms=5_000)
    fresh.snapshots.apply(snap("s1", 1.0, as_of=1_000))
    assert fresh.send(event(world_alloc_before={"a": 0.3}), 6_000).held_worlds == []
    h2 = Harness(max_snapshot_age_ms=5_000)
    h2.snapshots.apply(snap("s1", 1.0, as_of=1_000))
    work = h2.send(event(world_alloc_before={"a": 0.3}), 10_000)
    assert work.held_worlds == ["a"]
    assert "stale_snapshots" in work.records[0]["held_reason"]
    assert h2.engine.released_work(11_000) == []
    assert h2.snapshots.apply(snap("s1", 1.0, as_of=10_500)) is ApplyResult.APPLIED
    (released,) = h2.engine.released_work(11_000)
    assert [i["delta_qty"] for i in released.intents] == pytest.approx([-1 / 3])


def test_resume_republishes_the_pending_plan_byte_for_byte(h: Harness) -> None:
    work = h.engine.on_event(event(world_alloc_before={"a": 0.3}), 1_000)
    assert work.pending is not None
    h.state.apply(*work.pending)  # the write-ahead landed, then the process died
    pending = h.state.pending_plan("default")
    assert isinstance(pending, PendingPlan)
    resumed = RebalanceEngine.resume(pending)
    # compared as published (bytes): the planner's records carry pre-serialised breakdowns
    assert orjson.dumps(resumed.intents) == orjson.dumps(work.intents)
    assert orjson.dumps(resumed.records) == orjson.dumps(work.records)
    assert resumed.state == work.state


def test_intents_rebuilt_from_any_record_match_the_planner() -> None:
    h = Harness(planner=PlannerOptions(lot_size_by_symbol={"X": 0.1}))
    h.snapshots.apply(snap("s1", 3.0))
    h.snapshots.apply(snap("s2", -1.0))
    work = h.send(
        event(
            world_alloc_before={"a": 0.4},
            world_alloc_after={"a": 0.4},
            strategy_alloc_before_total={"a": {"s1": 0.3, "s2": 0.1}},
            strategy_alloc_after_total={"a": {"s1": 0.0, "s2": 0.3}},
        )
    )
    assert [i["leg"] for i in work.intents] == ["close", "open"]
    assert orjson.dumps(intents_from_record(work.records[0])) == orjson.dumps(work.intents)


def test_strategy_weights_update_uses_current_weights_as_before(h: Harness) -> None:
    h.send(
        event(
            world_alloc_before={"a": 0.3},
            world_alloc_after={"a": 0.3},
            strategy_alloc_before_total={"a": {"s1": 0.12, "s2": 0.18}},
            strategy_alloc_after_total={"a": {"s1": 0.12, "s2": 0.18}},
        )
    )
    assert h.state.world("default", "a").in_flight is None  # nothing moved
    work = h.send(
        allocation_event_adapter.validate_python(
            {
                "type": "strategy_weights_updated",
                "event_id": "w1",
                "occurred_at": 2,
                "world_id": "a",
                "strategy_alloc_after_total": {"s1": 0.18, "s2": 0.06},
            }
        ),
        2_000,
    )
    (intent,) = published(work.intents)
    assert intent["delta_qty"] == -0.3
    breakdown = {b["strategy_id"]: b["delta_qty"] for b in intent["strategy_breakdown"]}
    assert breakdown == {"s1": 0.3, "s2": -0.6}
    assert h.state.world("default", "a").strategy_alloc == {"s1": 0.18, "s2": 0.06}
