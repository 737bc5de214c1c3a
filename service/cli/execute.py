"""``rebalancer execute``: an execution node for one venue, on the paper venue, with its
``/metrics``, ``/healthz`` and ``/readyz`` (``service.node_app``)."""

from __future__ import annotations

import argparse
import sys
from typing import IO

from ..errors import InputError
from ..settings import load_settings
from .common import EXIT_BROKER, EXIT_OK, Subparsers, add_log_level, log_to_stderr


def _lot(text: str) -> tuple[str, float]:
    symbol, sep, size = text.partition("=")
    try:
        value = float(size)
    except ValueError:
        value = float("nan")
    if not sep or not symbol or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected SYMBOL=SIZE with a positive size, got {text!r}")
    return symbol, value


def _is_name(text: str) -> bool:
    from pydantic import TypeAdapter, ValidationError

    from ..messages._types import Name

    try:
        TypeAdapter(Name).validate_python(text)
    except ValidationError:
        return False
    return True


def cmd_execute(args: argparse.Namespace, out: IO[bytes]) -> int:
    import asyncio
    import signal
    from pathlib import Path

    from consumers.clients import BrokerUnreachableError, KafkaClients
    from consumers.execution_node import ExecutionNode, NodeOptions
    from consumers.venues import PaperConfig, PaperVenue

    from ..node_app import NodeApp
    from ..state.snapshots import SnapshotTable

    settings = load_settings(args.config)
    if not settings.bootstrap_servers:
        raise InputError(
            "execute: bootstrap_servers is not set; point it (REBALANCER_BOOTSTRAP_SERVERS) at "
            "the broker the service uses"
        )
    if not 0 <= args.reject_rate < 1:
        raise InputError(f"--reject-rate: expected a share in [0, 1), got {args.reject_rate}")
    for flag, bps in (("--fee-bps", args.fee_bps), ("--slippage-bps", args.slippage_bps)):
        if not 0 <= bps <= 10_000:  # also refuses nan
            raise InputError(f"{flag}: expected basis points in [0, 10000], got {bps}")
    for flag, value, low in (
        ("--partial-slices", args.partial_slices, 1),
        ("--fill-interval-ms", args.fill_interval_ms, 0),
        ("--heartbeat-ms", args.heartbeat_ms, 1),
        ("--http-port", 0 if args.http_port is None else args.http_port, 0),
    ):
        if value < low:
            raise InputError(f"{flag}: expected at least {low}, got {value}")
    planner = settings.planner
    lots = {**planner.lot_size_by_symbol, **planner.lot_size_by_venue.get(args.venue, {})}
    lots.update(dict(args.lot or []))
    venue_minimum = max(
        planner.min_trade_notional, planner.min_notional_by_venue.get(args.venue, 0)
    )
    config = PaperConfig(
        lot_size_by_symbol=lots,
        min_notional=venue_minimum if args.min_notional is None else args.min_notional,
        direct_flip=args.direct_flip or args.venue in planner.direct_flip_venues,
        fill_model=args.fill_model,
        partial_slices=args.partial_slices,
        fill_interval_ms=args.fill_interval_ms,
        reject_rate=args.reject_rate,
        seed=args.seed,
        fee_bps=args.fee_bps,
        slippage_bps=args.slippage_bps,
    )
    if args.http_port is not None and args.http_port > 65535:
        raise InputError(f"--http-port: expected at most 65535, got {args.http_port}")
    if args.node_id is not None and not _is_name(args.node_id):
        raise InputError(
            f"--node-id: {args.node_id[:80]!r} is not an identifier (1-200 characters, no '|' "
            "and no control characters)"
        )
    execution = settings.execution
    http_host = execution.http_host if args.http_host is None else args.http_host
    http_port = execution.http_port if args.http_port is None else args.http_port
    state = Path(args.paper_state) if args.paper_state else None
    log_to_stderr(args.log_level)

    async def serve() -> None:
        venue = PaperVenue(args.venue, config, state_file=state)
        fresh = state is None or not state.exists()

        def seed(table: SnapshotTable) -> None:
            # a new paper venue starts from what the snapshots say its accounts hold
            if fresh:
                venue.seed_from(table.snapshots())

        clients = KafkaClients(
            settings.bootstrap_servers or "", settings.security, f"{settings.client_id}-execution"
        )
        await clients.connect()
        node = ExecutionNode(
            clients,
            snapshots_topic=settings.topics.snapshots,
            intents_topic=settings.topics.intents,
            venue=venue,
            options=NodeOptions(
                group_id=args.group_id or f"{settings.group_id}-execution-{args.venue}",
                heartbeat_ms=args.heartbeat_ms,
                nodes_topic=settings.topics.nodes,
                node_heartbeat_ms=execution.heartbeat_interval_ms,
                node_id=args.node_id,
            ),
            on_restored=seed,
        )
        app = NodeApp(node, http_host, http_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await app.start()
        venue.resume()
        try:
            await node.run_until(stop)
        finally:
            await app.stop()
            await venue.close()

    try:
        asyncio.run(serve())
    except BrokerUnreachableError as exc:
        print(f"error: cannot use the Kafka brokers: {exc}", file=sys.stderr)
        return EXIT_BROKER
    return EXIT_OK


def register(sub: Subparsers) -> None:
    ex = sub.add_parser(
        "execute",
        help="run an execution node for one venue (the paper venue: simulated fills)",
        description="Consume delta intents for VENUE, order the residual to each target on a "
        "paper venue, publish snapshots with converged_plan_id. Serves /metrics, /healthz and "
        "/readyz (execution.http_host, execution.http_port) and publishes a heartbeat on "
        "topics.nodes every execution.heartbeat_interval_ms, with each plan's fill costs (fees, "
        "slippage) after its fills. Stops on SIGTERM/SIGINT.",
    )
    ex.add_argument("--venue", required=True, help="the venue name intents carry")
    ex.add_argument("--config", help="a TOML file overriding config/default.toml")
    ex.add_argument("--group-id", help="consumer group (default: <group_id>-execution-<venue>)")
    ex.add_argument("--paper-state", metavar="FILE", help="keep the paper venue in this file")
    ex.add_argument("--fill-model", choices=["immediate", "partial"], default="immediate")
    ex.add_argument("--partial-slices", type=int, default=3, help="fills per order (partial)")
    ex.add_argument("--fill-interval-ms", type=int, default=20, help="between partial fills")
    ex.add_argument("--reject-rate", type=float, default=0.0, help="share of orders refused")
    ex.add_argument("--seed", type=int, default=0, help="seed of the simulated refusals")
    ex.add_argument(
        "--fee-bps", type=float, default=0.0, help="fee per fill, in bps of its notional"
    )
    ex.add_argument(
        "--slippage-bps", type=float, default=0.0, help="fills this many bps worse than the mark"
    )
    ex.add_argument(
        "--min-notional",
        type=float,
        help="default: planner.min_trade_notional, or the venue's "
        "planner.min_notional_by_venue if higher",
    )
    ex.add_argument(
        "--lot", type=_lot, action="append", metavar="SYMBOL=SIZE", help="lot size (repeatable)"
    )
    ex.add_argument("--direct-flip", action="store_true", help="the venue flips in one order")
    ex.add_argument("--heartbeat-ms", type=int, default=5_000, help="snapshot republish period")
    ex.add_argument("--node-id", help="the node's id in its heartbeats (default: <venue>@<host>)")
    ex.add_argument(
        "--http-host", help="where /metrics, /healthz, /readyz are served (execution.http_host)"
    )
    ex.add_argument(
        "--http-port", type=int, help="their port, 0 for a free one (execution.http_port)"
    )
    add_log_level(ex)
    ex.set_defaults(run=cmd_execute)
