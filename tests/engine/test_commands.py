"""Operators' commands decided by the engine: trading states that hold changes, resume that
lets them go against the positions of that moment, results kept by id."""

from __future__ import annotations

from typing import Any

import pytest

from service.engine import Outcome
from service.messages.command import OperatorCommand
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
    harness = Harness()
    harness.snapshots.apply(snap("s1", 0.6))
    harness.snapshots.apply(snap("s1", 0.4, world="b"))
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
        (command("reduce-only"), "reduce-only is not carried out by this version"),
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
    # world a drifted: 4,000 at 100 is 0.4 of the 1,000,000 equity, twice its 0.2
    h.snapshots.apply(snap("s1", 4_000.0, as_of=2_000, converged_plan_id=flight.plan_id))
    work = h.run(h.engine.on_event(command("rebalance", world_id="a"), 3_000))
    (record,) = work.records
    assert record["policy"]["trigger"] == "command"
    assert record["policy"]["reason"] == "rebalance by alice: desk review"
    assert [i["delta_qty"] for i in work.intents] == [-2_000.0]
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
