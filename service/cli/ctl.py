"""``rebalancer ctl``: the operator API from a terminal (issue 14).

The token comes from ``REBALANCER_API_TOKEN`` (never from the command line, where ``ps``
would show it), the service from ``--url`` (``REBALANCER_API_URL``, default
``http://127.0.0.1:8080``). Output is a readable table, or the API's JSON with ``--json``.
Exit codes: 0 done, 2 refused by the service (401, 403, 404, 422: its reason on stderr), 4 the
service could not be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from .common import EXIT_BAD_INPUT, EXIT_BROKER, EXIT_OK, Subparsers, read_source

DEFAULT_URL = "http://127.0.0.1:8080"
WAIT_S = 30.0
STATE_ACTIONS = (
    "pause",
    "resume",
    "halt",
    "reduce-only",
    "flatten",
    "rebalance",
    "require-approval",
    "waive-approval",
)
PLAN_DECISIONS = ("approve", "reject")


class RefusedError(Exception):
    """The service answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UnreachableError(Exception):
    """No answer from the service."""


class ApiClient:
    """Calls one service's API with one token."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = str(orjson.loads(raw).get("error", raw.decode(errors="replace")))
            except (orjson.JSONDecodeError, AttributeError):
                message = raw.decode(errors="replace")[:500]
            raise RefusedError(exc.code, f"{exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UnreachableError(f"cannot reach {self.url}: {reason}") from None


def cmd_ctl(args: argparse.Namespace, out: IO[bytes]) -> int:
    client = ApiClient(args.url, os.environ.get("REBALANCER_API_TOKEN"))
    try:
        result = args.ctl(client, args)
    except RefusedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except UnreachableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BROKER
    if args.json:
        out.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        out.write(args.show(result).encode())
    return EXIT_OK


# -- the subcommands: each returns the API's JSON; ``show`` renders it as text ------------------


def status(client: ApiClient, args: argparse.Namespace) -> Any:
    if args.portfolio:
        return {"portfolios": [client.call("GET", f"/v1/portfolios/{args.portfolio}")]}
    return client.call("GET", "/v1/portfolios")


def show_status(result: Any) -> str:
    rows = []
    for p in result["portfolios"]:
        trading = p["trading"]
        by = f" (by {trading['by']}: {trading['reason']})" if trading.get("by") else ""
        rows.append(f"portfolio {p['portfolio_id']}: {trading['mode']}{by}")
        table = [["world", "alloc", "trading", "plan in flight", "held"]]
        for w in p["worlds"]:
            held = w["held"]
            table.append(
                [
                    w["world_id"],
                    "-" if w["alloc"] is None else f"{w['alloc']:.6g}",
                    w["trading_mode"],
                    (w["in_flight"] or {}).get("plan_id", "-"),
                    "-" if held is None else f"{held['reason']} ({len(held['event_ids'])} events)",
                ]
            )
        rows.append(tabulate(table))
        for proposal in p.get("proposals", []):
            by = proposal["requested_by"] or "an allocation event"
            rows.append(
                f"proposal {proposal['plan_id']}: worlds {', '.join(proposal['worlds'])}, "
                f"{proposal['intents']} intents, asked by {by}, expires "
                f"{_time(proposal['deadline'])}"
            )
    return "\n".join(rows) + "\n"


def command(client: ApiClient, args: argparse.Namespace) -> Any:
    scope = f"/v1/portfolios/{args.portfolio}"
    if args.world:
        scope += f"/worlds/{args.world}"
    accepted = client.call("POST", f"{scope}/{args.action}", {"reason": args.reason})
    return _waited(client, args, accepted)


def decision(client: ApiClient, args: argparse.Namespace) -> Any:
    path = f"/v1/plans/{urllib.parse.quote(args.plan_id)}/{args.action}"
    accepted = client.call("POST", path, {"reason": args.reason})
    return _waited(client, args, accepted)


def _waited(client: ApiClient, args: argparse.Namespace, accepted: Any) -> Any:
    """The accepted command, or with ``--wait`` what became of it (polled until decided)."""
    if not args.wait:
        return {**accepted, "status": "accepted"}
    deadline = time.monotonic() + WAIT_S
    while True:
        found = client.call("GET", accepted["status_url"])
        if found["status"] != "accepted" or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def show_command(result: Any) -> str:
    line = f"command {result['command_id']}: {result['status']}"
    if result.get("detail"):
        line += f" ({result['detail']})"
    return line + "\n"


def command_status(client: ApiClient, args: argparse.Namespace) -> Any:
    return client.call("GET", f"/v1/commands/{args.command_id}")


def plans(client: ApiClient, args: argparse.Namespace) -> Any:
    query = [f"limit={args.limit}"]
    for name in ("portfolio", "world", "status", "cursor"):
        value = getattr(args, name)
        if value:
            query.append(f"{name}={urllib.parse.quote(value)}")
    return client.call("GET", "/v1/plans?" + "&".join(query))


def show_plans(result: Any) -> str:
    table = [
        ["created", "plan", "status", "event", "worlds", "intents", "est. cost", "realised", "held"]
    ]
    for p in result["plans"]:
        realised = p.get("realised_cost")  # null until an execution node reports a fill
        table.append(
            [
                _time(p["created_at"]),
                p["plan_id"],
                p["status"],
                p["event_id"],
                ",".join(p["worlds"]),
                str(p["intents"]),
                f"{p['estimated_cost']:.2f}" if p.get("estimated_cost") is not None else "-",
                "-" if realised is None else f"{realised['total']:.2f}",
                p.get("held_reason") or "-",  # paused: ..., or reduce_only: worlds ...
            ]
        )
    more = f"more: --cursor {result['next_cursor']}\n" if result["next_cursor"] else ""
    return tabulate(table) + "\n" + more


def preview(client: ApiClient, args: argparse.Namespace) -> Any:
    event = orjson.loads(read_source(args.event))
    return client.call("POST", "/v1/preview", event)


def show_preview(result: Any) -> str:
    lines = [f"outcome: {result['outcome']} (dry run: nothing published)"]
    for record in result["records"]:
        lines.append(f"record {record['plan_id']}: {record['status']}")
    table = [["intent", "world", "venue", "symbol", "delta", "reduce only"]]
    for i in result["intents"]:
        table.append(
            [
                i["intent_id"],
                i["world_id"] or "-",
                i["venue"] or "-",
                i["symbol"],
                f"{i['delta_qty']:.12g}",
                "yes" if i["reduce_only"] else "no",
            ]
        )
    if len(table) > 1:
        lines.append(tabulate(table))
    return "\n".join(lines) + "\n"


def tabulate(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _time(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def register(sub: Subparsers) -> None:
    ctl = sub.add_parser(
        "ctl",
        help="the operator API from a terminal (token: REBALANCER_API_TOKEN)",
        description="Call a running service's operator API. The token is read from "
        "REBALANCER_API_TOKEN.",
    )
    ctl.add_argument(
        "--url",
        default=os.environ.get("REBALANCER_API_URL", DEFAULT_URL),
        help=f"the service (REBALANCER_API_URL, default {DEFAULT_URL})",
    )
    ctl.add_argument("--json", action="store_true", help="print the API's JSON")
    ctl.set_defaults(run=cmd_ctl)
    verbs = ctl.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("status", help="portfolios, worlds, trading states, plans in flight")
    p.add_argument("portfolio", nargs="?")
    p.set_defaults(ctl=status, show=show_status)

    for action in STATE_ACTIONS:
        p = verbs.add_parser(action, help=f"{action} a portfolio or one of its worlds")
        p.add_argument("portfolio")
        p.add_argument("--world", help="only this world")
        p.add_argument("--reason", required=True, help="why (kept with the command)")
        p.add_argument("--wait", action="store_true", help="wait until it is applied")
        p.set_defaults(ctl=command, show=show_command, action=action)

    for action in PLAN_DECISIONS:
        p = verbs.add_parser(action, help=f"{action} a proposed plan (approver)")
        p.add_argument("plan_id")
        p.add_argument("--reason", required=True, help="why (kept with the plan record)")
        p.add_argument("--wait", action="store_true", help="wait until it is decided")
        p.set_defaults(ctl=decision, show=show_command, action=action)

    p = verbs.add_parser("command", help="what became of a command")
    p.add_argument("command_id")
    p.set_defaults(ctl=command_status, show=show_command)

    p = verbs.add_parser("plans", help="plan history, newest first")
    for name in ("portfolio", "world", "status", "cursor"):
        p.add_argument(f"--{name}")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(ctl=plans, show=show_plans)

    p = verbs.add_parser("preview", help="dry-run an allocation event (file or -)")
    p.add_argument("event")
    p.set_defaults(ctl=preview, show=show_preview)
