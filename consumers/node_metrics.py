"""Prometheus metrics of one execution node, on a registry of its own.

Counts are kept by the node as plain integers (``NodeStats``, cheap per order and fill) and
exported at scrape time; the time to converge is a histogram observed once per plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.execution import KeyId

from .order_desk import NodeStats

CONVERGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
"""Seconds from a plan's creation to this node reporting it converged."""


@dataclass(frozen=True)
class NodeGauges:
    """What the node is doing now, read at scrape time."""

    ready: bool
    open_orders: int
    keys_in_progress: int
    plans_in_progress: int
    residuals: dict[KeyId, float]
    started_at_ms: int
    last_heartbeat_ms: int | None


class NodeMetrics:
    """Every metric an execution node exports (``/metrics``)."""

    def __init__(self, stats: NodeStats, gauges: Callable[[], NodeGauges]) -> None:
        self.registry = CollectorRegistry()
        self.time_to_converge = Histogram(
            "rebalancer_node_time_to_converge_seconds",
            "From a plan's creation (its intents' created_at) to this node reporting it "
            "converged (every key of the plan, at every venue, at its target).",
            buckets=CONVERGE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_NodeCollector(stats, gauges))


class _NodeCollector(Collector):
    def __init__(self, stats: NodeStats, gauges: Callable[[], NodeGauges]) -> None:
        self.stats = stats
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        intents = CounterMetricFamily(
            "rebalancer_node_intents",
            "Intents read, by outcome (accepted, superseded, duplicate, expired, ...).",
            labels=["outcome"],
        )
        for outcome, count in sorted(s.intents.items()):
            intents.add_metric([outcome], count)
        yield intents
        for name, doc, value in (
            ("invalid_intents", "Intents that were not valid (skipped).", s.invalid_intents),
            ("orders", "Orders sent to the venue.", s.orders),
            ("fills", "Fills received from the venue (each partial fill counts).", s.fills),
            ("given_up", "Legs given up after too many rejected orders.", s.given_up),
            (
                "expired_unfinished",
                "Keys whose plan expired before they reached their target.",
                s.expired_unfinished,
            ),
            ("snapshots_published", "Snapshots published.", s.snapshots_published),
            (
                "unattributed",
                "Holdings found at the venue beyond what the snapshots attribute.",
                s.unattributed,
            ),
            ("plans_converged", "Plans this node reported converged.", s.plans_converged),
        ):
            yield CounterMetricFamily(f"rebalancer_node_{name}", doc, value=value)
        rejections = CounterMetricFamily(
            "rebalancer_node_rejections",
            "Orders the venue refused, by reason (min_notional, lot_size, reduce_only, "
            "venue_refused, ...).",
            labels=["reason"],
        )
        for reason, count in sorted(s.rejections_by_reason.items()):
            rejections.add_metric([reason], count)
        yield rejections
        lag = GaugeMetricFamily(
            "rebalancer_node_intent_lag",
            "Records of the intent topic behind the high watermark, per partition assigned "
            "to this node.",
            labels=["partition"],
        )
        for partition, behind in sorted(s.intent_lag.items()):
            lag.add_metric([str(partition)], behind)
        yield lag
        g = self.gauges()
        residual = GaugeMetricFamily(
            "rebalancer_node_residual",
            "Per key of this venue: its target minus the venue's position when last looked "
            "at (0 once reached; world is empty in shared-account mode).",
            labels=["world", "venue", "symbol"],
        )
        for (world, venue, symbol), gap in sorted(
            g.residuals.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or "", kv[0][2])
        ):
            residual.add_metric([world or "", venue or "", symbol], gap)
        yield residual
        for name, doc, number in (
            ("ready", "1 once the consumer has joined and state is restored.", float(g.ready)),
            ("open_orders", "Orders at the venue not yet final.", float(g.open_orders)),
            (
                "keys_in_progress",
                "Keys of this venue whose target is not reached yet.",
                float(g.keys_in_progress),
            ),
            (
                "plans_in_progress",
                "Plans with keys of this venue not reached yet.",
                float(g.plans_in_progress),
            ),
            ("started_timestamp_seconds", "When the node started.", g.started_at_ms / 1000),
        ):
            yield GaugeMetricFamily(f"rebalancer_node_{name}", doc, value=number)
        if g.last_heartbeat_ms is not None:
            yield GaugeMetricFamily(
                "rebalancer_node_last_heartbeat_timestamp_seconds",
                "When the node last published its heartbeat on topics.nodes.",
                value=g.last_heartbeat_ms / 1000,
            )
