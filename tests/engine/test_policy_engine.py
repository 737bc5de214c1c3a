"""Policy events through the engine, without Kafka: what a drift correction plans, when it is
held, dropped or refused, and that its records say which policy caused them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.engine import RebalanceEngine, Work
from service.errors import InputError
from service.messages import PlanRecord, PolicyRebalance, PositionSnapshot, topic_event_adapter
from service.planner import PlannerOptions
from tests.engine.test_engine import Harness, event

T0 = 1_700_000_000_000


def snap(
    strategy: str,
    positions: list[tuple[str, float, float | None]],
    *,
    as_of: int = T0,
    world: str = "a",
    **fields: Any,
) -> PositionSnapshot:
    return PositionSnapshot.model_validate(
        {
            "world_id": world,
            "strategy_id": strategy,
            "as_of": as_of,
            "positions": [
                {"venue": "v", "symbol": s, "qty": q, "mark": m} for s, q, m in positions
            ],
            **fields,
        }
    )


def policy(
    event_id: str = "policy:keep:a:t1", occurred_at: int = T0 + 10, **fields: Any
) -> PolicyRebalance:
    data: dict[str, Any] = {
        "type": "policy_rebalance",
        "event_id": event_id,
        "occurred_at": occurred_at,
        "world_id": "a",
        "policy": "keep",
        "trigger": "band",
        "target": {"kind": "allocation"},
        **fields,
    }
    parsed = topic_event_adapter.validate_python(data)
    assert isinstance(parsed, PolicyRebalance)
    return parsed


def published(work: Work) -> list[dict[str, Any]]:
    return [orjson.loads(orjson.dumps(i)) for i in work.intents]


@pytest.fixture
def h() -> Harness:
    """World a at 0.2 of 1,000 equity, holding 2 X at 100 (exactly on target) in two
    strategies; lots of 0.001. The rest is world ``reserve``'s 800 in cash: the measured
    equity is 1,000 at a mark of 100."""
    harness = Harness(planner=PlannerOptions(lot_size_by_symbol={"X": 0.001}))
    harness.snapshots.apply(snap("s1", [("X", 1.5, 100.0)], as_of=T0 - 5))
    harness.snapshots.apply(snap("s2", [("X", 0.5, 100.0)], as_of=T0 - 5))
    harness.snapshots.apply(snap("cash", [], as_of=T0 - 5, world="reserve", cash=800.0))
    allocs = {"a": 0.2, "reserve": 0.8}
    work = harness.send(
        event(world_alloc_before=allocs, world_alloc_after=allocs, total_equity=1_000.0),
        T0 - 1,
    )
    assert work.intents == []
    return harness


def drift_to(h: Harness, mark: float, as_of: int = T0, **fields: Any) -> None:
    h.snapshots.apply(snap("s1", [("X", 1.5, mark)], as_of=as_of, **fields))
    h.snapshots.apply(snap("s2", [("X", 0.5, mark)], as_of=as_of, **fields))


def test_allocation_target_scales_the_world_back_to_its_allocation(h: Harness) -> None:
    drift_to(h, 130.0)  # 2 x 130 = 260 of a measured 1,060 (800 in cash): 0.2453 against 0.2
    weight = 260 / 1_060
    work = h.send(policy(), T0 + 20)
    (intent,) = published(work)
    # every position scales by 0.2 / 0.2453: 2 -> 1.6307..., rounded toward zero to lots
    assert intent["delta_qty"] == -0.369
    assert intent["reduce_only"] is True
    assert intent["event_id"] == "policy:keep:a:t1"
    breakdown = {b["strategy_id"]: b["delta_qty"] for b in intent["strategy_breakdown"]}
    shrink = (weight - 0.2) / weight
    assert breakdown == pytest.approx({"s1": -1.5 * shrink, "s2": -0.5 * shrink})
    (record,) = work.records
    world = record["per_world"]["a"]
    assert world["alloc_before"] == pytest.approx(weight)  # measured, not the state's 0.2
    assert world["alloc_after"] == 0.2
    assert record["total_equity"] == 1_060.0  # the measured equity, not the event's 1,000
    assert record["policy"]["policy"] == "keep"
    assert record["coalesced_event_ids"] == ["policy:keep:a:t1"]
    PlanRecord.model_validate_json(orjson.dumps(record))
    # the allocations stay: the positions moved, not the targets
    state = h.state.world("default", "a")
    assert state.alloc == 0.2
    assert state.strategy_alloc == pytest.approx({"s1": 0.15, "s2": 0.05})
    assert state.in_flight is not None
    assert state.in_flight.plan_id == record["plan_id"]
    assert state.in_flight.strategies == ["s1", "s2"]
    assert state.policy_triggers == [T0 + 10]
    assert h.state.was_applied("default", "policy:keep:a:t1")


def test_net_measure_and_a_world_growing_back(h: Harness) -> None:
    drift_to(h, 80.0)  # 160 of a measured 960: 1/6, scaled up by 0.2 x 6 = 1.2
    work = h.send(policy(target={"kind": "allocation", "measure": "net"}), T0 + 20)
    (intent,) = published(work)
    assert intent["delta_qty"] == 0.4
    assert intent["reduce_only"] is False


def test_the_same_event_again_is_a_duplicate(h: Harness) -> None:
    drift_to(h, 130.0)
    h.send(policy(), T0 + 20)
    assert h.engine.on_event(policy(), T0 + 30).duplicate


def test_an_event_measured_before_the_worlds_latest_plan_is_dropped(h: Harness) -> None:
    drift_to(h, 130.0)
    first = h.send(policy(), T0 + 20)
    plan_id = first.records[0]["plan_id"]
    drift_to(h, 100.0, as_of=T0 + 30, converged_plan_id=plan_id)
    late = h.send(policy("policy:keep:a:t0", occurred_at=T0 + 15), T0 + 40)
    assert late.superseded
    assert late.intents == []
    assert late.records == []
    assert h.state.was_applied("default", "policy:keep:a:t0")
    assert h.state.world("default", "a").policy_triggers == [T0 + 10]


def test_held_while_a_plan_is_in_flight_then_planned_as_measured_on_release(
    h: Harness,
) -> None:
    h.send(event(event_id="e2", world_alloc_after={"a": 0.1}, total_equity=1_000.0), T0)
    in_flight = h.state.world("default", "a").in_flight
    assert in_flight is not None
    drift_to(h, 150.0, as_of=T0 + 5)  # 2 X at 150 = 0.3: the plan (to 1 X) is not reached
    work = h.send(policy(occurred_at=T0 + 10), T0 + 20)
    assert work.held_worlds == ["a"]
    (held,) = work.records
    assert held["status"] == "held"
    assert "plan_in_flight" in held["held_reason"]
    assert held["policy"]["event_id"] == "policy:keep:a:t1"
    PlanRecord.model_validate_json(orjson.dumps(held))
    assert h.engine.released_work(T0 + 30) == []
    # the execution node reaches the plan: 1 X, and the price has gone on to 120
    h.snapshots.apply(
        snap("s1", [("X", 0.75, 120.0)], as_of=T0 + 40, converged_plan_id=in_flight.plan_id)
    )
    h.snapshots.apply(
        snap("s2", [("X", 0.25, 120.0)], as_of=T0 + 40, converged_plan_id=in_flight.plan_id)
    )
    (released,) = [h.run(w) for w in h.engine.released_work(T0 + 50)]
    # measured now: 1 X at 120 of a measured 920 (800 in cash) = 0.1304 against 0.1
    (record,) = released.records
    assert record["per_world"]["a"]["alloc_before"] == pytest.approx(120 / 920)
    assert record["policy"]["policy"] == "keep"
    assert [i["delta_qty"] for i in published(released)] == [-0.233]  # to 0.766 X: 92 of 920
    world = h.state.world("default", "a")
    assert world.held is None
    assert world.alloc == 0.1


def test_an_external_change_replaces_a_held_policy_correction(h: Harness) -> None:
    h.send(event(event_id="e2", world_alloc_after={"a": 0.1}, total_equity=1_000.0), T0)
    drift_to(h, 150.0, as_of=T0 + 5)
    h.send(policy(occurred_at=T0 + 10), T0 + 20)
    h.send(event(event_id="e3", world_alloc_after={"a": 0.15}, total_equity=1_000.0), T0 + 30)
    held = h.state.world("default", "a").held
    assert held is not None
    assert held.policy is None
    assert held.alloc_after == 0.15
    assert held.event_ids == ["policy:keep:a:t1", "e3"]


def test_target_weights_are_planned_by_the_target_weight_planner(h: Harness) -> None:
    # the world holds 2 X at 100 and reports Y's price with a zero position
    h.snapshots.apply(snap("s1", [("X", 1.5, 100.0), ("Y", 0.0, 50.0)], as_of=T0))
    target = {
        "kind": "weights",
        "weights": [
            {"venue": "v", "symbol": "X", "weight": 0.5},
            {"venue": "v", "symbol": "Y", "weight": 0.5},
        ],
        "strategy_id": "s1",
    }
    work = h.send(policy(target=target), T0 + 20)
    # base: 0.2 x 1,000 = 200; X to 100 / 100 = 1 (from 2), Y to 100 / 50 = 2 (from 0)
    deltas = {i["symbol"]: i["delta_qty"] for i in published(work)}
    assert deltas == {"X": -1.0, "Y": 2.0}
    (record,) = work.records
    assert record["options"]["planner"] == "target_weight"
    assert record["policy"]["target"]["kind"] == "weights"
    world = h.state.world("default", "a")
    assert world.alloc == 0.2
    assert world.in_flight is not None
    assert world.in_flight.strategies == ["s1", "s2"]


@pytest.mark.parametrize(
    ("setup", "fields", "expected"),
    [
        ("unknown world", {"world_id": "zz"}, "world_id: the service has no allocation"),
        ("no mark", {}, r"world 'a': no mark for v:X"),
        (
            "unpriced target",
            {
                "target": {
                    "kind": "weights",
                    "weights": [{"venue": "v", "symbol": "Z", "weight": 0.5}],
                }
            },
            "no mark for target asset",
        ),
    ],
)
def test_events_the_state_cannot_carry_are_refused(
    h: Harness, setup: str, fields: dict[str, Any], expected: str
) -> None:
    if setup == "no mark":  # a key's mark is its latest snapshot's that has one: none has
        h.snapshots.apply(snap("s1", [("X", 1.5, None)], as_of=T0))
        h.snapshots.apply(snap("s2", [("X", 0.5, None)], as_of=T0))
    with pytest.raises(InputError, match=expected):
        h.engine.on_event(policy(**fields), T0 + 20)


def test_a_held_correction_that_cannot_be_planned_on_release_is_dropped(h: Harness) -> None:
    h.send(event(event_id="e2", world_alloc_after={"a": 0.1}, total_equity=1_000.0), T0)
    h.send(policy(occurred_at=T0 + 10), T0 + 20)
    h.snapshots.apply(snap("s1", [("X", 0.75, None)], as_of=T0 + 40))  # no mark any more
    h.snapshots.apply(snap("s2", [("X", 0.25, None)], as_of=T0 + 40))
    (work,) = h.engine.released_work(T0 + 700_000)  # the settle timeout has passed
    assert work.dropped is not None
    assert "no mark for v:X" in work.dropped
    assert work.intents == []
    assert work.records == []
    h.run(work)
    assert h.state.world("default", "a").held is None


def test_a_policy_plan_left_half_published_is_resumed_or_replanned_with_the_same_ids(
    h: Harness,
) -> None:
    drift_to(h, 130.0)
    work = h.engine.on_event(policy(), T0 + 20)
    assert work.pending is not None
    h.state.apply(*work.pending)  # the write-ahead landed, then the process died
    resumed = RebalanceEngine.resume(h.state.pending_plan("default"))
    assert orjson.dumps(resumed.records) == orjson.dumps(work.records)
    assert orjson.dumps(resumed.intents) == orjson.dumps(work.intents)
    assert resumed.records[0]["policy"]["policy"] == "keep"
    # had it died before the write-ahead, the event is planned again: same plan, same intents
    again = h.engine.on_event(policy(), T0 + 99)
    assert again.records[0]["plan_id"] == work.records[0]["plan_id"]
    assert [i["intent_id"] for i in again.intents] == [i["intent_id"] for i in work.intents]
