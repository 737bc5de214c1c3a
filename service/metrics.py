"""Prometheus metrics of one service instance (SPEC 4), on a registry of its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


class SnapshotCounts(Protocol):
    """What the snapshot table counts as it goes (read at scrape time)."""

    applied: int
    stale: int
    deleted: int


class Metrics:
    """Every metric the service exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.events_consumed = Counter(
            "rebalancer_events_consumed", "Allocation events read.", registry=r
        )
        self.events_planned = Counter(
            "rebalancer_events_planned", "Allocation events carried out as a plan.", registry=r
        )
        self.events_held = Counter(
            "rebalancer_events_held",
            "Allocation events held (plan in flight, stale).",
            ["reason"],
            registry=r,
        )
        self.events_dead_lettered = Counter(
            "rebalancer_events_dead_lettered",
            "Input records sent to the dead-letter topic.",
            ["topic"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "rebalancer_events_duplicate", "Re-delivered events already applied.", registry=r
        )
        self.before_mismatch = Counter(
            "rebalancer_allocation_before_mismatch",
            "Events whose before allocation disagreed with the service's state.",
            registry=r,
        )
        self.intents_published = Counter(
            "rebalancer_intents_published", "Delta intents published.", registry=r
        )
        self.plans_published = Counter(
            "rebalancer_plans_published", "Plan records published.", ["status"], registry=r
        )
        self.plans_resumed = Counter(
            "rebalancer_plans_resumed",
            "Half-published plans finished after a restart.",
            registry=r,
        )
        self.notifications_delivered = Counter(
            "rebalancer_notifications_delivered",
            "Notifications a webhook accepted (2xx).",
            ["webhook"],
            registry=r,
        )
        self.notification_failures = Counter(
            "rebalancer_notification_failures",
            "Failed attempts to deliver a notification to a webhook (retried).",
            ["webhook"],
            registry=r,
        )
        self.notifications_dead_lettered = Counter(
            "rebalancer_notifications_dead_lettered",
            "Notifications a webhook never accepted, sent to the dead-letter topic.",
            ["webhook"],
            registry=r,
        )
        self.plan_latency = Histogram(
            "rebalancer_plan_latency_seconds",
            "From reading an event (or releasing held work) to its work written and its "
            "offset committed.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "rebalancer_consumer_lag",
            "Records behind the high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.state_snapshots = Gauge(
            "rebalancer_state_snapshots", "Snapshots in the table.", registry=r
        )
        self.state_positions = Gauge(
            "rebalancer_state_positions", "Position rows in the table.", registry=r
        )
        self.state_worlds = Gauge("rebalancer_state_worlds", "Worlds in the state.", registry=r)
        self.worlds_in_flight = Gauge(
            "rebalancer_worlds_in_flight", "Worlds with a plan not yet reached.", registry=r
        )
        self.worlds_held = Gauge(
            "rebalancer_worlds_held", "Worlds with held allocation changes.", registry=r
        )
        self.ready = Gauge("rebalancer_ready", "1 once state is restored.", registry=r)
        self.policy_evaluations = Counter(
            "rebalancer_policy_evaluations",
            "Policy evaluations of a world, by policy and outcome (triggered, in_band, ...).",
            ["policy", "outcome"],
            registry=r,
        )
        self.policy_triggers = Counter(
            "rebalancer_policy_triggers",
            "Policy events published to the allocation topic, by policy and trigger.",
            ["policy", "trigger"],
            registry=r,
        )
        self.commands_decided = Counter(
            "rebalancer_commands",
            "Operators' commands decided by this instance, by action and outcome.",
            ["action", "outcome"],
            registry=r,
        )
        self.worlds_trading = Gauge(
            "rebalancer_worlds_trading",
            "Worlds in the state by the trading mode that applies to them (owned portfolios).",
            ["mode"],
            registry=r,
        )
        self.policy_superseded = Counter(
            "rebalancer_policy_superseded",
            "Policy events dropped: measured before their world's latest plan.",
            registry=r,
        )
        self.release_refused = Counter(
            "rebalancer_release_refused",
            "Times held changes could not be planned on release (kept held; once per reason).",
            registry=r,
        )
        self.policy_cost_gated = Counter(
            "rebalancer_policy_cost_gated",
            "Policy corrections skipped by their rule's cost gate (cost above its share of "
            "the expected benefit), by policy.",
            ["policy"],
            registry=r,
        )
        self.policy_dropped = Counter(
            "rebalancer_policy_dropped",
            "Held policy corrections that could not be planned when released.",
            registry=r,
        )

    def count_snapshots(self, counts: SnapshotCounts) -> None:
        """Export the snapshot table's own counters (it counts per record far more cheaply
        than a metric can)."""
        self.registry.register(_SnapshotCounters(counts))


class _SnapshotCounters(Collector):
    def __init__(self, counts: SnapshotCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        c = self.counts
        yield CounterMetricFamily(
            "rebalancer_snapshots_applied", "Snapshots applied to the table.", value=c.applied
        )
        yield CounterMetricFamily(
            "rebalancer_snapshots_stale",
            "Snapshots ignored as older than the one held.",
            value=c.stale,
        )
        yield CounterMetricFamily(
            "rebalancer_snapshots_deleted", "Tombstones applied.", value=c.deleted
        )
