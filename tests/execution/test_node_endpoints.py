"""An execution node watched from outside: /metrics, /healthz and /readyz over real HTTP, and
its heartbeats on the nodes' topic, against a real broker and the paper venue."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.execution_node import ExecutionNode, NodeOptions, NodeStats
from consumers.node_metrics import NodeGauges, NodeMetrics
from consumers.topics import ensure_topics
from consumers.venues import PaperConfig, PaperVenue
from service.messages import NodeHeartbeat, PlanFills
from service.node_app import NodeApp
from service.settings import Settings
from tests.execution.test_execution_node import NOW, intent
from tests.kafka_support import Feed, Tail, fresh_settings, settings_env
from tests.process_support import ROOT, http_request


def node_app(settings: Settings, venue: PaperVenue, heartbeat_ms: int = 200) -> NodeApp:
    t = settings.topics
    node = ExecutionNode(
        settings.bootstrap_servers or "",
        snapshots_topic=t.snapshots,
        intents_topic=t.intents,
        venue=venue,
        options=NodeOptions(
            group_id=f"exec-{uuid.uuid4().hex[:6]}",
            heartbeat_ms=200,
            work_interval_ms=20,
            nodes_topic=t.nodes,
            node_heartbeat_ms=heartbeat_ms,
            node_id=f"paper-{uuid.uuid4().hex[:6]}",
        ),
    )
    return NodeApp(node, "127.0.0.1", 0)


async def get(app: NodeApp, path: str) -> tuple[int, str]:
    status, _, body = await http_request(app.port, "GET", path)
    return status, body.decode()


async def scrape(app: NodeApp) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and labels."""
    status, text = await get(app, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen in {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def settings(bootstrap_servers: str) -> Settings:
    s = fresh_settings(bootstrap_servers)
    await ensure_topics(s, bootstrap_servers)
    return s


async def seed(feed: Feed, settings: Settings) -> None:
    """World w's strategies s1 and s2 hold 0.6 and 0.9 BTC at the paper venue."""
    for strategy, qty in (("s1", 0.6), ("s2", 0.9)):
        await feed.snapshot(
            settings.topics.snapshots,
            {
                "world_id": "w",
                "strategy_id": strategy,
                "as_of": NOW - 60_000,
                "positions": [{"venue": "paper", "symbol": "BTC", "qty": qty, "mark": 100.0}],
            },
        )


def paper(**config: Any) -> PaperVenue:
    venue = PaperVenue("paper", PaperConfig(**config))
    venue.seed_position("w", "BTC", 1.5)
    return venue


async def test_a_node_serves_its_endpoints_and_its_metrics_follow_a_plan(
    settings: Settings,
) -> None:
    servers, t = settings.bootstrap_servers or "", settings.topics
    async with Feed(servers) as feed, Tail(servers, t.nodes) as beats:
        await seed(feed, settings)
        app = node_app(settings, paper(reject_rate=0.6, seed=3))
        port = await app.start_http()
        try:
            assert port > 0
            assert app.node.endpoint == f"127.0.0.1:{port}"
            assert await get(app, "/healthz") == (200, "ok\n")
            assert (await get(app, "/readyz"))[0] == 503  # not restored, not in its group
            before = await scrape(app)
            assert before[("rebalancer_node_ready", ())] == 0
            await app.start()
            assert await get(app, "/readyz") == (200, "ready\n")
            before = await scrape(app)
            assert before[("rebalancer_node_ready", ())] == 1
            assert before[("rebalancer_node_orders_total", ())] == 0
            assert before[("rebalancer_node_time_to_converge_seconds_count", ())] == 0

            await feed.send(t.intents, "paper|BTC", intent("p1"))
            residual = (
                "rebalancer_node_residual",
                (("symbol", "BTC"), ("venue", "paper"), ("world", "w")),
            )

            async def converged() -> dict[Any, float] | None:
                m = await scrape(app)
                done = m[("rebalancer_node_time_to_converge_seconds_count", ())] == 1
                return m if done and m.get(residual) == pytest.approx(0.0) else None

            after = await until(converged, "plan p1 converged in the node's metrics")
            venue = app.node.venue
            assert isinstance(venue, PaperVenue)
            assert venue.rejections, "the seed was chosen to reject at least once"
            assert after[("rebalancer_node_orders_total", ())] == len(venue.placed)
            assert after[("rebalancer_node_fills_total", ())] == 1
            refused = ("rebalancer_node_rejections_total", (("reason", "venue_refused"),))
            assert after[refused] == len(venue.rejections)
            assert after[("rebalancer_node_intents_total", (("outcome", "accepted"),))] == 1
            assert after[("rebalancer_node_plans_converged_total", ())] == 1
            assert after[("rebalancer_node_time_to_converge_seconds_sum", ())] > 0
            assert after[("rebalancer_node_plans_in_progress", ())] == 0
            assert after[("rebalancer_node_open_orders", ())] == 0
            lags = [v for (name, _), v in after.items() if name == "rebalancer_node_intent_lag"]
            assert lags, "the node reports the lag of its intent partitions"
            assert all(v == 0 for v in lags)

            # its heartbeats on the nodes' topic say the same (the topic also carries its
            # fill reports, which have a kind)
            def heartbeats(records: list[Any]) -> list[Any]:
                return [r for r in records if r and "kind" not in r]

            def counted(records: list[Any]) -> bool:
                converged = any(r["counts"]["plans_converged"] == 1 for r in heartbeats(records))
                return converged and any(r and "kind" in r for r in records)

            records = await beats.until(counted)
            last = heartbeats(records)[-1]
            beat = NodeHeartbeat.model_validate_json(orjson.dumps(last))
            assert (beat.node_id, beat.venue, beat.ready) == (app.node.node_id, "paper", True)
            assert beat.endpoint == f"127.0.0.1:{port}"
            assert beat.plans == []
            assert beat.counts.fills == 1
            assert beat.counts.rejections == len(venue.rejections)
            # and its fill report: p1's one fill, free at a venue with no fee or slippage
            (fills,) = [r for r in records if r and r.get("kind") == "plan_fills"]
            report = PlanFills.model_validate_json(orjson.dumps(fills))
            assert (report.node_id, report.plan_id, report.fills) == (beat.node_id, "p1", 1)
            assert (report.fees, report.slippage) == (0.0, 0.0)
        finally:
            await app.stop()
        stopped = await beats.until(lambda records: any(r["stopped"] for r in heartbeats(records)))
        assert [r["ready"] for r in heartbeats(stopped) if r["stopped"]] == [False]


async def test_rebalancer_execute_logs_its_free_port_and_serves_there(
    settings: Settings, tmp_path: Path
) -> None:
    """``rebalancer execute`` with execution.http_port 0 binds a free port and says which."""
    log = tmp_path / "node.log"
    env = {**os.environ, **settings_env(settings)}
    command = [sys.executable, "-m", "service.cli", "execute", "--venue", "paper"]
    command += ["--node-id", "paper-cli", "--log-level", "info"]
    with open(log, "ab") as out:
        node = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:

        async def port() -> int | None:
            found = re.search(r"/readyz on http://127\.0\.0\.1:(\d+)", log.read_text())
            return int(found.group(1)) if found else None

        bound = await until(port, "the node's port in its log", timeout=60)

        async def ready() -> bool:
            return (await http_request(bound, "GET", "/readyz"))[0] == 200

        await until(ready, "/readyz 200", timeout=60)
        status, _, body = await http_request(bound, "GET", "/metrics")
        assert status == 200
        assert b"rebalancer_node_orders_total 0.0" in body
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=30) == 0, log.read_text()[-3000:]


def test_docs_list_every_node_metric() -> None:
    stats = NodeStats(
        intents={"accepted": 1}, rejections_by_reason={"lot_size": 1}, intent_lag={0: 0}
    )
    gauges = NodeGauges(True, 0, 0, 0, {("w", "paper", "BTC"): 0.0}, 1_000, 2_000)
    metrics = NodeMetrics(stats, lambda: gauges)
    names = {f.name for f in metrics.registry.collect()}
    documented = (ROOT / "docs" / "operations.md").read_text()
    assert names, "no metrics"
    assert [n for n in sorted(names) if f"`{n}" not in documented] == []
