#!/usr/bin/env python3
"""Check that aiokafka can do, against a given Kafka, everything the service needs.

    .venv/bin/python deploy/kafka/smoke.py --bootstrap 127.0.0.1:9092

Kafka 4 removed old protocol versions (KIP-896), and aiokafka speaks only some
versions of each API, so a broker upgrade can break a client feature while
others keep working. Each check below is one feature the rebalancer relies on;
it prints PASS/FAIL per check and exits 0 only if all pass. Topic, group and
transactional ids are unique per run, so it can be repeated on one cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

PARTITIONS = 2


class Smoke:
    def __init__(self, bootstrap: str, replicas: int) -> None:
        self.bootstrap = bootstrap
        self.replicas = replicas
        run = uuid.uuid4().hex[:8]
        self.source = f"smoke-{run}-in"
        self.sink = f"smoke-{run}-out"
        self.group = f"smoke-{run}-group"
        self.txn_group = f"smoke-{run}-txn-group"
        self.txn_id = f"smoke-{run}-txn"
        self.sent: list[bytes] = []

    def consumer(self, *topics: str, **kw) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **kw,
        )

    async def drain(self, consumer: AIOKafkaConsumer, want: int, timeout: float = 20.0) -> list:
        """Records until `want` arrived, or whatever came within `timeout` seconds."""
        got: list = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < want and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                got.extend(records)
        return got

    async def admin_create_topics(self) -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(t, PARTITIONS, self.replicas) for t in (self.source, self.sink)]
            )
            # Brokers learn of new topics asynchronously: wait until the one
            # asked lists both.
            for _ in range(50):
                listed = await admin.list_topics()
                if {self.source, self.sink} <= set(listed):
                    break
                await asyncio.sleep(0.2)
        finally:
            await admin.close()
        assert {self.source, self.sink} <= set(listed), listed
        return f"{self.source}, {self.sink}: {PARTITIONS} partitions x {self.replicas} replicas"

    async def produce(self, idempotent: bool, count: int) -> str:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=idempotent
        )
        await producer.start()
        try:
            for _ in range(count):
                i = len(self.sent)
                value = f"v{i}".encode()
                await producer.send_and_wait(
                    self.source, value, key=f"k{i}".encode(), partition=i % PARTITIONS
                )
                self.sent.append(value)
        finally:
            await producer.stop()
        return f"{count} records, acks=all, enable_idempotence={idempotent}"

    async def plain_produce(self) -> str:
        """What the service's producers use today."""
        return await self.produce(idempotent=False, count=4)

    async def idempotent_produce(self) -> str:
        return await self.produce(idempotent=True, count=6)

    async def group_consume_commit(self) -> str:
        consumer = self.consumer(self.source, group_id=self.group)
        await consumer.start()
        try:
            got = await self.drain(consumer, len(self.sent))
            assert sorted(r.value for r in got) == sorted(self.sent), got
            await consumer.commit()
            committed = {
                p: await consumer.committed(TopicPartition(self.source, p))
                for p in range(PARTITIONS)
            }
        finally:
            await consumer.stop()
        assert sum(committed.values()) == len(self.sent), committed
        return f"group join, {len(got)} records, committed {committed}"

    async def end_offsets(self) -> str:
        consumer = self.consumer()
        await consumer.start()
        try:
            tps = [TopicPartition(self.source, p) for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        assert sum(ends.values()) == len(self.sent), ends
        return f"{ {tp.partition: o for tp, o in ends.items()} }"

    async def transactions(self) -> str:
        """Consume-transform-produce in one transaction, plus an aborted one."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            transactional_id=self.txn_id,
            enable_idempotence=True,
            acks="all",
        )
        consumer = self.consumer(
            self.source, group_id=self.txn_group, isolation_level="read_committed"
        )
        await producer.start()
        await consumer.start()
        try:
            records = await self.drain(consumer, len(self.sent))
            assert len(records) == len(self.sent), records
            offsets = {}
            await producer.begin_transaction()
            for r in records:
                await producer.send(self.sink, r.value.upper(), partition=r.partition)
                offsets[TopicPartition(r.topic, r.partition)] = r.offset + 1
            await producer.send_offsets_to_transaction(offsets, self.txn_group)
            await producer.commit_transaction()

            await producer.begin_transaction()
            await producer.send(self.sink, b"ABORTED", partition=0)
            await producer.abort_transaction()
            committed = {tp.partition: await consumer.committed(tp) for tp in offsets}
        finally:
            await consumer.stop()
            await producer.stop()
        assert committed == {tp.partition: o for tp, o in offsets.items()}, committed

        reader = self.consumer(self.sink, isolation_level="read_committed")
        await reader.start()
        try:
            got = await self.drain(reader, len(self.sent), timeout=10.0)
            got += await self.drain(reader, 1, timeout=1.0)  # an aborted record would show up now
            tps = [TopicPartition(self.sink, p) for p in range(PARTITIONS)]
            lso = await reader.end_offsets(tps)
        finally:
            await reader.stop()
        values = sorted(r.value for r in got)
        assert values == sorted(v.upper() for v in self.sent), values
        return (
            f"begin/send/send_offsets_to_transaction/commit + abort; read_committed saw "
            f"{len(got)} committed records, none aborted; group offsets {committed}; "
            f"end offsets {sum(lso.values())} (records + markers)"
        )


async def run(bootstrap: str, replicas: int) -> int:
    smoke = Smoke(bootstrap, replicas)
    checks = [
        smoke.admin_create_topics,
        smoke.plain_produce,
        smoke.idempotent_produce,
        smoke.group_consume_commit,
        smoke.end_offsets,
        smoke.transactions,
    ]
    failed = 0
    for check in checks:
        name = check.__name__
        try:
            detail = await asyncio.wait_for(check(), timeout=60)
            print(f"PASS {name}: {detail}", flush=True)
        except Exception as exc:  # report every check, not just the first failure
            failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc(file=sys.stderr)
    print(f"{len(checks) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True, help="host:port[,host:port...]")
    ap.add_argument("--replicas", type=int, default=1, help="replication factor of the test topics")
    args = ap.parse_args()
    return asyncio.run(run(args.bootstrap, args.replicas))


if __name__ == "__main__":
    sys.exit(main())
