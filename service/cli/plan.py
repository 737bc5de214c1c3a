"""``rebalancer plan``: plan a request offline (ours or QMTL's) and print the plan."""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO

import orjson

from ..errors import InputError
from ..report import render
from ..request import plan_request
from ..settings import load_settings
from .common import EXIT_BAD_INPUT, EXIT_OK, Subparsers, read_source


def cmd_plan(args: argparse.Namespace, out: IO[bytes]) -> int:
    settings = load_settings(args.config)
    now_ms = args.now if args.now is not None else int(time.time() * 1000)
    option = orjson.OPT_INDENT_2 if args.pretty and not args.jsonl else 0
    raw = read_source(args.file)
    if not args.jsonl:
        result = plan_request(
            raw,
            defaults=settings.planner,
            now_ms=now_ms,
            with_intents=args.with_intents,
            wire=args.format == "json" and not option,  # the text table reads the breakdowns
        )
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
            result = plan_request(
                line,
                defaults=settings.planner,
                now_ms=now_ms,
                with_intents=args.with_intents,
                wire=True,
            )
        except InputError as exc:
            failed += 1
            result = {"error": {"line": number, "class": "InputError", "message": str(exc)}}
            print(f"line {number}: {exc}", file=sys.stderr)
        out.write(orjson.dumps(result) + b"\n")
    return EXIT_BAD_INPUT if failed else EXIT_OK


def register(sub: Subparsers) -> None:
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
    plan.set_defaults(run=cmd_plan)
