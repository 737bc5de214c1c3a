"""The HTTP API of a running service on a real broker, over real HTTP: who may call what, and
what the reads show."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from service.api.auth import sha256_hex
from service.app import RebalancerApp
from service.settings import Settings
from tests.execution.test_execution_node import intent as node_intent
from tests.execution.test_node_endpoints import node_app
from tests.execution.test_node_endpoints import paper as paper_venue
from tests.execution.test_node_endpoints import seed as seed_node_holdings
from tests.kafka_support import Feed, Tail, fresh_settings
from tests.process_support import ROOT, ServiceProcess, http_request
from tests.stream.test_stream_service import btc, snapshot, world_move

QMTL_EXAMPLE = ROOT / "examples" / "qmtl_request.json"
ROLES = ("viewer", "operator", "approver", "admin")
TOKENS = {role: f"{role}-{uuid.uuid4().hex}" for role in ROLES}
CALLERS: dict[str, str | None] = {"no token": None, "wrong token": "not-a-token", **TOKENS}

# (method, path, who may): every route of the API, as the table the roles are checked against
ROUTES: list[tuple[str, str, set[str]]] = [
    ("GET", "/v1/whoami", set(ROLES)),
    ("GET", "/v1/portfolios", set(ROLES)),
    ("GET", "/v1/portfolios/default", set(ROLES)),
    ("GET", "/v1/plans", set(ROLES)),
    ("GET", "/v1/plans?portfolio=default&status=planned&limit=5", set(ROLES)),
    ("GET", "/v1/plans/stats?buckets=10", set(ROLES)),
    ("GET", "/v1/health", set(ROLES)),
    ("GET", "/v1/nodes", set(ROLES)),
    ("POST", "/v1/portfolios/default/pause", {"operator", "admin"}),
    ("POST", "/v1/portfolios/default/resume", {"operator", "admin"}),
    ("POST", "/v1/portfolios/default/worlds/a/halt", {"operator", "admin"}),
    ("POST", "/v1/portfolios/default/worlds/a/resume", {"operator", "admin"}),
    ("POST", "/v1/portfolios/default/worlds/a/require-approval", {"operator", "admin"}),
    ("POST", "/v1/portfolios/default/worlds/a/waive-approval", {"admin"}),
    ("POST", "/v1/preview", {"operator", "admin"}),
    ("POST", "/rebalancing/plan", {"operator", "admin"}),
    # a proposal of a portfolio no instance plans for: accepted, then refused by the owner
    ("POST", "/v1/plans/ghost-plan/approve", {"approver", "admin"}),
    ("POST", "/v1/plans/ghost-plan/reject", {"approver", "admin"}),
]
GHOST_PROPOSAL = {
    "plan_id": "ghost-plan",
    "event_id": "ghost-event",
    "portfolio_id": "ghost",
    "occurred_at": 1_000,
    "created_at": 1_000,
    "status": "proposed",
}
OPEN_ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/"),  # the dashboard's page and assets: it signs in with a token itself
    ("GET", "/static/dashboard.js"),
    ("GET", "/static/dashboard.css"),
]


def api_settings(bootstrap_servers: str, api_max: int | None = None, **overrides: Any) -> Settings:
    tokens = [
        {"name": f"{role}-user", "role": role, "sha256": sha256_hex(token)}
        for role, token in TOKENS.items()
    ]
    api: dict[str, Any] = {"tokens": tokens}
    if api_max is not None:
        api["max_body_bytes"] = api_max
    return fresh_settings(bootstrap_servers, api=api, **overrides)


async def call(
    app: RebalancerApp, method: str, path: str, token: str | None = None, json: Any = None
) -> tuple[int, Any]:
    body = None if json is None else orjson.dumps(json)
    if method == "POST" and body is None:
        if path == "/v1/preview":
            body = orjson.dumps(world_move("p1", {"a": 0.2}, {"a": 0.3}))
        elif path == "/rebalancing/plan":
            body = QMTL_EXAMPLE.read_bytes()
        else:
            body = orjson.dumps({"reason": "a test"})
    status, headers, body = await http_request(app.http.port, method, path, token=token, body=body)
    if headers.get("content-type", "").startswith("application/json"):
        return status, orjson.loads(body)
    return status, body.decode()


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (reads follow the topics)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen in {timeout}s")
        await asyncio.sleep(0.05)


async def plan_one_event(app: RebalancerApp, event_id: str = "e1") -> dict[str, Any]:
    settings = app.settings
    t, servers = settings.topics, settings.bootstrap_servers or ""
    async with Feed(servers) as feed, Tail(servers, t.plans) as plans:
        await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(0.6)]))
        await feed.snapshot(t.snapshots, snapshot("b", "t1", [btc(0.3, venue="okx")]))
        await app.snapshot_reader.caught_up()
        await feed.event(t.allocations, world_move(event_id, {"a": 0.2}, {"a": 0.3}))
        (record,) = await plans.count(1)
    return record


async def test_every_route_answers_each_caller_by_role(
    service: RebalancerApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await plan_one_event(service)
    async with Feed(service.settings.bootstrap_servers or "") as feed:
        await feed.send(service.settings.topics.plans, "ghost", GHOST_PROPOSAL)

    async def known() -> bool:
        status, _ = await call(service, "GET", "/v1/portfolios/default", TOKENS["admin"])
        _, proposed = await call(service, "GET", "/v1/plans?status=proposed", TOKENS["admin"])
        return status == 200 and [p["plan_id"] for p in proposed["plans"]] == ["ghost-plan"]

    await until(known, "the portfolio in the read model")
    for method, path, allowed in ROUTES:
        for caller, token in CALLERS.items():
            status, body = await call(service, method, path, token)
            if token is None or caller == "wrong token":
                assert (status, set(body)) == (401, {"error"}), (path, caller, body)
            elif caller in allowed:
                assert 200 <= status < 300, (path, caller, status, body)
            else:
                assert status == 403, (path, caller, status, body)
    for method, path in OPEN_ROUTES:
        assert (await call(service, method, path))[0] == 200, path
    # the dashboard's event stream (endless once open, so only its refusals here)
    assert (await call(service, "GET", "/v1/events"))[0] == 401
    assert (await call(service, "GET", "/v1/events", "not-a-token"))[0] == 401
    status, whoami = await call(service, "GET", "/v1/whoami", TOKENS["approver"])
    assert whoami == {"name": "approver-user", "role": "approver"}
    logged = caplog.text
    for token in TOKENS.values():
        assert token not in logged
        assert sha256_hex(token) not in logged


async def test_a_401_says_how_to_authenticate(service: RebalancerApp) -> None:
    status, headers, body = await http_request(service.http.port, "GET", "/v1/portfolios")
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert orjson.loads(body) == {
        "error": "a bearer token is required (Authorization: Bearer TOKEN)"
    }
    status, body = await call(service, "GET", "/v1/portfolios", TOKENS["viewer"] + "x")
    assert (status, body) == (401, {"error": "the bearer token is not one this service accepts"})


async def test_portfolio_and_plans_read_what_the_topics_say(service: RebalancerApp) -> None:
    record = await plan_one_event(service)
    viewer = TOKENS["viewer"]

    async def with_plan() -> Any:
        status, body = await call(service, "GET", "/v1/portfolios/default", viewer)
        return body if status == 200 and body["plans_in_flight"] else None

    portfolio = await until(with_plan, "the portfolio with its plan in flight")
    assert portfolio["portfolio_id"] == "default"
    assert portfolio["total_equity"] == 1_000_000.0
    (world,) = portfolio["worlds"]
    assert world["world_id"] == "a"
    assert world["alloc"] == 0.2
    assert world["in_flight"]["plan_id"] == record["plan_id"]
    assert portfolio["plans_in_flight"] == [record["plan_id"]]
    assert portfolio["plan_being_written"] is False
    status, listing = await call(service, "GET", "/v1/portfolios", viewer)
    assert status == 200
    assert [p["portfolio_id"] for p in listing["portfolios"]] == ["default"]

    async def plans() -> Any:
        status, body = await call(service, "GET", "/v1/plans?portfolio=default", viewer)
        return body if status == 200 and body["plans"] else None

    page = await until(plans, "the plan history")
    (summary,) = page["plans"]
    assert summary == {
        "plan_id": record["plan_id"],
        "event_id": "e1",
        "portfolio_id": "default",
        "status": "planned",
        "worlds": ["a"],
        "occurred_at": record["occurred_at"],
        "created_at": record["created_at"],
        "intents": len(record["intent_ids"]),
        "coalesced_event_ids": ["e1"],
        "held_reason": None,
        # world a 0.3 -> 0.2 sells a third of 0.6 BTC at 60,000
        "turnover": sum(d["notional"] for d in record["per_world"]["a"]["deltas"]),
        "traded_keys": 1,
        "policy": None,
        "trigger": None,
        "estimated_cost": 0.0,  # the default cost model is free
        "realised_cost": None,  # no execution node reported a fill
    }
    assert summary["turnover"] == pytest.approx(12_000.0)
    assert page["next_cursor"] is None
    status, stats = await call(service, "GET", "/v1/plans/stats?buckets=4", viewer)
    assert status == 200
    assert [(b["plans"], b["turnover"]) for b in stats["buckets"]] == [
        (1, pytest.approx(12_000.0)),
        (0, 0.0),
        (0, 0.0),
        (0, 0.0),
    ]
    assert stats["plans"] == 1
    status, health = await call(service, "GET", "/v1/health", viewer)
    assert (health["ready"], health["events_dead_lettered"], health["plans_known"]) == (
        True,
        0.0,
        1,
    )
    assert health["events_consumed"] >= 1
    status, none = await call(service, "GET", "/v1/plans?portfolio=other", viewer)
    assert (status, none) == (200, {"plans": [], "next_cursor": None})
    status, missing = await call(service, "GET", "/v1/portfolios/other", viewer)
    assert (status, missing) == (404, {"error": "portfolio 'other' is not known"})


async def test_plans_are_paged_newest_first(service: RebalancerApp) -> None:
    await plan_one_event(service, "e1")
    settings = service.settings
    t, servers = settings.topics, settings.bootstrap_servers or ""
    async with Feed(servers) as feed:
        # world a waits for its plan to be reached: e2 is held; world b is planned
        await feed.event(t.allocations, world_move("e2", {"a": 0.1}))
        await feed.event(t.allocations, world_move("e3", {"b": 0.2}, {"b": 0.1}))
    viewer = TOKENS["viewer"]

    async def three() -> Any:
        status, body = await call(service, "GET", "/v1/plans?limit=50", viewer)
        return body["plans"] if status == 200 and len(body["plans"]) == 3 else None

    every = await until(three, "three plan records")
    assert [p["status"] for p in every].count("held") == 1
    held = next(p for p in every if p["status"] == "held")
    assert (held["event_id"], held["worlds"]) == ("e2", ["a"])
    created = [(p["created_at"], p["plan_id"]) for p in every]
    assert created == sorted(created, reverse=True)
    seen: list[str] = []
    cursor = ""
    for _ in range(3):
        status, page = await call(service, "GET", f"/v1/plans?limit=1{cursor}", viewer)
        assert status == 200
        seen += [p["plan_id"] for p in page["plans"]]
        cursor = f"&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert seen == [p["plan_id"] for p in every]
    assert cursor == ""
    status, by_world = await call(service, "GET", "/v1/plans?world=b", viewer)
    assert [p["event_id"] for p in by_world["plans"]] == ["e3"]
    status, bad = await call(service, "GET", "/v1/plans?cursor=nonsense", viewer)
    assert (status, bad) == (
        422,
        {"error": "cursor: 'nonsense' is not a cursor this service handed out"},
    )


async def test_an_open_api_beyond_loopback_stops_start_up(tmp_path: Any) -> None:
    settings = fresh_settings("")  # the refusal comes before any broker is started
    service = ServiceProcess(settings, tmp_path / "service.log", REBALANCER_HTTP_HOST="0.0.0.0")
    assert await service.exited() == 2
    output = service.output()
    assert "error: http_host '0.0.0.0' is not a loopback address and api.tokens is empty" in output
    assert "Traceback" not in output


async def command_done(app: RebalancerApp, command_id: str) -> dict[str, Any]:
    async def decided() -> Any:
        status, body = await call(app, "GET", f"/v1/commands/{command_id}", TOKENS["viewer"])
        assert status == 200, body
        return body if body["status"] != "accepted" else None

    found: dict[str, Any] = await until(decided, f"command {command_id} decided")
    return found


async def test_pause_holds_changes_and_resume_plans_them_from_that_moment(
    service: RebalancerApp,
) -> None:
    settings = service.settings
    t, servers = settings.topics, settings.bootstrap_servers or ""
    first = await plan_one_event(service)
    operator = TOKENS["operator"]
    async with (
        Feed(servers) as feed,
        Tail(servers, t.plans) as plans,
        Tail(servers, t.intents) as intents,
    ):
        # the first plan is reached: nothing but the pause holds world a
        await feed.snapshot(
            t.snapshots, snapshot("a", "s1", [btc(0.4)], converged_plan_id=first["plan_id"])
        )
        status, accepted = await call(
            service, "POST", "/v1/portfolios/default/pause", operator, {"reason": "desk review"}
        )
        assert status == 202
        assert accepted["status_url"] == f"/v1/commands/{accepted['command_id']}"
        paused = await command_done(service, accepted["command_id"])
        assert paused["status"] == "applied"
        assert paused["detail"] == "portfolio default: active -> paused"
        assert (paused["requested_by"], paused["reason"]) == ("operator-user", "desk review")
        await feed.event(t.allocations, world_move("e2", {"a": 0.1}))
        await plans.until(lambda rs: any(r["event_id"] == "e2" for r in rs))
        (held,) = [r for r in plans.records if r["event_id"] == "e2"]
        assert (held["status"], held["held_reason"]) == ("held", "paused: worlds a")
        status, view = await call(service, "GET", "/v1/portfolios/default", operator)
        assert view["trading"]["mode"] == "paused"
        assert view["trading"]["by"] == "operator-user"
        assert [w["trading_mode"] for w in view["worlds"]] == ["paused"]

        async def paused_in_metrics() -> bool:
            _, text = await call(service, "GET", "/metrics")
            return (
                'rebalancer_worlds_trading{mode="paused"} 1.0' in text
                and 'rebalancer_commands_total{action="pause",outcome="applied"} 1.0' in text
            )

        await until(paused_in_metrics, "the paused world in /metrics")
        # positions move while paused: resume plans e2 once, from what is held then
        await feed.snapshot(
            t.snapshots,
            snapshot("a", "s1", [btc(0.8)], as_of=2_000, converged_plan_id=first["plan_id"]),
        )
        await service.snapshot_reader.caught_up()
        status, accepted = await call(service, "POST", "/v1/portfolios/default/resume", operator)
        assert status == 202
        assert (await command_done(service, accepted["command_id"]))["status"] == "applied"
        await plans.until(
            lambda rs: any(
                r["status"] == "planned" and "e2" in r["coalesced_event_ids"] for r in rs
            )
        )
        (planned,) = [
            r for r in plans.records if r["status"] == "planned" and r["event_id"] != "e1"
        ]
        await intents.until(lambda rs: {i["intent_id"] for i in rs} >= set(planned["intent_ids"]))
        (intent,) = [i for i in intents.records if i["plan_id"] == planned["plan_id"]]
        assert intent["delta_qty"] == -0.4  # 0.2 -> 0.1 halves 0.8, the position at resume
        await intents.quiet(0.3)
        assert {i["plan_id"] for i in intents.records} == {first["plan_id"], planned["plan_id"]}


async def test_commands_are_checked_before_they_are_published(service: RebalancerApp) -> None:
    operator = TOKENS["operator"]
    status, accepted = await call(service, "POST", "/v1/portfolios/default/reduce-only", operator)
    assert status == 202  # carried out since it was built
    assert (await command_done(service, accepted["command_id"]))["detail"] == (
        "portfolio default: active -> reduce-only"
    )
    status, body = await call(service, "POST", "/v1/portfolios/default/explode", operator)
    assert status == 422
    status, body = await call(service, "POST", "/v1/portfolios/default/pause", operator, {})
    assert (status, body) == (422, {"error": "body.reason: Field required"})
    status, _, raw = await http_request(
        service.http.port, "POST", "/v1/portfolios/default/pause", token=operator, body=b"]\xff{"
    )
    assert (status, orjson.loads(raw)) == (
        422,
        {"error": "body: cannot be read as JSON (There was an error parsing the body)"},
    )
    status, body = await call(service, "GET", "/v1/commands/nope", operator)
    assert status == 404
    # a world the portfolio does not have: accepted, then refused by the owner with why
    status, accepted = await call(
        service, "POST", "/v1/portfolios/default/worlds/zz/pause", TOKENS["admin"]
    )
    assert status == 202
    refused = await command_done(service, accepted["command_id"])
    assert (refused["status"], refused["detail"]) == (
        "refused",
        "portfolio default has no world 'zz'",
    )


async def test_reduce_only_publishes_the_shrink_and_holds_the_growth(
    service: RebalancerApp,
) -> None:
    """A world in reduce-only; an allocation change that shrinks one of its keys (s1's, on
    binance) and grows another (s2's, on okx): one intent on the topic, the shrink."""
    settings = service.settings
    t, servers = settings.topics, settings.bootstrap_servers or ""
    operator = TOKENS["operator"]
    weights = {"a": {"s1": 0.1, "s2": 0.1}}
    async with (
        Feed(servers) as feed,
        Tail(servers, t.plans) as plans,
        Tail(servers, t.intents) as intents,
    ):
        await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(0.6)]))
        await feed.snapshot(t.snapshots, snapshot("a", "s2", [btc(0.3, venue="okx")]))
        await service.snapshot_reader.caught_up()
        # world a known to the state with its strategies' weights; nothing to trade
        seed = world_move(
            "e1",
            {"a": 0.2},
            {"a": 0.2},
            strategy_alloc_before_total=weights,
            strategy_alloc_after_total=weights,
        )
        await feed.event(t.allocations, seed)
        await plans.until(lambda rs: any(r["event_id"] == "e1" for r in rs))
        status, accepted = await call(
            service,
            "POST",
            "/v1/portfolios/default/worlds/a/reduce-only",
            operator,
            {"reason": "de-risk"},
        )
        assert status == 202
        done = await command_done(service, accepted["command_id"])
        assert (done["status"], done["detail"]) == (
            "applied",
            "world a of default: active -> reduce-only",
        )
        # s1 halves (binance 0.6 -> 0.3), s2 grows by half (okx 0.3 -> 0.45)
        move = world_move(
            "e2", {"a": 0.2}, strategy_alloc_after_total={"a": {"s1": 0.05, "s2": 0.15}}
        )
        await feed.event(t.allocations, move)
        await plans.until(lambda rs: any(r["event_id"] == "e2" for r in rs))
        (record,) = [r for r in plans.records if r["event_id"] == "e2"]
        assert (record["status"], record["held_reason"]) == ("planned", "reduce_only: worlds a")
        (dropped,) = record["per_world"]["a"]["dropped"]
        assert (dropped["venue"], dropped["reason"], dropped["delta_qty_unrounded"]) == (
            "okx",
            "held",
            0.15,
        )
        await intents.until(lambda rs: {i["intent_id"] for i in rs} >= set(record["intent_ids"]))
        await intents.quiet(0.3)
        assert [
            (i["plan_id"], i["venue"], i["delta_qty"], i["reduce_only"]) for i in intents.records
        ] == [(record["plan_id"], "binance", -0.3, True)]

    async def shown() -> Any:
        status, view = await call(service, "GET", "/v1/portfolios/default", operator)
        world = view["worlds"][0] if status == 200 and view["worlds"] else {}
        return view if world.get("alloc") == 0.2 and world.get("in_flight") else None

    view = await until(shown, "world a with its plan in flight")
    (world,) = view["worlds"]
    assert (world["trading"]["mode"], world["trading"]["reason"]) == ("reduce-only", "de-risk")
    assert (world["trading_mode"], view["trading"]["mode"]) == ("reduce-only", "active")
    assert world["strategy_alloc"] == {"s1": 0.05, "s2": 0.15}  # the allocation moved on
    # a waits for the strategy its intent carries, not for s2, which got none
    assert world["in_flight"]["strategies"] == ["s1"]

    async def in_metrics() -> bool:
        _, text = await call(service, "GET", "/metrics")
        return (
            'rebalancer_worlds_trading{mode="reduce-only"} 1.0' in text
            and 'rebalancer_commands_total{action="reduce-only",outcome="applied"} 1.0' in text
        )

    await until(in_metrics, "the reduce-only world in /metrics")


async def topic_sizes(settings: Settings) -> dict[str, int]:
    """Records on every topic the service reads or writes (read to the end)."""
    servers = settings.bootstrap_servers or ""
    sizes = {}
    for topic in settings.topics.model_dump().values():
        async with Tail(servers, topic) as tail:
            await tail.quiet(0.3)
            sizes[topic] = len(tail.records)
    return sizes


async def test_preview_plans_what_the_service_would_and_publishes_nothing(
    service: RebalancerApp,
) -> None:
    settings = service.settings
    t, servers = settings.topics, settings.bootstrap_servers or ""
    async with Feed(servers) as feed:
        await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(0.6)]))
        await feed.snapshot(t.snapshots, snapshot("a", "s2", [btc(0.9)]))
    await service.snapshot_reader.caught_up()
    move = world_move("e1", {"a": 0.2}, {"a": 0.3})
    before = await topic_sizes(settings)
    status, preview = await call(service, "POST", "/v1/preview", TOKENS["operator"], move)
    assert status == 200, preview
    assert preview["outcome"] == "planned"
    (record,) = preview["records"]
    (intent,) = preview["intents"]
    assert (record["status"], intent["delta_qty"]) == ("planned", -0.5)
    assert record["intent_ids"] == [intent["intent_id"]]
    assert await topic_sizes(settings) == before
    # the same event sent for real: the same plan and intent
    async with Feed(servers) as feed, Tail(servers, t.plans) as plans:
        await feed.event(t.allocations, move)
        (published,) = await plans.count(1)
    assert published["plan_id"] == record["plan_id"]
    assert published["intent_ids"] == record["intent_ids"]
    # refused input says why, and a viewer may not preview
    bad = {**move, "world_alloc_after": {"a": 1.5}}
    status, body = await call(service, "POST", "/v1/preview", TOKENS["operator"], bad)
    assert status == 422
    assert "world_alloc_after" in body["error"]
    status, _ = await call(service, "POST", "/v1/preview", TOKENS["viewer"], move)
    assert status == 403


async def test_the_openapi_document_describes_every_route(service: RebalancerApp) -> None:
    status, document = await call(service, "GET", "/openapi.json")
    assert status == 200
    paths = document["paths"]
    for method, path, _ in ROUTES:
        template = (
            path.split("?")[0]
            .replace("/default", "/{portfolio}")
            .replace("/a/", "/{world}/")
            .replace("/ghost-plan/", "/{plan_id}/")
        )
        if method == "POST" and "portfolios" in template:
            template = template.rsplit("/", 1)[0] + "/{action}"
        elif method == "POST" and "/v1/plans/" in template:
            template = template.rsplit("/", 1)[0] + "/{decision}"
        assert method.lower() in paths[template], template
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    assert paths["/v1/preview"]["post"]["requestBody"]["required"] is True


async def test_qmtl_clients_get_the_plan_in_qmtl_shape(service: RebalancerApp) -> None:
    operator = TOKENS["operator"]
    request = orjson.loads(QMTL_EXAMPLE.read_bytes())
    status, plan = await call(service, "POST", "/rebalancing/plan", operator, request)
    assert status == 200, plan
    assert set(plan) >= {"per_world", "global_deltas", "plan_id"}
    for world in request["world_alloc_after"]:
        assert {"world_id", "scale_world", "scale_by_strategy", "deltas"} <= set(
            plan["per_world"][world]
        )
    # the same plan as `rebalancer plan` (ids do not depend on the clock)
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "plan", str(QMTL_EXAMPLE)],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    offline = orjson.loads(done.stdout)
    assert plan["plan_id"] == offline["plan_id"]
    assert plan["per_world"] == offline["per_world"]
    assert plan["global_deltas"] == offline["global_deltas"]
    # QMTL's optional fields are accepted and change nothing
    extras = {**request, "overlay": None, "mode": "scaling", "schema_version": 1}
    status, same = await call(service, "POST", "/rebalancing/plan", operator, extras)
    assert status == 200, same
    assert same["per_world"] == plan["per_world"]
    for body, expected in [
        ({**request, "mode": "overlay"}, "mode: Input should be 'scaling'"),
        ({**request, "overlay": {"weights": {}}}, "overlay: Input should be None"),
        (
            {"event": world_move("x", {"a": 0.1})},
            "request: this takes QMTL's request body; ours (with 'event') goes to "
            "POST /v1/preview or `rebalancer plan`",
        ),
    ]:
        status, refused = await call(service, "POST", "/rebalancing/plan", operator, body)
        assert status == 422
        assert expected in refused["error"]


async def test_flatten_closes_every_key_and_stays_halted_until_resume(
    service: RebalancerApp,
) -> None:
    settings = service.settings
    t, servers = settings.topics, settings.bootstrap_servers or ""
    first = await plan_one_event(service)
    admin = TOKENS["admin"]
    async with (
        Feed(servers) as feed,
        Tail(servers, t.intents) as intents,
        Tail(servers, t.plans) as plans,
    ):
        await feed.snapshot(
            t.snapshots, snapshot("a", "s1", [btc(0.4)], converged_plan_id=first["plan_id"])
        )
        await service.snapshot_reader.caught_up()
        status, accepted = await call(
            service, "POST", "/v1/portfolios/default/flatten", admin, {"reason": "venue down"}
        )
        assert status == 202
        done = await command_done(service, accepted["command_id"])
        assert (done["status"], done["detail"]) == (
            "applied",
            "flatten: worlds a of default to 0; halted until resume",
        )
        await plans.until(lambda rs: any(r["event_id"] == accepted["command_id"] for r in rs))
        (flat,) = [r for r in plans.records if r["event_id"] == accepted["command_id"]]
        await intents.until(lambda rs: {i["intent_id"] for i in rs} >= set(flat["intent_ids"]))
        closing = [i for i in intents.records if i["plan_id"] == flat["plan_id"]]
        assert [(i["target_qty"], i["reduce_only"], i["leg"]) for i in closing] == [
            (0.0, True, "close")
        ]
        status, view = await call(service, "GET", "/v1/portfolios/default", admin)
        assert view["trading"]["mode"] == "halted"
        assert view["trading"]["latched_by_flatten"] is True
        # halted: a change is held, nothing is published for it
        await feed.event(t.allocations, world_move("e9", {"a": 0.1}))
        await plans.until(lambda rs: any(r["event_id"] == "e9" for r in rs))
        (held,) = [r for r in plans.records if r["event_id"] == "e9"]
        assert held["held_reason"] == "halted: worlds a"
        await intents.quiet(0.3)  # halted: nothing published for e9
        assert {i["plan_id"] for i in intents.records} == {first["plan_id"], flat["plan_id"]}
        status, accepted = await call(service, "POST", "/v1/portfolios/default/resume", admin)
        assert (await command_done(service, accepted["command_id"]))["status"] == "applied"
        status, view = await call(service, "GET", "/v1/portfolios/default", admin)
        assert view["trading"]["mode"] == "active"


async def test_reads_show_each_policy_drift_and_next_check(bootstrap_servers: str) -> None:
    band = {"kind": "band", "mode": "absolute", "threshold": 0.5}  # wide: never triggers here
    rule = {"name": "keep-a", "worlds": ["a"], "trigger": band, "target": {"kind": "allocation"}}
    policies = {"enabled": True, "check_interval_ms": 3_600_000, "rules": [rule]}
    app = RebalancerApp(api_settings(bootstrap_servers, policies=policies))
    await app.start()
    try:
        await plan_one_event(app)
        # the rest of the portfolio is cash on a's snapshot: a measured equity of 1,000,000
        t = app.settings.topics
        async with Feed(app.settings.bootstrap_servers or "") as feed:
            cash = snapshot("a", "s1", [btc(0.6)], as_of=2_000, cash=964_000.0)
            await feed.snapshot(t.snapshots, cash)

        async def measured() -> Any:
            _, body = await call(app, "GET", "/v1/portfolios/default", TOKENS["viewer"])
            worlds = body.get("worlds") if isinstance(body, dict) else None
            found = worlds[0]["policies"] if worlds and worlds[0]["policies"] else None
            return found if found and found[0]["equity"] == 1_000_000.0 else None

        (seen,) = await until(measured, "world a's policy outlook")
        # world a holds 0.6 BTC at 60,000: 36,000 of 1,000,000 against its allocation of 0.2
        assert seen["equity_source"] == "measured"
        assert seen["policy"] == "keep-a"
        assert seen["status"] == "in_band"
        assert seen["weights"] == {"world": pytest.approx(0.036)}
        assert seen["targets"] == {"world": 0.2}
        assert seen["drift"] == {"world": pytest.approx(0.164)}
        assert (seen["band"], seen["band_mode"]) == (0.5, "absolute")
        assert seen["checks_every_ms"] == 3_600_000
        assert 0 < seen["next_check_at"] - app.clock() <= 3_600_000
    finally:
        await app.stop()


async def test_a_body_over_the_limit_is_refused_with_413(bootstrap_servers: str) -> None:
    app = RebalancerApp(api_settings(bootstrap_servers, api_max=4_096))
    await app.start()
    try:
        big = orjson.dumps(world_move("big", {"a": 0.2}, {"a": 0.1}, pad="x" * 5_000))
        status, body = await call(app, "POST", "/v1/preview", TOKENS["operator"], orjson.loads(big))
        assert (status, body) == (
            413,
            {
                "error": f"body: {len(big)} bytes declared (Content-Length); this API takes at "
                "most 4096 bytes (api.max_body_bytes)"
            },
        )
        # without a Content-Length (chunked), counted as it arrives
        reader, writer = await asyncio.open_connection("127.0.0.1", app.http.port)
        head = (
            "POST /v1/preview HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Authorization: Bearer {TOKENS['operator']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunks = b"".join(b"%x\r\n%s\r\n" % (1_000, b"x" * 1_000) for _ in range(6)) + b"0\r\n\r\n"
        writer.write(head.encode() + chunks)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 413 ")
        assert b"body: over 4096 bytes sent; this API takes at most 4096 bytes" in raw
        # a body within the limit is read as usual
        status, body = await call(app, "POST", "/v1/preview", TOKENS["operator"])
        assert status == 200, body
    finally:
        await app.stop()


async def test_nodes_show_each_execution_node_alive_with_its_plans(
    service: RebalancerApp,
) -> None:
    settings = service.settings
    t, servers = settings.topics, settings.bootstrap_servers or ""
    async with Feed(servers) as feed:
        await seed_node_holdings(feed, settings)
        node = node_app(settings, paper_venue(), heartbeat_ms=100)
        await node.start()
        try:
            # an open leg waits for its close leg, which never comes: p1 stays in progress
            waiting = node_intent(
                "p1", "open", reduce_only=False, depends_on="p1-BTC-close", delta_qty=0.5
            )
            await feed.send(t.intents, "paper|BTC", waiting)

            async def working() -> dict[str, Any] | None:
                status, body = await call(service, "GET", "/v1/nodes", TOKENS["viewer"])
                assert status == 200, body
                mine = [n for n in body["nodes"] if n["node_id"] == node.node.node_id]
                return mine[0] if mine and mine[0]["plans"] == ["p1"] else None

            seen = await until(working, "the node alive, working on p1")
            assert (seen["venue"], seen["alive"], seen["ready"]) == ("paper", True, True)
            assert seen["endpoint"] == f"127.0.0.1:{node.port}"
            assert seen["interval_ms"] == 100
            assert seen["stopped"] is False
            assert service.clock() - seen["last_heartbeat"] < 3 * 100 + 5_000
        finally:
            await node.stop()

    async def gone() -> dict[str, Any] | None:
        _, body = await call(service, "GET", "/v1/nodes", TOKENS["viewer"])
        mine = [n for n in body["nodes"] if n["node_id"] == node.node.node_id]
        return mine[0] if mine and not mine[0]["alive"] else None

    down = await until(gone, "the node not alive once stopped")
    assert down["stopped"] is True
    assert down["last_heartbeat"] >= seen["last_heartbeat"]


async def test_a_node_that_stops_heartbeating_is_not_alive_after_three_intervals(
    service: RebalancerApp,
) -> None:
    """A node killed (no last heartbeat saying it stopped) turns not alive by the clock."""
    beat = {
        "schema_version": 1,
        "node_id": "killed-node",
        "venue": "okx",
        "started_at": service.clock() - 60_000,
        "sent_at": service.clock(),
        "interval_ms": 1_000,
        "ready": True,
        "plans": ["p9"],
        "counts": {"intents": 3, "orders": 2, "fills": 2, "rejections": 0, "plans_converged": 0},
    }
    async with Feed(service.settings.bootstrap_servers or "") as feed:
        await feed.send(service.settings.topics.nodes, "killed-node", beat)

    async def listed(alive: bool) -> dict[str, Any] | None:
        _, body = await call(service, "GET", "/v1/nodes", TOKENS["viewer"])
        mine = [n for n in body["nodes"] if n["node_id"] == "killed-node"]
        return mine[0] if mine and mine[0]["alive"] is alive else None

    seen = await until(lambda: listed(True), "the node alive")
    assert (seen["venue"], seen["plans"], seen["stopped"]) == ("okx", ["p9"], False)
    down = await until(lambda: listed(False), "the node not alive")
    assert down["stopped"] is False
    assert service.clock() - down["last_heartbeat"] >= 3 * 1_000
