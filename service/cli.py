"""The ``rebalancer`` command: offline planning and schema generation.

Bad input exits with code 2 and one line per problem on stderr, naming the field.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from .errors import InputError
from .planner import MultiWorldProportionalRebalancer, PlannerOptions, PlanningError
from .report import render
from .request import parse_request
from .runtime import tune_allocator
from .settings import load_settings

EXIT_OK, EXIT_BAD_INPUT = 0, 2


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
        plan = MultiWorldProportionalRebalancer().plan(context)
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


def _cmd_run(args: argparse.Namespace, out: IO[bytes]) -> int:
    import asyncio
    import logging

    from .app import RebalancerApp

    settings = load_settings(args.config)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(RebalancerApp(settings).run())
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

    run = sub.add_parser(
        "run",
        help="run the stream service (embedded broker when bootstrap_servers is unset)",
        description="Consume allocation events and snapshots, publish intents and plans. "
        "Stops cleanly on SIGTERM/SIGINT.",
    )
    run.add_argument("--config", help="a TOML file overriding config/default.toml")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(run=_cmd_run)

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
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
