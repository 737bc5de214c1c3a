"""The ``rebalancer`` command: the service (``run``), execution nodes (``execute``), the demo,
offline planning (``plan``), backtests and schema generation.

Bad input exits with code 2 and one line per problem on stderr, naming the field.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from .errors import InputError
from .planner import MultiWorldProportionalRebalancer, PlannerOptions, PlanningError
from .planner.bounds import check_plan
from .policies.errors import PolicyError
from .report import render
from .request import parse_request
from .runtime import tune_allocator
from .settings import load_settings

if TYPE_CHECKING:
    from consumers.unit_of_work import FaultHook

EXIT_OK, EXIT_BAD_INPUT, EXIT_STATE = 0, 2, 3


def _read(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{source}: no such file")
    return path.read_bytes()


def plan_one(raw: bytes, defaults: PlannerOptions, now_ms: int, with_intents: bool) -> Any:
    """Plan one request and return the JSON-ready output."""
    context = parse_request(raw, defaults=defaults, now_ms=now_ms)
    try:
        plan = check_plan(MultiWorldProportionalRebalancer().plan(context))
    except PlanningError as exc:
        raise InputError(str(exc)) from None
    record = plan.record()
    if with_intents:
        return {**record, "intents": plan.intents()}
    return record


def _cmd_plan(args: argparse.Namespace, out: IO[bytes]) -> int:
    settings = load_settings(args.config)
    now_ms = args.now if args.now is not None else int(time.time() * 1000)
    option = orjson.OPT_INDENT_2 if args.pretty and not args.jsonl else 0
    raw = _read(args.file)
    if not args.jsonl:
        result = plan_one(raw, settings.planner, now_ms, args.with_intents)
        if args.format == "text":
            out.write(render(result).encode())
        else:
            out.write(orjson.dumps(result, option=option) + b"\n")
        return EXIT_OK
    if args.format == "text":
        raise InputError("--format text cannot be combined with --jsonl")
    failed = 0
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            result = plan_one(line, settings.planner, now_ms, args.with_intents)
        except InputError as exc:
            failed += 1
            result = {"error": {"line": number, "class": "InputError", "message": str(exc)}}
            print(f"line {number}: {exc}", file=sys.stderr)
        out.write(orjson.dumps(result) + b"\n")
    return EXIT_BAD_INPUT if failed else EXIT_OK


def _cmd_schemas(args: argparse.Namespace, out: IO[bytes]) -> int:
    from . import schemas

    directory = Path(args.out) if args.out else schemas.SCHEMA_DIR
    if args.check:
        problems = schemas.stale(directory)
        if problems:
            print(
                f"schemas in {directory} are stale: {', '.join(problems)}; "
                "run 'rebalancer schemas' to regenerate",
                file=sys.stderr,
            )
            return 1
        print(f"schemas in {directory} match the models", file=sys.stderr)
        return EXIT_OK
    for path in schemas.write(directory):
        print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def _cmd_backtest(args: argparse.Namespace, out: IO[bytes]) -> int:
    from .backtest import Backtest, Policy, PriceTable, chart, markdown, table
    from .backtest.spec import DEFAULT_POLICIES, parse
    from .policies import CostModel, DrawdownProtection, EqualWeight, Kelly, RiskParity
    from .policies.risk import VolatilityTarget
    from .policies.weights import Allocator

    prices = PriceTable.read_csv(args.prices)
    if args.assets:
        prices = prices.select([a.strip() for a in args.assets.split(",") if a.strip()])
    weights: Allocator
    if args.weights == "equal":
        weights = EqualWeight()
    elif args.weights == "kelly":
        weights = Kelly(lookback=args.lookback, cap=args.cap)
    else:
        weights = RiskParity(lookback=args.lookback)
    if args.vol_target is not None:
        weights = VolatilityTarget(weights, target_volatility=args.vol_target)
    guard = DrawdownProtection(limit=args.drawdown_limit) if args.drawdown_limit else None
    policies = []
    for spec in args.policy or DEFAULT_POLICIES:
        name, trigger = parse(spec)
        policies.append(Policy(name, trigger, weights=weights, drawdown=guard))
    runs = Backtest(
        costs=CostModel(
            fee_bps=args.fee_bps,
            half_spread_bps=args.half_spread_bps,
            fixed_per_trade=args.fixed_cost,
        ),
        initial_equity=args.initial_equity,
        start=args.start,
        end=args.end,
    ).run(prices, policies)
    if args.format == "json":
        body = [run.summary() for run in runs]
        out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        out.write(b"\n")
    else:
        out.write((markdown(runs) if args.format == "markdown" else table(runs)).encode())
    if args.chart:
        title = f"{len(prices.assets)} assets, {runs[0].dates[0]} to {runs[0].dates[-1]}"
        print(f"wrote {chart(runs, args.chart, title)}", file=sys.stderr)
    return EXIT_OK


def _log_to_stderr(level: str) -> None:
    """Log lines for the long-running commands (run, execute)."""

    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


FAULT_ENV = "REBALANCER_FAULT_KILL_AT"
"""Test hook of the crash tests: SIGKILL ``rebalancer run`` at a named step of the order of
work (``consumers.unit_of_work.Step``)."""


def _fault_hook_from_env() -> FaultHook:
    """The crash tests' hook when ``REBALANCER_FAULT_KILL_AT`` names a step, else none."""
    import os
    import signal

    from consumers.unit_of_work import Step, no_faults

    wanted = os.environ.get(FAULT_ENV)
    if wanted is None:
        return no_faults
    steps = [step.value for step in Step]
    if wanted not in steps:
        raise InputError(f"{FAULT_ENV}: expected one of {', '.join(steps)}, got {wanted!r}")

    def kill_at(step: Step) -> None:
        if step == wanted:
            log = logging.getLogger("rebalancer")
            log.error("fault injection: killing this process at %s", step)
            os.kill(os.getpid(), signal.SIGKILL)

    return kill_at


def _cmd_run(args: argparse.Namespace, out: IO[bytes]) -> int:
    import asyncio

    from .app import RebalancerApp
    from .state.allocations import ChangelogError

    settings = load_settings(args.config)
    fault = _fault_hook_from_env()
    _log_to_stderr(args.log_level)
    try:
        asyncio.run(RebalancerApp(settings, fault=fault).run())
    except ChangelogError as exc:
        print(f"error: the service state cannot be restored: {exc}", file=sys.stderr)
        return EXIT_STATE
    return EXIT_OK


def _lot(text: str) -> tuple[str, float]:
    symbol, sep, size = text.partition("=")
    try:
        value = float(size)
    except ValueError:
        value = float("nan")
    if not sep or not symbol or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected SYMBOL=SIZE with a positive size, got {text!r}")
    return symbol, value


def _cmd_execute(args: argparse.Namespace, out: IO[bytes]) -> int:
    import asyncio
    import signal
    from pathlib import Path

    from consumers.execution_node import ExecutionNode, NodeOptions
    from consumers.venues import PaperConfig, PaperVenue

    from .state.snapshots import SnapshotTable

    settings = load_settings(args.config)
    if not settings.bootstrap_servers:
        raise InputError(
            "execute: bootstrap_servers is not set; point it (REBALANCER_BOOTSTRAP_SERVERS) at "
            "the broker the service uses"
        )
    if not 0 <= args.reject_rate < 1:
        raise InputError(f"--reject-rate: expected a share in [0, 1), got {args.reject_rate}")
    for flag, value, low in (
        ("--partial-slices", args.partial_slices, 1),
        ("--fill-interval-ms", args.fill_interval_ms, 0),
        ("--heartbeat-ms", args.heartbeat_ms, 1),
    ):
        if value < low:
            raise InputError(f"{flag}: expected at least {low}, got {value}")
    planner = settings.planner
    lots = {**planner.lot_size_by_symbol, **planner.lot_size_by_venue.get(args.venue, {})}
    lots.update(dict(args.lot or []))
    config = PaperConfig(
        lot_size_by_symbol=lots,
        min_notional=planner.min_trade_notional if args.min_notional is None else args.min_notional,
        direct_flip=args.direct_flip or args.venue in planner.direct_flip_venues,
        fill_model=args.fill_model,
        partial_slices=args.partial_slices,
        fill_interval_ms=args.fill_interval_ms,
        reject_rate=args.reject_rate,
        seed=args.seed,
    )
    state = Path(args.paper_state) if args.paper_state else None
    _log_to_stderr(args.log_level)

    async def serve() -> None:
        venue = PaperVenue(args.venue, config, state_file=state)
        fresh = state is None or not state.exists()

        def seed(table: SnapshotTable) -> None:
            # a new paper venue starts from what the snapshots say its accounts hold
            if fresh:
                venue.seed_from(table.snapshots())

        node = ExecutionNode(
            settings.bootstrap_servers or "",
            snapshots_topic=settings.topics.snapshots,
            intents_topic=settings.topics.intents,
            venue=venue,
            options=NodeOptions(
                group_id=args.group_id or f"{settings.group_id}-execution-{args.venue}",
                heartbeat_ms=args.heartbeat_ms,
            ),
            on_restored=seed,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await node.start()
        venue.resume()
        try:
            await node.run_until(stop)
        finally:
            await node.stop()
            await venue.close()

    asyncio.run(serve())
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, out: IO[bytes]) -> int:
    from .demo import main as demo

    return demo(sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rebalancer", description="Centralized rebalancing: plan allocation changes."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser(
        "plan",
        help="plan a request (ours or QMTL's) and print the plan as JSON",
        description="Read a planning request as JSON and print the plan. Accepts our shape "
        "({event, snapshots, current?, options?}) and QMTL's /rebalancing/plan body.",
    )
    plan.add_argument("file", help="request file, or - for standard input")
    plan.add_argument(
        "--jsonl", action="store_true", help="one request per line in, one plan per line out"
    )
    plan.add_argument(
        "--with-intents", action="store_true", help="add the delta intents under 'intents'"
    )
    plan.add_argument("--pretty", action="store_true", help="indent the output")
    plan.add_argument(
        "--format",
        choices=["json", "text"],
        default="json",
        help="json (default) or a table for people (not with --jsonl)",
    )
    plan.add_argument("--config", help="a TOML file overriding config/default.toml")
    plan.add_argument(
        "--now",
        type=int,
        metavar="MS",
        help="epoch ms for intents of requests without occurred_at (default: the clock)",
    )
    plan.set_defaults(run=_cmd_plan)

    bt = sub.add_parser(
        "backtest",
        help="compare rebalancing policies over a CSV of prices",
        description="Run policies over a price table (CSV: a header row, dates in the first "
        "column, one column of close prices per asset) and print their figures side by side. "
        "Policies: none, a cadence (daily, weekly, biweekly, monthly, quarterly, yearly), "
        "band:5%% (relative drift band), band-abs:5%%, hybrid:monthly:5%%, smart (volatility "
        "regimes); NAME=POLICY names one.",
    )
    bt.add_argument("prices", help="CSV file of close prices, dates by assets")
    bt.add_argument(
        "--policy",
        action="append",
        metavar="SPEC",
        help="a policy to run (repeat for several; default: none, monthly, band:5%%, smart)",
    )
    bt.add_argument("--assets", help="comma-separated subset of the table's columns")
    bt.add_argument(
        "--weights", choices=["equal", "kelly", "risk-parity"], default="equal", help="targets"
    )
    bt.add_argument("--lookback", type=int, default=252, help="returns that feed kelly/risk-parity")
    bt.add_argument("--cap", type=float, default=1.0, help="per-asset cap of kelly weights")
    bt.add_argument("--vol-target", type=float, help="scale weights to this annualized volatility")
    bt.add_argument("--drawdown-limit", type=float, help="halve exposure past this drawdown")
    bt.add_argument("--fee-bps", type=float, default=0.0, help="fee, bps of traded notional")
    bt.add_argument("--half-spread-bps", type=float, default=0.0, help="half spread, bps")
    bt.add_argument("--fixed-cost", type=float, default=0.0, help="fixed cost per traded asset")
    bt.add_argument("--initial-equity", type=float, default=1_000_000.0)
    bt.add_argument("--start", help="first trading date (earlier rows still feed estimates)")
    bt.add_argument("--end", help="last date")
    bt.add_argument(
        "--format", choices=["table", "markdown", "json"], default="table", help="output"
    )
    bt.add_argument("--chart", metavar="PNG", help="also write equity curves and drawdowns here")
    bt.set_defaults(run=_cmd_backtest)

    run = sub.add_parser(
        "run",
        help="run the stream service (embedded broker when bootstrap_servers is unset)",
        description="Consume allocation events and snapshots, publish intents and plans. "
        "Stops cleanly on SIGTERM/SIGINT.",
    )
    run.add_argument("--config", help="a TOML file overriding config/default.toml")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(run=_cmd_run)

    ex = sub.add_parser(
        "execute",
        help="run an execution node for one venue (the paper venue: simulated fills)",
        description="Consume delta intents for VENUE, order the residual to each target on a "
        "paper venue, publish snapshots with converged_plan_id. Stops on SIGTERM/SIGINT.",
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
    ex.add_argument("--min-notional", type=float, help="default: planner.min_trade_notional")
    ex.add_argument(
        "--lot", type=_lot, action="append", metavar="SYMBOL=SIZE", help="lot size (repeatable)"
    )
    ex.add_argument("--direct-flip", action="store_true", help="the venue flips in one order")
    ex.add_argument("--heartbeat-ms", type=int, default=5_000, help="snapshot republish period")
    ex.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ex.set_defaults(run=_cmd_execute)

    demo = sub.add_parser(
        "demo", help="run the service on the embedded broker through a two-world scenario"
    )
    demo.set_defaults(run=_cmd_demo)

    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas of messages")
    schemas.add_argument("--out", help="directory (default: schemas/ of this checkout)")
    schemas.add_argument("--check", action="store_true", help="fail if the files are stale")
    schemas.set_defaults(run=_cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tune_allocator()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args, sys.stdout.buffer)
    except (InputError, PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
