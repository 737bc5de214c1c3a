"""Commands across processes: sent to the instance that does not own the portfolio, and
surviving a SIGKILL of the owner between the API's 202 and the command's application."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import orjson

from service.api.auth import sha256_hex
from service.settings import Settings
from tests.kafka_support import fresh_settings
from tests.process_support import ServiceProcess, http_request

TOKEN = "process-test-admin-token"
TOKENS_ENV = orjson.dumps([{"name": "ops", "role": "admin", "sha256": sha256_hex(TOKEN)}]).decode()


def instance(settings: Settings, log: Path, name: str, **env: str) -> ServiceProcess:
    """An instance whose group member id sorts by ``name``: with one allocation partition the
    round-robin assignor gives it to the first (member ids start with the client id)."""
    return ServiceProcess(
        settings,
        log,
        REBALANCER_CLIENT_ID=f"{name}-rebalancer",
        REBALANCER_API__TOKENS=TOKENS_ENV,
        **env,
    )


async def api(service: ServiceProcess, method: str, path: str, body: Any = None) -> Any:
    payload = None if body is None else orjson.dumps(body)
    status, _, raw = await http_request(service.port, method, path, token=TOKEN, body=payload)
    return status, orjson.loads(raw)


async def applied(service: ServiceProcess, command_id: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await api(service, "GET", f"/v1/commands/{command_id}")
        if status == 200 and body["status"] != "accepted":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"command {command_id} not decided in {timeout}s: {body}")
        await asyncio.sleep(0.1)


async def test_a_command_sent_to_the_other_instance_is_applied_by_the_owner(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = fresh_settings(bootstrap_servers, topic_partitions=1)
    owner = instance(settings, tmp_path / "a.log", "a")
    other = instance(settings, tmp_path / "b.log", "b")
    try:
        await owner.ready()
        await other.ready()
        status, accepted = await api(
            other, "POST", "/v1/portfolios/default/pause", {"reason": "two instances"}
        )
        assert status == 202
        command_id = accepted["command_id"]
        for service in (other, owner):
            found = await applied(service, command_id)
            assert (found["status"], found["detail"]) == (
                "applied",
                "portfolio default: active -> paused",
            )
            status, view = await api(service, "GET", "/v1/portfolios/default")
            assert (status, view["trading"]["mode"]) == (200, "paused")
    finally:
        owner.stop()
        other.stop()
    assert f"command {command_id} (pause by ops) applied" in owner.output()
    assert f"command {command_id}" not in other.output()


async def test_a_command_survives_a_sigkill_between_its_202_and_its_application(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    settings = fresh_settings(bootstrap_servers, topic_partitions=1)
    doomed = instance(settings, tmp_path / "a.log", "a", REBALANCER_FAULT_KILL_AT="command_read")
    other = instance(settings, tmp_path / "b.log", "b")
    restarted = None
    try:
        await doomed.ready()
        await other.ready()
        status, accepted = await api(
            other, "POST", "/v1/portfolios/default/halt", {"reason": "before a crash"}
        )
        assert status == 202
        command_id = accepted["command_id"]
        # the owner reads it and dies before anything of it is written
        assert await doomed.exited() == -signal.SIGKILL
        assert "killing this process at command_read" in doomed.output()
        # the other instance takes the partition over and applies it, once
        found = await applied(other, command_id, timeout=90)
        assert (found["status"], found["detail"]) == (
            "applied",
            "portfolio default: active -> halted",
        )
        restarted = instance(settings, tmp_path / "a2.log", "a")
        await restarted.ready()
        assert (await applied(restarted, command_id))["status"] == "applied"
    finally:
        other.stop()
        if restarted is not None:
            restarted.stop()
    assert other.output().count(f"command {command_id} (halt by ops) applied") == 1
