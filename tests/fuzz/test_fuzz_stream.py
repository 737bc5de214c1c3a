"""The fuzz corpus against the running service on a real broker: a few thousand mixed messages
on both input topics, with plannable events among them (issue 11).

Asserted: the service never stops consuming; every message built to be invalid is
dead-lettered exactly once, with a reason; nothing is dead-lettered twice; every plannable
event is carried out by exactly one plan; no intent carries a null or non-finite number.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from service.app import RebalancerApp
from tests.fuzz.fuzz_messages import hostile_corpus
from tests.kafka_support import Tail, allow_large_messages, fresh_settings
from tests.stream.test_stream_service import btc, snapshot

MESSAGES = 3_000
PLANNABLE = 200
NUMBER_FIELDS = ("current_qty", "target_qty", "delta_qty", "mark", "notional")


def plannable_events(seed: int) -> list[dict[str, Any]]:
    """World moves the service must plan: worlds the test seeds, befores given, sums <= 1."""
    r = random.Random(seed)
    out = []
    for i in range(PLANNABLE):
        world = r.choice(["fa", "fb", "fc"])
        out.append(
            {
                "type": "world_allocations_changed",
                "event_id": f"plannable-{i}",
                "portfolio_id": "fuzz",
                "occurred_at": 1_000 + i,
                "total_equity": 1_000_000.0,
                "world_alloc_before": {world: round(r.uniform(0.05, 0.3), 4)},
                "world_alloc_after": {world: round(r.uniform(0.05, 0.3), 4)},
            }
        )
    return out


def non_finite_numbers(intent: dict[str, Any]) -> list[str]:
    bad = []
    for name in NUMBER_FIELDS:
        value = intent.get(name)
        if not isinstance(value, int | float) or not math.isfinite(value):
            bad.append(f"{name}={value!r}")
    for part in intent.get("strategy_breakdown", []):
        value = part.get("delta_qty")
        if not isinstance(value, int | float) or not math.isfinite(value):
            bad.append(f"breakdown {part!r}")
    return bad


async def test_a_hostile_stream_never_stops_the_service(bootstrap_servers: str) -> None:
    settings = fresh_settings(bootstrap_servers, plan_settle_timeout_ms=1)
    t = settings.topics
    # a record needs a key or a value: Kafka clients cannot send one with neither
    corpus = [c for c in hostile_corpus(seed=11, n=MESSAGES + 100) if c[2] or c[3] is not None]
    corpus = corpus[:MESSAGES]
    plannable = plannable_events(seed=11)
    app = RebalancerApp(settings)
    await app.start()
    await allow_large_messages(bootstrap_servers, t.allocations, t.snapshots)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        enable_idempotence=False,
        max_request_size=8 * 1024 * 1024,
        linger_ms=5,
    )
    await producer.start()
    try:
        for world in ("fa", "fb", "fc"):
            value = orjson.dumps(snapshot(world, "s1", [btc(1.0)], as_of=app.clock()))
            await producer.send_and_wait(t.snapshots, key=f"{world}|s1".encode(), value=value)
        # interleave the plannable events with the corpus, in a fixed order
        r = random.Random(7)
        slots = sorted(r.sample(range(MESSAGES + PLANNABLE), PLANNABLE))
        items: list[tuple[str, bytes | None, bytes | None, str, bool | None]] = []
        corpus_iter = iter(corpus)
        plannable_iter = iter(plannable)
        for i in range(MESSAGES + PLANNABLE):
            if slots and slots[0] == i:
                slots.pop(0)
                event = next(plannable_iter)
                items.append((t.allocations, b"fuzz", orjson.dumps(event), "plannable", True))
            else:
                topic_kind, kind, key, value, expected = next(corpus_iter)
                topic = t.allocations if topic_kind == "allocations" else t.snapshots
                items.append((topic, key, value, kind, expected))
        futures = [
            await producer.send(topic, key=key, value=value) for topic, key, value, *_ in items
        ]
        metas = await asyncio.gather(*futures)
        where = {
            (topic, meta.partition, meta.offset): (kind, expected)
            for (topic, _, _, kind, expected), meta in zip(items, metas, strict=True)
        }
        invalid = {k for k, (_, expected) in where.items() if expected is False}
        servers = bootstrap_servers
        async with (
            Tail(servers, t.dead_letters) as dlq,
            Tail(servers, t.plans) as plans,
            Tail(servers, t.intents) as intents,
        ):

            def lettered(records: list[Any]) -> set[tuple[str, int, int]]:
                return {(d["topic"], d["partition"], d["offset"]) for d in records}

            await dlq.until(lambda rs: invalid <= lettered(rs), timeout=180)
            wanted = {e["event_id"] for e in plannable}

            def carried(records: list[Any]) -> set[str]:
                return {
                    e
                    for rec in records
                    if rec["status"] == "planned"
                    for e in rec["coalesced_event_ids"]
                }

            await plans.until(lambda rs: wanted <= carried(rs), timeout=180)
            await app.snapshot_reader.caught_up()
            await dlq.quiet(2.0)
            await plans.quiet(0.5)
            await intents.quiet(1.0)
            assert app._tasks
            assert not any(task.done() for task in app._tasks)

            counts = Counter((d["topic"], d["partition"], d["offset"]) for d in dlq.records)
            assert [k for k, n in counts.items() if n > 1] == []
            assert all(d["error_message"] and d["error_class"] for d in dlq.records)
            assert set(counts) <= set(where)
            lettered_kinds = Counter(where[k][0] for k in counts)
            plannable_lettered = [k for k in counts if where[k][0] == "plannable"]
            assert plannable_lettered == []

            planned = [rec for rec in plans.records if rec["status"] == "planned"]
            per_event = Counter(e for rec in planned for e in rec["coalesced_event_ids"])
            assert {e: per_event[e] for e in wanted if per_event[e] != 1} == {}

            bad_intents = {i["intent_id"]: non_finite_numbers(i) for i in intents.records}
            assert {k: v for k, v in bad_intents.items() if v} == {}
            published = {i["intent_id"] for i in intents.records}
            assert {i for rec in planned for i in rec["intent_ids"]} <= published

            kinds = Counter(kind for kind, _ in where.values())
            print(
                f"\nfuzz stream: {len(items)} messages of {len(kinds)} kinds; "
                f"{len(invalid)} built invalid, {len(counts)} dead-lettered "
                f"({len(lettered_kinds)} kinds); {len(planned)} plans carrying "
                f"{len(per_event)} events ({len(wanted)} plannable); "
                f"{len(intents.records)} intents"
            )
    finally:
        await producer.stop()
        await app.stop()
