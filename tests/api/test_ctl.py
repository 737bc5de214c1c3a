"""``rebalancer ctl`` as a process against a running service, over real HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson

from service.app import RebalancerApp
from tests.api.test_http_api import TOKENS, plan_one_event, until
from tests.kafka_support import Feed, Tail
from tests.process_support import ROOT
from tests.stream.test_stream_service import btc, snapshot, world_move


async def ctl(
    app: RebalancerApp | None, *args: str, token: str | None, stdin: bytes = b""
) -> tuple[int, str, str]:
    url = "http://127.0.0.1:9" if app is None else f"http://127.0.0.1:{app.http.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REBALANCER_API")}
    if token is not None:
        env["REBALANCER_API_TOKEN"] = token

    def run() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", "ctl", "--url", url, *args],
            input=stdin,
            capture_output=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )

    done = await asyncio.to_thread(run)  # the service answers from this test's event loop
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_status_pause_and_plans_from_the_command_line(service: RebalancerApp) -> None:
    record = await plan_one_event(service)
    operator = TOKENS["operator"]
    code, out, _ = await ctl(service, "status", token=TOKENS["viewer"])
    assert code == 0
    assert "portfolio default: active" in out
    assert "world  alloc  trading  plan in flight" in out
    assert f"a      0.2    active   {record['plan_id']}" in out
    code, out, err = await ctl(
        service, "pause", "default", "--reason", "desk review", "--wait", token=operator
    )
    assert code == 0, err
    assert out.endswith(": applied (portfolio default: active -> paused)\n")
    code, out, _ = await ctl(service, "--json", "status", "default", token=operator)
    (portfolio,) = orjson.loads(out)["portfolios"]
    assert (portfolio["trading"]["mode"], portfolio["trading"]["reason"]) == (
        "paused",
        "desk review",
    )
    code, out, _ = await ctl(service, "plans", "--portfolio", "default", token=operator)
    assert code == 0
    assert record["plan_id"] in out
    assert "planned" in out
    header, *rows = out.splitlines()
    assert header.split()[5:9] == ["intents", "est.", "cost", "realised"]
    (row,) = [r for r in rows if record["plan_id"] in r]
    # no [costs] configured: estimated 0; no execution node reported a fill: no realised cost
    assert row.split()[-3:-1] == ["0.00", "-"]


async def test_preview_reads_the_event_from_stdin(service: RebalancerApp) -> None:
    await plan_one_event(service)
    event = orjson.dumps(world_move("p9", {"b": 0.2}, {"b": 0.1}))
    code, out, err = await ctl(service, "preview", "-", token=TOKENS["admin"], stdin=event)
    assert code == 0, err
    assert out.startswith("outcome: planned (dry run: nothing published)\n")
    assert "okx    BTCUSDT  0.3" in out


async def test_refusals_and_an_unreachable_service_exit_non_zero(service: RebalancerApp) -> None:
    wrong = "not-the-token-4711"
    code, out, err = await ctl(service, "status", token=wrong)
    assert (code, out) == (2, "")
    assert err == "error: 401: the bearer token is not one this service accepts\n"
    code, _, err = await ctl(service, "pause", "default", "--reason", "x", token=TOKENS["viewer"])
    assert code == 2
    assert err.startswith("error: 403: token 'viewer-user' has role viewer")
    code, out, err = await ctl(
        service, "reduce-only", "default", "--reason", "x", "--wait", token=TOKENS["admin"]
    )
    assert code == 0, err  # carried out since it was built
    assert out.endswith(": applied (portfolio default: active -> reduce-only)\n")
    code, _, err = await ctl(None, "status", token=wrong)
    assert code == 4
    assert err.startswith("error: cannot reach http://127.0.0.1:9")
    assert wrong not in err


async def test_approval_from_the_command_line(service: RebalancerApp) -> None:
    first = await plan_one_event(service)
    code, out, err = await ctl(
        service,
        "require-approval",
        "default",
        "--reason",
        "month end",
        "--wait",
        token=TOKENS["operator"],
    )
    assert code == 0, err
    assert out.endswith(": applied (plans of portfolio default need approval)\n")
    t, servers = service.settings.topics, service.settings.bootstrap_servers or ""
    async with Feed(servers) as feed, Tail(servers, t.plans) as plans:
        await feed.snapshot(
            t.snapshots, snapshot("a", "s1", [btc(0.4)], converged_plan_id=first["plan_id"])
        )
        await service.snapshot_reader.caught_up()
        await feed.event(t.allocations, world_move("e2", {"a": 0.1}))
        await plans.until(lambda rs: any(r["status"] == "proposed" for r in rs))
    (proposal,) = [r for r in plans.records if r["status"] == "proposed"]
    plan_id = proposal["plan_id"]

    async def shown() -> bool:
        code, out, _ = await ctl(service, "status", token=TOKENS["viewer"])
        return code == 0 and f"proposal {plan_id}: worlds a, 1 intents" in out

    await until(shown, "the proposal in ctl status")
    code, _, err = await ctl(
        service, "approve", plan_id, "--reason", "ok", token=TOKENS["operator"]
    )
    assert (code, err.split(":")[:2]) == (2, ["error", " 403"])
    code, out, err = await ctl(
        service,
        "approve",
        plan_id,
        "--reason",
        "sizes checked",
        "--wait",
        token=TOKENS["approver"],
    )
    assert code == 0, err
    assert out.endswith(f": applied (approve: plan {plan_id} published as proposed (1 intents))\n")
