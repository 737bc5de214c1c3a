"""Creating the topics the service reads and writes, when they do not exist yet."""

from __future__ import annotations

import contextlib

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from service.settings import Settings

from .clients import KafkaClients
from .producer import MAX_REQUEST_BYTES


async def ensure_topics(settings: Settings, servers: str | KafkaClients) -> list[str]:
    """Create missing topics; the changelog and the nodes' heartbeats are compacted and have
    one partition; the changelog and the plan topic take records as large as the producer
    sends (``LARGE_RECORDS``). Returns the names created."""
    topics = settings.topics
    wanted = {
        topics.snapshots: settings.topic_partitions,
        topics.allocations: settings.topic_partitions,
        topics.intents: settings.topic_partitions,
        topics.plans: settings.topic_partitions,
        topics.notifications: settings.topic_partitions,
        topics.dead_letters: 1,
        topics.changelog: 1,
        topics.nodes: 1,
    }
    compacted = {topics.changelog, topics.nodes}
    clients = (
        servers
        if isinstance(servers, KafkaClients)
        else KafkaClients(servers, settings.security, settings.client_id)
    )
    admin = clients.admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name,
                partitions,
                settings.topic_replication,
                topic_configs=_configs(
                    settings,
                    compacted=name in compacted,
                    large=name in (topics.changelog, topics.plans),
                ),
            )
            for name, partitions in wanted.items()
            if name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        return [t.name for t in new]
    finally:
        await admin.close()


LARGE_RECORDS = str(MAX_REQUEST_BYTES)
"""``max.message.bytes`` of the changelog and the plan topic. A plan's record and its
write-ahead grow with its keys (some 520 kB before compression at 10,000 positions with 200
traded keys), and Apache Kafka refuses a batch over 1 MB by default: a plan over the limit
could not be written ahead, and the event would fail on every restart."""


def _configs(settings: Settings, *, compacted: bool, large: bool) -> dict[str, str]:
    configs = {"cleanup.policy": "compact"} if compacted else {}
    if large:
        configs["max.message.bytes"] = LARGE_RECORDS
    if settings.topic_min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(settings.topic_min_insync_replicas)
    return configs


async def undersized_topics(settings: Settings, clients: KafkaClients) -> list[str]:
    """Why the changelog or the plan topic may refuse a large plan: one line per topic whose
    ``max.message.bytes`` is below ``LARGE_RECORDS`` (topics made by someone else, or before
    the service set it). Asked of Apache Kafka only: the embedded broker has no such limit."""
    if not clients.features.full_kafka:
        return []
    names = [settings.topics.changelog, settings.topics.plans]
    admin = clients.admin()
    await admin.start()
    try:
        wanted = {"max.message.bytes": None}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, wanted) for name in names]
        )
    finally:
        await admin.close()
    out = []
    for response in responses:
        # a topic the broker would not describe (no DescribeConfigs right) has no entries
        for _error, _message, _kind, name, entries in response.resources:
            for entry in entries:
                key, value = entry[0], entry[1]
                if key == "max.message.bytes" and value and int(value) < int(LARGE_RECORDS):
                    out.append(
                        f"topic {name} takes records up to {value} bytes "
                        f"(max.message.bytes): a plan whose write-ahead or record is larger "
                        f"after compression stops the service at its event; set it to "
                        f"{LARGE_RECORDS}"
                    )
    return sorted(out)
