"""Creating the topics the service reads and writes, when they do not exist yet."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from service.settings import Settings


async def ensure_topics(settings: Settings, bootstrap_servers: str) -> list[str]:
    """Create missing topics; the changelog is compacted and has one partition. Returns the
    names created."""
    topics = settings.topics
    wanted = {
        topics.snapshots: settings.topic_partitions,
        topics.allocations: settings.topic_partitions,
        topics.intents: settings.topic_partitions,
        topics.plans: settings.topic_partitions,
        topics.dead_letters: 1,
        topics.changelog: 1,
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id=settings.client_id)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name,
                partitions,
                settings.topic_replication,
                topic_configs={"cleanup.policy": "compact"} if name == topics.changelog else {},
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
