"""``rebalancer demo``: the whole stream service on a laptop, in one command.

Starts the embedded broker and the service, publishes snapshots for two worlds and three
strategies that share symbols, then a world move (alpha 0.3 -> 0.2) and a strategy weight
update (beta), prints the netted intents as they arrive on the execution topic, and stops.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumers.embedded_broker import EmbeddedBroker

from .app import RebalancerApp
from .settings import Settings, Topics

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
        "lot_size_by_symbol": {"BTCUSDT": 0.001, "ETHUSDT": 0.01, "SOLUSDT": 0.1},
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


async def run_demo(out: TextIO, timeout: float = 60.0) -> int:
    """Run the demo; returns the number of intents received."""
    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        print(f"embedded broker on {servers} (in memory)", file=out)
        tag = uuid.uuid4().hex[:6]
        settings = Settings(
            bootstrap_servers=servers,
            group_id=f"demo-{tag}",
            http_port=0,
            release_check_interval_ms=100,
            topics=Topics(),
        )
        app = RebalancerApp(settings)
        await app.start()
        print(f"service ready; metrics on http://127.0.0.1:{app.http.port}/metrics", file=out)
        producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=False)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=servers, group_id=None, auto_offset_reset="earliest"
        )
        await producer.start()
        await consumer.start()
        received = 0
        try:
            topics = settings.topics
            parts = [
                TopicPartition(topics.intents, p)
                for p in consumer.partitions_for_topic(topics.intents) or []
            ]
            consumer.assign(parts)
            for snap in SNAPSHOTS:
                key = f"{snap['world_id']}|{snap['strategy_id']}".encode()
                await producer.send_and_wait(topics.snapshots, key=key, value=orjson.dumps(snap))
            await app.snapshot_reader.caught_up()
            print(f"published {len(SNAPSHOTS)} snapshots (worlds alpha and beta)", file=out)
            for event in EVENTS:
                await producer.send_and_wait(
                    topics.allocations, key=b"default", value=orjson.dumps(event)
                )
                print(f"\nevent {event['event_id']} ({event['type']}):", file=out)
                expected = {"demo-world-move": 3, "demo-weights": 2}[event["event_id"]]
                got = 0
                deadline = time.monotonic() + timeout
                while got < expected and time.monotonic() < deadline:
                    batch = await consumer.getmany(timeout_ms=200)
                    for records in batch.values():
                        for record in records:
                            intent = orjson.loads(record.value)
                            print(_describe(intent), file=out)
                            got += intent["event_id"] == event["event_id"]
                received += got
            print(f"\n{received} intents; stopping", file=out)
        finally:
            await consumer.stop()
            await producer.stop()
            await app.stop()
    return received


def main(out: TextIO) -> int:
    received = asyncio.run(run_demo(out))
    return 0 if received == 5 else 1
