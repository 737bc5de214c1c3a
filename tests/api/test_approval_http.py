"""Approval mode through real HTTP, against a running service on a real broker: a proposal
publishes no intent; approval publishes its intents with the proposal's ids and bytes; an
approval after the positions moved expires the proposal and proposes the change again;
reject; four-eyes refuses the requester."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from service.app import RebalancerApp
from service.engine import intents_from_record
from tests.api.test_http_api import TOKENS, api_settings, call, command_done, plan_one_event, until
from tests.kafka_support import Feed, Tail
from tests.stream.test_stream_service import btc, snapshot, world_move

pytestmark = pytest.mark.broker


@pytest.fixture
async def service(bootstrap_servers: str) -> AsyncIterator[RebalancerApp]:
    app = RebalancerApp(api_settings(bootstrap_servers, approval={"four_eyes": ["default"]}))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def command(app: RebalancerApp, path: str, role: str, reason: str = "a test") -> Any:
    """POST a command as ``role`` and wait until the owner decided it."""
    status, accepted = await call(app, "POST", path, TOKENS[role], {"reason": reason})
    assert status == 202, accepted
    return await command_done(app, accepted["command_id"])


async def approval_required(app: RebalancerApp, feed: Feed) -> dict[str, Any]:
    """World a planned once (and reached), then switched to approval by an operator."""
    first = await plan_one_event(app)
    t = app.settings.topics
    await feed.snapshot(
        t.snapshots, snapshot("a", "s1", [btc(0.4)], converged_plan_id=first["plan_id"])
    )
    await app.snapshot_reader.caught_up()
    done = await command(app, "/v1/portfolios/default/worlds/a/require-approval", "operator")
    assert (done["status"], done["detail"]) == (
        "applied",
        "plans of world a of default need approval",
    )
    return first


async def listed(app: RebalancerApp, plan_id: str, status: str) -> None:
    """Wait until the instance's plan history has the plan with this status (reads follow
    the plan topic)."""

    async def seen() -> bool:
        _, page = await call(app, "GET", f"/v1/plans?status={status}", TOKENS["viewer"])
        return plan_id in {p["plan_id"] for p in page["plans"]}

    await until(seen, f"plan {plan_id} {status} in the plan history")


@dataclass
class Scene:
    """World a switched to approval, and a change to it (e2) proposed."""

    feed: Feed
    plans: Tail
    intents: Tail
    first: dict[str, Any]
    """The plan of world a before approval was required."""
    proposal: dict[str, Any]


@contextlib.asynccontextmanager
async def proposed(app: RebalancerApp) -> AsyncIterator[Scene]:
    t, servers = app.settings.topics, app.settings.bootstrap_servers or ""
    async with (
        Feed(servers) as feed,
        Tail(servers, t.plans) as plans,
        Tail(servers, t.intents) as intents,
    ):
        first = await approval_required(app, feed)
        await feed.event(t.allocations, world_move("e2", {"a": 0.1}))
        await plans.until(lambda rs: with_status(rs, "proposed"))
        (proposal,) = with_status(plans.records, "proposed")
        yield Scene(feed, plans, intents, first, proposal)


def with_status(records: list[Any], status: str) -> list[Any]:
    return [r for r in records if r is not None and r.get("status") == status]


async def test_approval_publishes_the_proposed_intents_byte_for_byte(
    service: RebalancerApp,
) -> None:
    async with proposed(service) as scene:
        plans, intents, first, proposal = scene.plans, scene.intents, scene.first, scene.proposal
        assert proposal["event_id"] == "e2"
        assert proposal["intent_ids"]
        await intents.quiet(0.5)
        assert {i["plan_id"] for i in intents.records} == {first["plan_id"]}  # none proposed

        async def proposed_in_reads() -> Any:
            _, view = await call(service, "GET", "/v1/portfolios/default", TOKENS["viewer"])
            return view if view["proposals"] else None

        view = await until(proposed_in_reads, "the proposal in the portfolio's read")
        await listed(service, proposal["plan_id"], "proposed")
        (shown,) = view["proposals"]
        assert (shown["plan_id"], shown["worlds"], shown["intents"]) == (
            proposal["plan_id"],
            ["a"],
            len(proposal["intent_ids"]),
        )
        (world_a,) = view["worlds"]
        assert (world_a["approval_required"], world_a["proposal"]) == (True, proposal["plan_id"])
        assert world_a["held"]["reason"] == "awaiting_approval"

        done = await command(
            service, f"/v1/plans/{proposal['plan_id']}/approve", "approver", "looks right"
        )
        assert done["status"] == "applied", done
        await plans.until(lambda rs: with_status(rs, "approved"))
        (approved,) = with_status(plans.records, "approved")
        assert approved["plan_id"] == proposal["plan_id"]
        assert approved["approval"]["decided_by"] == "approver-user"
        assert approved["approval"]["reason"] == "looks right"
        wanted = set(proposal["intent_ids"])
        await intents.until(lambda rs: {i["intent_id"] for i in rs} >= wanted)
        published = [
            raw
            for raw, i in zip(intents.raw, intents.records, strict=True)
            if i["plan_id"] == proposal["plan_id"]
        ]
        assert published == [orjson.dumps(i) for i in intents_from_record(proposal)]

        # decided once: the read model says so, and a second approval is refused
        async def approved_in_reads() -> bool:
            _, page = await call(service, "GET", "/v1/plans?status=approved", TOKENS["viewer"])
            return [p["plan_id"] for p in page["plans"]] == [proposal["plan_id"]]

        await until(approved_in_reads, "the approval in the plan history")
        verb = "approve"
        status, body = await call(
            service, "POST", f"/v1/plans/{proposal['plan_id']}/{verb}", TOKENS["approver"]
        )
        assert (status, body) == (
            409,
            {"error": f"plan {proposal['plan_id']!r} is approved, not proposed: nothing to {verb}"},
        )
        await intents.quiet(0.3)
        assert len([i for i in intents.records if i["plan_id"] == proposal["plan_id"]]) == len(
            wanted
        )


async def test_moved_positions_expire_a_proposal_reject_drops_and_four_eyes_holds(
    service: RebalancerApp,
) -> None:
    t = service.settings.topics
    async with proposed(service) as scene:
        feed, plans, intents, first, p1 = (
            scene.feed,
            scene.plans,
            scene.intents,
            scene.first,
            scene.proposal,
        )
        # world a's positions move before the approver gets to it
        await feed.snapshot(
            t.snapshots,
            snapshot("a", "s1", [btc(0.3)], as_of=3_000, converged_plan_id=first["plan_id"]),
        )
        await service.snapshot_reader.caught_up()
        await listed(service, p1["plan_id"], "proposed")
        done = await command(service, f"/v1/plans/{p1['plan_id']}/approve", "approver")
        assert done["status"] == "refused"
        assert done["detail"] == (
            f"approve: plan {p1['plan_id']} expired (world a's positions, trading mode or the "
            "portfolio's equity moved); its change is planned again"
        )
        await plans.until(lambda rs: len(with_status(rs, "proposed")) == 2)
        (expired,) = with_status(plans.records, "expired")
        assert expired["plan_id"] == p1["plan_id"]
        p2 = with_status(plans.records, "proposed")[-1]
        assert p2["plan_id"] != p1["plan_id"]
        assert p2["coalesced_event_ids"] == ["e2"]
        # 0.2 -> 0.1 halves what world a holds now (0.3), not what it held when proposed
        assert [d["delta_qty"] for d in p2["per_world"]["a"]["deltas"]] == [-0.15]

        await listed(service, p2["plan_id"], "proposed")
        done = await command(service, f"/v1/plans/{p2['plan_id']}/reject", "approver", "not now")
        assert done["status"] == "applied"
        await plans.until(lambda rs: with_status(rs, "rejected"))
        (rejected,) = with_status(plans.records, "rejected")
        assert (rejected["plan_id"], rejected["approval"]["reason"]) == (p2["plan_id"], "not now")

        # four-eyes: the admin's rebalance of world a cannot be approved by the admin
        done = await command(service, "/v1/portfolios/default/worlds/a/rebalance", "admin")
        assert done["status"] == "applied", done
        await plans.until(lambda rs: len(with_status(rs, "proposed")) == 3)
        p3 = with_status(plans.records, "proposed")[-1]
        assert p3["approval"]["requested_by"] == "admin-user"
        await listed(service, p3["plan_id"], "proposed")
        done = await command(service, f"/v1/plans/{p3['plan_id']}/approve", "admin")
        assert done["status"] == "refused"
        assert done["detail"].startswith("approve: four-eyes: admin-user asked for plan")
        done = await command(service, f"/v1/plans/{p3['plan_id']}/approve", "approver")
        assert done["status"] == "applied"
        await intents.until(lambda rs: {i["intent_id"] for i in rs} >= set(p3["intent_ids"]))
        await intents.quiet(0.3)
        # intents of the first plan and of the approved one; none of the others
        assert {i["plan_id"] for i in intents.records} == {first["plan_id"], p3["plan_id"]}
