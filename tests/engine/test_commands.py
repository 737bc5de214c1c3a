"""Operators' commands decided by the engine: trading states that hold changes, resume that
lets them go against the positions of that moment, results kept by id."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.engine import Outcome
from service.engine.effects import Trigger
from service.messages.command import OperatorCommand
from service.planner import PlannerOptions, PositionTable, WorldChange
from service.state.allocations import COMMANDS_KEPT
from tests.engine.test_engine import Harness, event, snap


def command(action: str, command_id: str = "c1", **fields: Any) -> OperatorCommand:
    base: dict[str, Any] = {
        "type": "operator_command",
        "command_id": command_id,
        "portfolio_id": "default",
        "action": action,
        "reason": "desk review",
        "requested_by": "alice",
        "requested_at": 1_500,
    }
    return OperatorCommand.model_validate({**base, **fields})


@pytest.fixture
def h() -> Harness:
    return _seeded()


RESERVE = 999_880.0
"""World b's cash: with a's 0.4 X and b's 0.8 X at 100 once seeded, the portfolio's measured
equity is the seeding events' 1,000,000."""


def _seeded() -> Harness:
    harness = Harness()
    harness.snapshots.apply(snap("s1", 0.6))
    harness.snapshots.apply(snap("s1", 0.4, world="b", cash=RESERVE))
    # both worlds known to the state, their first plans reached
    for world, before, after in (("a", 0.3, 0.2), ("b", 0.1, 0.2)):
        work = harness.send(
            event(
                event_id=f"seed-{world}",
                world_alloc_before={world: before},
                world_alloc_after={world: after},
            )
        )
        assert work.outcome is Outcome.PLANNED
        plan_id = work.records[-1]["plan_id"]
        harness.snapshots.apply(
            snap(
                "s1",
                0.6 * after / before if world == "a" else 0.4 * after / before,
                world=world,
                as_of=900,
                converged_plan_id=plan_id,
                cash=RESERVE if world == "b" else None,
            )
        )
    return harness


def decided(h: Harness, command_id: str) -> Any:
    (found,) = [c for c in h.state.portfolio("default").commands if c.command_id == command_id]
    return found


def test_a_paused_portfolio_holds_every_change_until_resumed(h: Harness) -> None:
    work = h.run(h.engine.on_event(command("pause"), 2_000))
    assert work.outcome is Outcome.COMMANDED
    assert work.records == []
    assert not work.has_intents
    trading = h.state.portfolio("default").trading
    assert (trading.mode, trading.by, trading.reason, trading.since) == (
        "paused",
        "alice",
        "desk review",
        2_000,
    )
    assert decided(h, "c1").outcome == "applied"
    assert decided(h, "c1").detail == "portfolio default: active -> paused"
    held = h.send(event(event_id="e2", world_alloc_after={"a": 0.1}), now=3_000)
    assert held.outcome is Outcome.HELD
    assert held.records[0]["held_reason"] == "paused: worlds a"
    assert h.engine.released_work(4_000) == []
    # the positions move while paused; resume plans once, from the positions of that moment
    flight = h.state.world("default", "a").in_flight
    assert flight is not None
    h.snapshots.apply(snap("s1", 0.8, as_of=4_500, converged_plan_id=flight.plan_id))
    h.run(h.engine.on_event(command("resume", "c2"), 5_000))
    assert h.state.portfolio("default").trading.mode == "active"
    (released,) = h.engine.released_work(6_000)
    assert released.outcome is Outcome.PLANNED
    assert released.records[0]["coalesced_event_ids"] == ["e2"]
    # world a: 0.2 -> 0.1 halves what it holds now (0.8), not what it held when paused
    assert [i["delta_qty"] for i in released.intents] == [-0.4]


def test_a_halted_world_holds_its_changes_and_leaves_the_others(h: Harness) -> None:
    h.run(h.engine.on_event(command("halt", world_id="a"), 2_000))
    assert h.state.world("default", "a").trading.mode == "halted"
    assert h.state.portfolio("default").trading.mode == "active"
    assert decided(h, "c1").detail == "world a of default: active -> halted"
    work = h.send(event(event_id="e2", world_alloc_after={"a": 0.1, "b": 0.3}), now=3_000)
    assert work.outcome is Outcome.PLANNED
    assert work.held_worlds == ["a"]
    assert work.records[0]["held_reason"] == "halted: worlds a"
    assert work.planned_worlds == ["b"]


def test_the_stricter_of_portfolio_and_world_applies(h: Harness) -> None:
    h.run(h.engine.on_event(command("pause", world_id="a"), 2_000))
    h.run(h.engine.on_event(command("halt", "c2"), 2_100))
    world = h.state.world("default", "a")
    assert h.state.trading_mode(world) == "halted"
    h.run(h.engine.on_event(command("resume", "c3"), 2_200))
    assert h.state.trading_mode(h.state.world("default", "a")) == "paused"
    assert h.state.trading_mode(h.state.world("default", "b")) == "active"


def test_a_command_read_twice_is_applied_once(h: Harness) -> None:
    h.run(h.engine.on_event(command("pause"), 2_000))
    h.run(h.engine.on_event(command("resume", "c2"), 2_100))
    again = h.engine.on_event(command("pause"), 2_200)
    assert again.outcome is Outcome.DUPLICATE
    assert h.state.portfolio("default").trading.mode == "active"


@pytest.mark.parametrize(
    ("cmd", "detail"),
    [
        (command("pause", world_id="zz"), "portfolio default has no world 'zz'"),
        (command("reduce-only", world_id="zz"), "portfolio default has no world 'zz'"),
    ],
)
def test_a_command_that_cannot_apply_is_refused_with_why(
    h: Harness, cmd: OperatorCommand, detail: str
) -> None:
    work = h.run(h.engine.on_event(cmd, 2_000))
    assert work.outcome is Outcome.COMMANDED
    assert (decided(h, "c1").outcome, decided(h, "c1").detail) == ("refused", detail)
    assert h.state.portfolio("default").trading.mode == "active"


def test_results_are_kept_for_the_latest_commands(h: Harness) -> None:
    for i in range(COMMANDS_KEPT + 5):
        h.run(h.engine.on_event(command("pause" if i % 2 else "resume", f"c{i}"), 2_000 + i))
    kept = [c.command_id for c in h.state.portfolio("default").commands]
    assert kept == [f"c{i}" for i in range(5, COMMANDS_KEPT + 5)]


def test_flatten_closes_every_key_at_once_and_halts_until_resumed(h: Harness) -> None:
    # world a holds a change (its plan in flight): flatten does not wait for it
    h.snapshots.apply(snap("s1", 0.4, as_of=950))  # a's plan no longer reached
    held = h.send(event(event_id="e2", world_alloc_after={"a": 0.1}), now=2_000)
    assert held.outcome is Outcome.HELD
    work = h.run(h.engine.on_event(command("flatten"), 3_000))
    assert work.outcome is Outcome.COMMANDED
    (record,) = work.records
    assert (record["event_id"], sorted(record["per_world"])) == ("c1", ["a", "b"])
    assert record["command"] == {
        "command_id": "c1",
        "action": "flatten",
        "world_id": None,
        "requested_by": "alice",
        "reason": "desk review",
        "requested_at": 1_500,
    }
    intents = work.intents
    assert sorted((i["world_id"], i["target_qty"]) for i in intents) == [("a", 0.0), ("b", 0.0)]
    assert all(i["reduce_only"] and i["leg"] == "close" for i in intents)
    portfolio = h.state.portfolio("default")
    assert (portfolio.trading.mode, portfolio.trading.latched_by_flatten) == ("halted", True)
    assert decided(h, "c1").detail == "flatten: worlds a, b of default to 0; halted until resume"
    for world in ("a", "b"):
        ws = h.state.world("default", world)
        assert (ws.alloc, ws.held) == (0.0, None)
    later = h.send(event(event_id="e3", world_alloc_after={"a": 0.1}), now=4_000)
    assert later.records[0]["held_reason"].startswith("halted")
    h.run(h.engine.on_event(command("resume", "c2"), 5_000))
    assert h.state.portfolio("default").trading.mode == "active"


def test_flatten_of_one_world_halts_that_world(h: Harness) -> None:
    work = h.run(h.engine.on_event(command("flatten", world_id="b"), 3_000))
    assert [i["world_id"] for i in work.intents] == ["b"]
    assert h.state.world("default", "b").trading.mode == "halted"
    assert h.state.world("default", "a").trading.mode == "active"
    again = h.run(h.engine.on_event(command("flatten", "c2", world_id="b"), 3_100))
    assert again.records == []
    assert decided(h, "c2").detail == "flatten: no world of default in scope has an allocation"


def test_rebalance_brings_a_drifted_world_back_now(h: Harness) -> None:
    flight = h.state.world("default", "a").in_flight
    assert flight is not None
    # world a drifted: 4,000 at 100 is 400,000 of the measured 1,399,960 (b holds 80 and
    # 999,880 in cash): 0.2857, against its 0.2; back to 0.2 x 1,399,960 / 100 = 2,799.92 X
    h.snapshots.apply(snap("s1", 4_000.0, as_of=2_000, converged_plan_id=flight.plan_id))
    work = h.run(h.engine.on_event(command("rebalance", world_id="a"), 3_000))
    (record,) = work.records
    assert record["policy"]["trigger"] == "command"
    assert record["policy"]["reason"] == "rebalance by alice: desk review"
    assert (record["command"]["command_id"], record["command"]["requested_by"]) == ("c1", "alice")
    assert [i["delta_qty"] for i in work.intents] == [-1_200.08]
    assert decided(h, "c1").detail == "rebalance: world a of default planned"


@pytest.mark.parametrize(
    ("setup", "cmd", "why"),
    [
        (None, command("rebalance"), "rebalance: name a world"),
        (
            command("pause", "c0"),
            command("rebalance", world_id="a"),
            "rebalance: world a waits (paused); not planned",
        ),
    ],
)
def test_rebalance_is_refused_with_why(
    h: Harness, setup: OperatorCommand | None, cmd: OperatorCommand, why: str
) -> None:
    if setup is not None:
        h.run(h.engine.on_event(setup, 2_000))
    work = h.run(h.engine.on_event(cmd, 3_000))
    assert work.records == []
    assert decided(h, "c1").outcome == "refused"
    assert decided(h, "c1").detail.startswith(why)


# -- reduce-only: changes are planned, only what shrinks exposure is published ---------------

E2 = {"event_id": "e2", "world_alloc_after": {"a": 0.3, "b": 0.1}}
"""World a grows (0.4 -> 0.6 of X), world b shrinks (0.8 -> 0.4)."""


def test_reduce_only_plans_the_change_and_publishes_only_what_shrinks(h: Harness) -> None:
    work = h.run(h.engine.on_event(command("reduce-only", world_id="a"), 2_000))
    assert work.outcome is Outcome.COMMANDED
    assert not work.has_intents
    assert decided(h, "c1").outcome == "applied"
    assert decided(h, "c1").detail == "world a of default: active -> reduce-only"
    trading = h.state.world("default", "a").trading
    assert (trading.mode, trading.by, trading.reason) == ("reduce-only", "alice", "desk review")
    assert h.state.trading_mode(h.state.world("default", "a")) == "reduce-only"
    work = h.send(event(**E2), now=3_000)
    assert work.outcome is Outcome.PLANNED  # not held: planned, the growth held in the plan
    assert work.held_worlds == []
    (record,) = work.records
    assert (record["status"], record["held_reason"]) == ("planned", "reduce_only: worlds a")
    assert [d["reason"] for d in record["per_world"]["a"]["dropped"]] == ["held"]
    assert record["per_world"]["a"]["deltas"] == []
    assert [(i["world_id"], i["delta_qty"], i["reduce_only"]) for i in work.intents] == [
        ("b", -0.4, True)
    ]
    a, b = h.state.world("default", "a"), h.state.world("default", "b")
    # the allocation moves on (the growth is what is held); a waits for no plan: it got none
    assert (a.alloc, a.in_flight, a.held) == (0.3, None, None)
    assert b.alloc == 0.1
    assert b.in_flight is not None
    assert b.in_flight.strategies == ["s1"]


def test_reduce_only_worlds_are_part_of_the_plan_id(h: Harness) -> None:
    free = _seeded().engine.on_event(event(**E2), 3_000)
    h.run(h.engine.on_event(command("reduce-only", world_id="a"), 2_000))
    held = h.engine.on_event(event(**E2), 3_000)
    assert held.records[0]["plan_id"] != free.records[0]["plan_id"]
    # b's intent asks the same, but of another plan: another id
    ((b_free, b_held),) = [
        (f, r) for f in free.intents for r in held.intents if f["world_id"] == r["world_id"]
    ]
    assert (b_held["world_id"], b_held["delta_qty"]) == ("b", b_free["delta_qty"])
    assert b_held["intent_id"] != b_free["intent_id"]


def test_plans_of_worlds_not_in_reduce_only_keep_the_ids_they_had(h: Harness) -> None:
    """Pinned: the ids these plans had before reduce-only was built (the trigger bytes name
    reduce-only worlds only when there are any)."""
    work = h.send(event(**E2), now=3_000)
    assert work.records[0]["plan_id"] == "a041fcb153489196837cf76113e84d9f"
    assert [i["intent_id"] for i in work.intents] == [
        "74ee7f6fa62c3bf980a28abbdc2e729e",
        "ae55f277a9661c0994fb352011a80075",
    ]
    drifted = _seeded()
    flight = drifted.state.world("default", "a").in_flight
    assert flight is not None
    drifted.snapshots.apply(snap("s1", 4_000.0, as_of=2_000, converged_plan_id=flight.plan_id))
    rebalanced = drifted.run(drifted.engine.on_event(command("rebalance", world_id="a"), 3_000))
    # measured against the snapshots' equity since issue 16 (item 4): a new measured weight
    assert rebalanced.records[0]["plan_id"] == "aa5fe64853afa43bbd622871c3f622c3"


def test_the_trigger_names_reduce_only_worlds_only_when_there_are_any() -> None:
    trigger = Trigger("default", None, ("e1",), 1_000, 1.0, 1_000)
    table = PositionTable.from_rows([])
    change = WorldChange("a", 0.2, 0.1)
    plain = trigger.context([change], table, PlannerOptions())
    assert orjson.loads(plain.trigger) == {
        "event": None,
        "event_ids": ["e1"],
        "changes": [vars(change)],
    }
    assert plain.reduce_only_worlds == frozenset()
    restricted = trigger.context([change], table, PlannerOptions(), ["b", "a"])
    assert orjson.loads(restricted.trigger)["reduce_only"] == ["a", "b"]
    assert restricted.reduce_only_worlds == {"a", "b"}


@pytest.mark.parametrize(
    ("world_mode", "portfolio_mode", "applies"),
    [
        ("reduce-only", None, "reduce-only"),
        (None, "reduce-only", "reduce-only"),
        ("reduce-only", "pause", "paused"),
        ("halt", "reduce-only", "halted"),
        ("pause", "reduce-only", "paused"),
    ],
)
def test_the_stricter_of_reduce_only_and_the_other_state_applies(
    h: Harness, world_mode: str | None, portfolio_mode: str | None, applies: str
) -> None:
    if world_mode is not None:
        h.run(h.engine.on_event(command(world_mode, "c1", world_id="a"), 2_000))
    if portfolio_mode is not None:
        h.run(h.engine.on_event(command(portfolio_mode, "c2"), 2_100))
    assert h.state.trading_mode(h.state.world("default", "a")) == applies
    work = h.send(event(**E2), now=3_000)
    if applies == "reduce-only":
        assert work.records[-1]["held_reason"] == "reduce_only: worlds a"
        assert "a" not in {i["world_id"] for i in work.intents}
    else:
        assert "a" in work.held_worlds  # held whole, as the stricter state holds it
        assert work.records[0]["held_reason"].startswith(f"{applies}: worlds a")


def test_resume_lifts_reduce_only_and_a_rebalance_brings_the_world_to_its_allocation(
    h: Harness,
) -> None:
    h.run(h.engine.on_event(command("reduce-only"), 2_000))
    assert h.state.portfolio("default").trading.mode == "reduce-only"
    work = h.send(event(**E2), now=3_000)
    assert [i["world_id"] for i in work.intents] == ["b"]
    # a rebalance in reduce-only: a's growth is held again, nothing published
    again = h.run(h.engine.on_event(command("rebalance", "c2", world_id="a"), 3_100))
    (record,) = again.records
    assert record["held_reason"] == "reduce_only: worlds a"
    assert again.intents == []
    h.run(h.engine.on_event(command("resume", "c3"), 3_200))
    assert h.state.trading_mode(h.state.world("default", "a")) == "active"
    # a still holds 0.4 of X at 100 (40 of the 1,000,000 equity), far below its allocation
    # of 0.3 (the growth was held): the rebalance measures it and scales it up
    done = h.run(h.engine.on_event(command("rebalance", "c4", world_id="a"), 3_300))
    (intent,) = done.intents
    assert (intent["world_id"], intent["reduce_only"]) == ("a", False)
    assert intent["delta_qty"] > 0
    assert done.records[0]["held_reason"] is None


def test_a_change_held_by_a_pause_goes_when_the_world_turns_reduce_only(h: Harness) -> None:
    h.run(h.engine.on_event(command("pause"), 2_000))
    assert h.send(event(**E2), now=3_000).outcome is Outcome.HELD
    h.run(h.engine.on_event(command("reduce-only", "c2"), 4_000))
    (released,) = h.engine.released_work(5_000)
    assert released.outcome is Outcome.PLANNED
    (record,) = released.records
    assert record["coalesced_event_ids"] == ["e2"]
    assert record["held_reason"] == "reduce_only: worlds a"
    assert [(i["world_id"], i["delta_qty"]) for i in released.intents] == [("b", -0.4)]


def test_in_a_shared_account_a_world_waits_only_for_strategies_given_an_intent() -> None:
    h = Harness(planner=PlannerOptions(execution_mode="shared_account", allow_shared_account=True))
    for world, strategy, symbol in (("a", "s1", "X"), ("b", "t1", "X"), ("b", "t2", "Z")):
        h.snapshots.apply(snap(strategy, 1.0, world=world, positions=[position(symbol, 1.0)]))
    seed = {"a": 0.2, "b": 0.2}
    h.send(event(event_id="e1", world_alloc_before=seed, world_alloc_after=seed))
    h.run(h.engine.on_event(command("reduce-only", world_id="a"), 2_000))
    # a doubles (X +1, held), b halves (X -0.5, Z -0.5): the account's X grows by 0.5, held
    work = h.send(event(event_id="e2", world_alloc_after={"a": 0.4, "b": 0.1}), now=3_000)
    (record,) = work.records
    assert [(d["symbol"], d["reason"]) for d in record["global_dropped"]] == [("X", "held")]
    assert [(i["world_id"], i["symbol"], i["delta_qty"]) for i in work.intents] == [
        (None, "Z", -0.5)
    ]
    assert record["held_reason"] == "reduce_only: worlds a"
    # b's own view trades X too, but no intent carries it: b waits for t2 alone
    assert [d["symbol"] for d in record["per_world"]["b"]["deltas"]] == ["X", "Z"]
    b = h.state.world("default", "b")
    assert b.in_flight is not None
    assert b.in_flight.strategies == ["t2"]
    a = h.state.world("default", "a")
    assert a.in_flight is not None  # every world of a shared account follows its plan
    assert a.in_flight.strategies == []


def position(symbol: str, qty: float) -> dict[str, Any]:
    return {"venue": "v", "symbol": symbol, "qty": qty, "mark": 100.0}
