"""``rebalancer demo``: the whole loop on a laptop, in one command.

Starts the embedded broker, the service and one execution node per venue (binance, okx) on
paper venues, publishes snapshots for two worlds and three strategies that share symbols,
then a world move (alpha 0.3 -> 0.2) and a strategy weight update (beta). It prints each
plan's intents, the orders and fills on the venues and the snapshots that report the plan
reached, and ends by comparing every traded position with its target.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumers.clients import partitions_of
from consumers.embedded_broker import EmbeddedBroker
from consumers.execution_node import ExecutionNode, NodeOptions
from consumers.topics import ensure_topics
from consumers.venues import Order, OrderStatus, OrderUpdate, PaperConfig, PaperVenue

from .api.auth import sha256_hex
from .app import RebalancerApp
from .settings import ApiSettings, ApiToken, CostSettings, Settings, Topics
from .state.snapshots import SnapshotTable

NOW = 1_795_340_000_000

SNAPSHOTS: list[dict[str, Any]] = [
    {
        "world_id": "alpha",
        "strategy_id": "trend",
        "as_of": NOW,
        "positions": [
            {"venue": "binance", "symbol": "BTCUSDT", "qty": 1.2, "mark": 60_000.0},
            {"venue": "binance", "symbol": "ETHUSDT", "qty": 10.0, "mark": 3_000.0},
        ],
    },
    {
        "world_id": "alpha",
        "strategy_id": "carry",
        "as_of": NOW,
        "positions": [
            {"venue": "binance", "symbol": "BTCUSDT", "qty": -0.3, "mark": 60_000.0},
            {"venue": "okx", "symbol": "SOLUSDT", "qty": 200.0, "mark": 150.0},
        ],
    },
    {
        "world_id": "beta",
        "strategy_id": "momentum",
        "as_of": NOW,
        "positions": [
            {"venue": "binance", "symbol": "BTCUSDT", "qty": 0.5, "mark": 60_000.0},
            {"venue": "binance", "symbol": "ETHUSDT", "qty": 4.0, "mark": 3_000.0},
        ],
    },
]

VENUES = ("binance", "okx")
LOTS = {"BTCUSDT": 0.001, "ETHUSDT": 0.01, "SOLUSDT": 0.1}
DEMO_FEE_BPS = 5.0
"""What the demo's paper venues charge per fill (bps of notional)."""

EVENTS: list[dict[str, Any]] = [
    {
        "type": "world_allocations_changed",
        "event_id": "demo-world-move",
        "occurred_at": NOW + 1_000,
        "total_equity": 1_000_000.0,
        "world_alloc_before": {"alpha": 0.3, "beta": 0.2},
        "world_alloc_after": {"alpha": 0.2, "beta": 0.2},
        "strategy_alloc_before_total": {
            "alpha": {"trend": 0.2, "carry": 0.1},
            "beta": {"momentum": 0.2},
        },
        "strategy_alloc_after_total": {"beta": {"momentum": 0.2}},
        "min_trade_notional": 10.0,
        "lot_size_by_symbol": LOTS,
    },
    {
        "type": "strategy_weights_updated",
        "event_id": "demo-weights",
        "occurred_at": NOW + 2_000,
        "world_id": "beta",
        "strategy_alloc_after_total": {"momentum": 0.15},
    },
]


def _describe(intent: dict[str, Any]) -> str:
    key = f"{intent['venue'] or '-'}:{intent['symbol']}"
    breakdown = ", ".join(
        f"{b['strategy_id']} {b['delta_qty']:+g}" for b in intent["strategy_breakdown"]
    )
    flags = " reduce-only" if intent["reduce_only"] else ""
    return (
        f"  {intent['world_id'] or '(shared)':6} {key:16} {intent['leg']:6} "
        f"{intent['current_qty']:>8g} -> {intent['target_qty']:<8g} "
        f"delta {intent['delta_qty']:+g}{flags}  [{breakdown}]"
    )


def _trace(venue: str, lines: list[str]) -> Callable[[Order | OrderUpdate], None]:
    """What a paper venue does, as lines for the demo to print in order."""

    def say(item: Order | OrderUpdate) -> None:
        if isinstance(item, Order):
            flags = " reduce-only" if item.reduce_only else ""
            lines.append(f"    [{venue}] order {item.account}:{item.symbol} {item.qty:+g}{flags}")
        elif item.fill_qty:
            lines.append(
                f"    [{venue}] fill  {item.order.account}:{item.order.symbol} "
                f"{item.fill_qty:+g} @ {item.price:g} ({item.status.value})"
            )
        elif item.status is OrderStatus.REJECTED:
            lines.append(f"    [{venue}] rejected: {item.reason}")

    return say


class _Loop:
    """The demo's view of the topics: intents, plan records and snapshots as they arrive."""

    def __init__(self, servers: str, topics: Topics) -> None:
        self.topics = topics
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=servers, group_id=None, auto_offset_reset="earliest"
        )
        self.intents: list[dict[str, Any]] = []
        self.plans: list[dict[str, Any]] = []
        self.snapshots: dict[tuple[str, str], dict[str, Any]] = {}
        self.venue_lines: list[str] = []
        self.show_venues = False
        """Venue lines wait until the plan's intents are printed (nodes read them sooner)."""

    async def start(self) -> None:
        await self.consumer.start()
        t = self.topics
        self.consumer.assign(
            [
                TopicPartition(topic, p)
                for topic in (t.intents, t.plans, t.snapshots)
                for p in await partitions_of(self.consumer, topic)
            ]
        )

    async def until(self, done: Callable[[], bool], out: TextIO, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self._flush(out)
            if time.monotonic() > deadline:
                raise TimeoutError("the demo did not converge in time")
            batch = await self.consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                for record in records:
                    value: Any = orjson.loads(record.value) if record.value else None
                    if tp.topic == self.topics.intents:
                        self.intents.append(value)
                        print(_describe(value), file=out)
                    elif tp.topic == self.topics.plans:
                        self.plans.append(value)
                    elif value is not None:
                        key = (value["world_id"], value["strategy_id"])
                        before = self.snapshots.get(key, {}).get("converged_plan_id")
                        self.snapshots[key] = value
                        if value.get("converged_plan_id") not in (None, before):
                            rows = ", ".join(
                                f"{p['venue']}:{p['symbol']} {p['qty']:g}"
                                for p in value["positions"]
                            )
                            self.venue_lines.append(
                                f"    snapshot {key[0]}/{key[1]} reached plan "
                                f"{value['converged_plan_id'][:8]}: {rows}"
                            )
        self._flush(out)

    def _flush(self, out: TextIO) -> None:
        if self.show_venues:
            for line in self.venue_lines:
                print(line, file=out)
            self.venue_lines.clear()

    def converged(self, plan_id: str) -> bool:
        plan = next((p for p in self.plans if p["plan_id"] == plan_id), None)
        if plan is None:
            return False
        owners = {
            (w, b["strategy_id"])
            for w, world in plan["per_world"].items()
            for d in world["deltas"]
            for b in d["strategy_breakdown"]
            if b["delta_qty"] != 0
        }
        return all(self.snapshots.get(o, {}).get("converged_plan_id") == plan_id for o in owners)

    async def stop(self) -> None:
        await self.consumer.stop()


async def run_demo(
    out: TextIO,
    timeout: float = 60.0,
    *,
    ui: asyncio.Event | None = None,
    http_port: int = 0,
) -> int:
    """Run the demo; returns the number of keys whose final position differs from its
    target (0 when the loop closed). With ``ui``, everything keeps running after the
    scenario until that event is set (Ctrl-C), for a person to click through the dashboard."""
    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        print(f"embedded broker on {servers} (in memory)", file=out)
        tag = uuid.uuid4().hex[:6]
        token = secrets.token_urlsafe(18)  # the demo's own admin token, for the dashboard
        settings = Settings(
            bootstrap_servers=servers,
            group_id=f"demo-{tag}",
            http_port=http_port,
            release_check_interval_ms=100,
            topics=Topics(),
            costs=CostSettings(fee_bps=2.0, half_spread_bps=3.0),  # for the dashboard's estimates
            api=ApiSettings(tokens=[ApiToken(name="demo", role="admin", sha256=sha256_hex(token))]),
        )
        await ensure_topics(settings, servers)
        topics = settings.topics
        producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=False)
        await producer.start()
        for snap in SNAPSHOTS:
            key = f"{snap['world_id']}|{snap['strategy_id']}".encode()
            await producer.send_and_wait(topics.snapshots, key=key, value=orjson.dumps(snap))
        print(f"published {len(SNAPSHOTS)} snapshots (worlds alpha and beta)", file=out)
        app = RebalancerApp(settings)
        await app.start()
        base = f"http://127.0.0.1:{app.http.port}"
        print(f"service ready; metrics on {base}/metrics", file=out)
        print(f"dashboard: {base}/ (sign in with the demo's admin token {token})", file=out)
        venues: dict[str, PaperVenue] = {}
        nodes: list[ExecutionNode] = []
        loop = _Loop(servers, topics)
        mismatches = -1
        try:
            for name in VENUES:
                venue = venues[name] = PaperVenue(
                    name,
                    PaperConfig(
                        lot_size_by_symbol=LOTS,
                        min_notional=10.0,
                        fill_model="partial",
                        partial_slices=2,
                        fill_interval_ms=50,
                        fee_bps=DEMO_FEE_BPS,  # the dashboard's realised cost per plan
                    ),
                )
                venue.listener = _trace(name, loop.venue_lines)
                node = ExecutionNode(
                    servers,
                    snapshots_topic=topics.snapshots,
                    intents_topic=topics.intents,
                    venue=venue,
                    options=NodeOptions(
                        group_id=f"demo-{tag}-execution-{name}", nodes_topic=topics.nodes
                    ),
                    on_restored=partial(_seed, venue),
                )
                await node.start()
                nodes.append(node)
            print(f"execution nodes ready on paper venues: {', '.join(VENUES)}", file=out)
            await loop.start()
            for event in EVENTS:
                await producer.send_and_wait(
                    topics.allocations, key=b"default", value=orjson.dumps(event)
                )
                print(f"\nevent {event['event_id']} ({event['type']}):", file=out)

                def planned(event_id: str = event["event_id"]) -> dict[str, Any] | None:
                    return next(
                        (
                            p
                            for p in loop.plans
                            if p["status"] == "planned" and event_id in p["coalesced_event_ids"]
                        ),
                        None,
                    )

                loop.show_venues = False
                await loop.until(lambda: planned() is not None, out, timeout)
                plan = planned()
                assert plan is not None
                plan_id, n_intents = plan["plan_id"], len(plan["intent_ids"])
                await loop.until(partial(_all_seen, loop, plan_id, n_intents), out, timeout)
                print(f"  plan {plan_id[:8]}: {n_intents} intents; on the venues:", file=out)
                loop.show_venues = True
                await loop.until(partial(loop.converged, plan_id), out, timeout)
                print(f"  plan {plan_id[:8]} reached", file=out)
            mismatches = _final_report(loop, venues, out)
            if ui is not None:
                print(f"\nstill running for the dashboard at {base}/ ; Ctrl-C stops", file=out)
                out.flush()
                await ui.wait()
        finally:
            await loop.stop()
            for node in nodes:
                await node.stop()
            for venue in venues.values():
                await venue.close()
            await producer.stop()
            await app.stop()
    return mismatches


def _seed(venue: PaperVenue, table: SnapshotTable) -> None:
    venue.seed_from(table.snapshots())


def _all_seen(loop: _Loop, plan_id: str, n: int) -> bool:
    return sum(1 for i in loop.intents if i["plan_id"] == plan_id) >= n


def _final_report(loop: _Loop, venues: dict[str, PaperVenue], out: TextIO) -> int:
    """Each traded key's venue position against its last plan's target."""
    targets: dict[tuple[str, str, str], float] = {}
    for intent in loop.intents:  # in arrival order: the last plan's final leg wins
        targets[(intent["world_id"], intent["venue"], intent["symbol"])] = intent["target_qty"]
    print("\nfinal positions (venue) against the last targets:", file=out)
    mismatches = 0
    for (world, venue, symbol), target in sorted(targets.items()):
        held = venues[venue].accounts.get(world, {}).get(symbol, 0.0)
        ok = abs(held - target) <= 1e-9 * max(1.0, abs(target))
        mismatches += not ok
        mark = "ok" if ok else "DIFFERS"
        print(f"  {world:6} {venue}:{symbol:9} {held:>10g}  target {target:<10g} {mark}", file=out)
    print("loop closed: every position is at its target" if not mismatches else "", file=out)
    return mismatches


def main(out: TextIO, *, ui: bool = False) -> int:
    """``rebalancer demo`` (``--ui``: keep running after the scenario until Ctrl-C)."""
    return 0 if asyncio.run(_main(out, ui)) == 0 else 1


async def _main(out: TextIO, ui: bool) -> int:
    if not ui:
        return await run_demo(out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run_demo(out, ui=stop)
