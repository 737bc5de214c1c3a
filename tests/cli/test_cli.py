"""The ``rebalancer`` command as users run it: both request shapes, JSONL, bad input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.cli import main
from service.request import plan_request

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def qmtl_request(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "total_equity": 1_000_000.0,
        "world_alloc_before": {"a": 0.3},
        "world_alloc_after": {"a": 0.2},
        "strategy_alloc_before_total": {"a": {"s1": 0.15, "s2": 0.15}},
        "strategy_alloc_after_total": {"a": {"s1": 0.1, "s2": 0.1}},
        "positions": [
            {
                "world_id": "a",
                "strategy_id": "s1",
                "symbol": "BTC",
                "qty": 0.6,
                "mark": 60000.0,
                "venue": "binance",
            },
            {
                "world_id": "a",
                "strategy_id": "s2",
                "symbol": "BTC",
                "qty": 0.9,
                "mark": 60000.0,
                "venue": "binance",
            },
        ],
    }
    return {**base, **fields}


@pytest.fixture
def plan_json(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> Callable[..., tuple[int, Any, str]]:
    """Run ``rebalancer plan`` in-process on a request; returns (exit code, output, stderr)."""

    def run(data: Any, *args: str) -> tuple[int, Any, str]:
        path = tmp_path / "request.json"
        path.write_bytes(data if isinstance(data, bytes) else orjson.dumps(data))
        code = main(["plan", str(path), "--now", "1000", *args])
        out, err = capsysbinary.readouterr()
        return code, (orjson.loads(out) if out.strip() and code == 0 else out), err.decode()

    return run


def test_entry_point_plans_the_bundled_qmtl_example() -> None:
    result = run_cli("plan", str(EXAMPLES / "qmtl_request.json"))
    assert result.returncode == 0, result.stderr
    plan = orjson.loads(result.stdout)
    world = plan["per_world"]["a"]
    assert world["world_id"] == "a"
    assert world["scale_world"] == pytest.approx(2 / 3)
    assert [(d["venue"], d["symbol"], d["delta_qty"]) for d in world["deltas"]] == [
        ("binance", "BTCUSDT", -0.5)
    ]
    assert {(d["venue"], d["symbol"]): d["delta_qty"] for d in plan["global_deltas"]} == {
        (None, "ETHUSDT"): 0.5,
        ("binance", "BTCUSDT"): -0.4,
    }


def test_entry_point_reads_stdin_and_prints_text() -> None:
    request = (EXAMPLES / "two_worlds.json").read_bytes()
    result = run_cli("plan", "-", "--format", "text", stdin=request)
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "world alpha: allocation 0.3 -> 0.2" in text
    assert "close (reduce-only) then open" in text
    assert "dropped okx:NEWCOIN: missing_mark" in text


def test_bad_input_exits_2_with_the_field_and_no_traceback() -> None:
    bad = orjson.dumps(qmtl_request(world_alloc_after={"a": 1.5}))
    result = run_cli("plan", "-", stdin=bad)
    assert result.returncode == 2
    assert result.stdout == b""
    err = result.stderr.decode()
    assert "world_alloc_after.a: Input should be less than or equal to 1" in err
    assert "Traceback" not in err


PlanJson = Callable[..., tuple[int, Any, str]]


def test_our_shape_with_intents(plan_json: PlanJson) -> None:
    code, plan, _ = plan_json((EXAMPLES / "two_worlds.json").read_bytes(), "--with-intents")
    assert code == 0
    assert [i["intent_id"] for i in plan["intents"]] == plan["intent_ids"]
    legs = [(i["world_id"], i["venue"], i["symbol"], i["leg"]) for i in plan["intents"]]
    assert ("beta", "binance", "ETHUSDT", "close") in legs
    assert ("beta", "binance", "ETHUSDT", "open") in legs
    assert plan["event_id"] == "demo-2026-11-22-01"


def test_same_request_gives_identical_output(plan_json: PlanJson) -> None:
    request = (EXAMPLES / "two_worlds.json").read_bytes()
    first = plan_json(request, "--with-intents")
    second = plan_json(request, "--with-intents")
    assert first == second


def test_qmtl_request_ids_do_not_depend_on_the_clock(
    plan_json: PlanJson, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    _, plan, _ = plan_json(qmtl_request(), "--with-intents")
    path = tmp_path / "r.json"
    path.write_bytes(orjson.dumps(qmtl_request()))
    assert main(["plan", str(path), "--now", "99999", "--with-intents"]) == 0
    later = orjson.loads(capsysbinary.readouterr().out)
    assert later["plan_id"] == plan["plan_id"]
    assert later["intent_ids"] == plan["intent_ids"]
    assert later["intents"][0]["created_at"] == 99999


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        (b"{not json", "invalid JSON"),
        (b"[]", "request: expected a JSON object"),
        (b"{}", "expected our shape"),
        (
            orjson.dumps(
                qmtl_request(
                    world_alloc_after={"a": 0.6, "b": 0.6}, world_alloc_before={"a": 0.3, "b": 0.1}
                )
            ),
            "world_alloc_after: world allocations add up to 1.2, above 1",
        ),
        (orjson.dumps(qmtl_request(world_alloc_before={})), "world_alloc_before.a: missing"),
        (
            orjson.dumps(qmtl_request(strategy_alloc_after_total={"a": {"s1": 0.3}})),
            "strategy_alloc_after_total.a: strategy weights of world 'a' add up to 0.3, above 0.2",
        ),
        (
            orjson.dumps(
                qmtl_request(
                    positions=[
                        {"world_id": "a", "strategy_id": "s", "symbol": "X", "qty": 1, "mark": 0}
                    ]
                )
            ),
            "positions.0.mark: Input should be greater than 0",
        ),
        (
            b'{"total_equity": NaN, "world_alloc_before": {"a": 0.3}, '
            b'"world_alloc_after": {"a": 0.2}, "positions": []}',
            "invalid JSON",
        ),
        (orjson.dumps(qmtl_request(mode="overlay")), "mode: Input should be 'scaling'"),
        (
            orjson.dumps(qmtl_request(options={"flip_policy": "yolo"})),
            "options.flip_policy: Input should be",
        ),
        (
            orjson.dumps(qmtl_request(options={"execution_mode": "shared_account"})),
            "shared_account is refused unless allow_shared_account",
        ),
        (orjson.dumps({"event": {"type": "manual", "event_id": "e"}}), "event: Input tag 'manual'"),
        (
            orjson.dumps(
                {
                    "event": {
                        "type": "world_allocations_changed",
                        "event_id": "e",
                        "occurred_at": 1,
                        "total_equity": 1,
                        "world_alloc_after": {"a": 0.2},
                    }
                }
            ),
            "world_alloc_before.a: missing, and no current allocation is known",
        ),
        (
            orjson.dumps(
                {
                    "event": {
                        "type": "world_allocations_changed",
                        "event_id": "e",
                        "occurred_at": 1,
                        "total_equity": 1,
                        "world_alloc_after": {"a": 0.5},
                    },
                    "current": {"world_alloc": {"a": 0.1, "b": 0.6}},
                }
            ),
            "world allocations would add up to 1.1, above 1",
        ),
        (
            orjson.dumps(
                {
                    "event": {
                        "type": "strategy_weights_updated",
                        "event_id": "e",
                        "occurred_at": 1,
                        "world_id": "a",
                        "strategy_alloc_after_total": {"s": 0.3},
                    },
                    "current": {"world_alloc": {"a": 0.2}},
                }
            ),
            "strategy weights add up to 0.3, above world 'a'",
        ),
        (
            orjson.dumps(
                {
                    "event": {
                        "type": "strategy_weights_updated",
                        "event_id": "e",
                        "occurred_at": 1,
                        "world_id": "a",
                        "strategy_alloc_after_total": {"s": 0.3},
                    },
                    "snapshots": [
                        {
                            "world_id": "a",
                            "strategy_id": "s",
                            "as_of": 1,
                            "positions": [{"symbol": "X", "qty": 1, "mark": -1}],
                        }
                    ],
                }
            ),
            "snapshots.0.positions.0.mark: Input should be greater than 0",
        ),
    ],
)
def test_bad_requests_exit_2_naming_the_problem(
    request_body: bytes, expected: str, plan_json: PlanJson
) -> None:
    code, out, err = plan_json(request_body)
    assert code == 2
    assert out == b""
    assert expected in err
    assert err.startswith("error: ")


def test_missing_file_exits_2(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["plan", "/nonexistent/request.json"]) == 2
    assert "no such file" in capsysbinary.readouterr().err.decode()


def test_jsonl_plans_each_line_and_reports_bad_ones_in_place(tmp_path: Path) -> None:
    good = orjson.dumps(qmtl_request())
    other = orjson.dumps(
        qmtl_request(world_alloc_after={"a": 0.1}, strategy_alloc_after_total=None)
    )
    lines = b"\n".join([good, b'{"total_equity": "lots"}', other, b"", b"[oops"]) + b"\n"
    path = tmp_path / "batch.jsonl"
    path.write_bytes(lines)
    result = run_cli("plan", "--jsonl", str(path), "--now", "5")
    assert result.returncode == 2
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == 4
    assert out[0]["per_world"]["a"]["deltas"][0]["delta_qty"] == -0.5
    assert out[1]["error"]["line"] == 2
    assert "world_alloc_before: Field required" in out[1]["error"]["message"]
    assert out[2]["per_world"]["a"]["deltas"][0]["delta_qty"] == pytest.approx(-1.0)
    assert out[3]["error"]["line"] == 5
    assert "invalid JSON" in out[3]["error"]["message"]
    assert b"line 2:" in result.stderr
    assert b"Traceback" not in result.stderr


def test_jsonl_all_good_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_bytes(orjson.dumps(qmtl_request()) + b"\n" + orjson.dumps(qmtl_request()) + b"\n")
    result = run_cli("plan", "--jsonl", str(path))
    assert result.returncode == 0, result.stderr
    first, second = (orjson.loads(line) for line in result.stdout.splitlines())
    assert first["plan_id"] == second["plan_id"]


def test_config_file_and_environment_set_planner_defaults(tmp_path: Path) -> None:
    config = tmp_path / "custom.toml"
    config.write_text("[planner]\nmin_trade_notional = 50000.0\n")
    request = (EXAMPLES / "qmtl_request.json").read_bytes()
    body = orjson.loads(request)
    del body["min_trade_notional"]
    result = run_cli("plan", "-", "--config", str(config), stdin=orjson.dumps(body))
    assert result.returncode == 0, result.stderr
    plan = orjson.loads(result.stdout)
    assert plan["options"]["min_trade_notional"] == 50000.0
    assert plan["intent_ids"] == []
    bad = tmp_path / "bad.toml"
    bad.write_text('[planner]\nflip_policy = "sideways"\n')
    result = run_cli("plan", "-", "--config", str(bad), stdin=request)
    assert result.returncode == 2
    assert b"config: planner.flip_policy: Input should be" in result.stderr


def test_large_lot_counts_round_down_not_up_by_whole_lots() -> None:
    # SPEC 3.2: float slack never exceeds 1e-6 of a lot; the delta is 1,500,000,000.5 lots
    request = (
        b'{"total_equity":1e6,"world_alloc_before":{"a":0.5},"world_alloc_after":{"a":0.75},'
        b'"positions":[{"world_id":"a","strategy_id":"s","symbol":"X","qty":3000000001,'
        b'"mark":1.0}],"min_trade_notional":0,"lot_size_by_symbol":{"X":1}}'
    )
    result = run_cli("plan", "-", "--with-intents", stdin=request)
    assert result.returncode == 0, result.stderr
    plan = orjson.loads(result.stdout)
    (key,) = plan["per_world"]["a"]["deltas"]
    assert key["delta_qty_unrounded"] == 1_500_000_000.5
    assert (key["delta_qty"], key["target_qty"]) == (1_500_000_000.0, 4_500_000_001.0)
    assert [d["delta_qty"] for d in plan["global_deltas"]] == [1_500_000_000.0]
    assert [i["delta_qty"] for i in plan["intents"]] == [1_500_000_000.0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--node-id", "a|b"], "--node-id: 'a|b' is not an identifier"),
        (["--http-port", "-1"], "--http-port: expected at least 0, got -1"),
        (["--http-port", "70000"], "--http-port: expected at most 65535, got 70000"),
        (["--fee-bps", "-1"], "--fee-bps: expected basis points in [0, 10000], got -1.0"),
        (["--slippage-bps", "nan"], "--slippage-bps: expected basis points in [0, 10000], got nan"),
    ],
)
def test_execute_refuses_a_bad_node_id_port_fee_or_slippage(
    flags: list[str],
    expected: str,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REBALANCER_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert main(["execute", "--venue", "paper", *flags]) == 2
    assert expected in capsysbinary.readouterr().err.decode()


@pytest.mark.parametrize("request_file", ["qmtl_request.json", "two_worlds.json"])
@pytest.mark.parametrize("intents", [(), ("--with-intents",)])
def test_plan_output_is_the_record_serialised(
    request_file: str,
    intents: tuple[str, ...],
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """``rebalancer plan`` writes the plan record with its breakdowns already JSON
    (``Plan.wire``): byte for byte the record's dicts serialised; ``--pretty`` (which
    indents) and ``--jsonl`` lines too."""
    raw = (EXAMPLES / request_file).read_bytes()
    expected = plan_request(raw, now_ms=1000, with_intents=bool(intents))
    path = tmp_path / "request.json"
    path.write_bytes(raw)
    assert main(["plan", str(path), "--now", "1000", *intents]) == 0
    assert capsysbinary.readouterr().out == orjson.dumps(expected) + b"\n"
    assert main(["plan", str(path), "--now", "1000", "--pretty", *intents]) == 0
    pretty = orjson.dumps(expected, option=orjson.OPT_INDENT_2) + b"\n"
    assert capsysbinary.readouterr().out == pretty
    path.write_bytes(orjson.dumps(orjson.loads(raw)) + b"\n")
    assert main(["plan", str(path), "--now", "1000", "--jsonl", *intents]) == 0
    assert capsysbinary.readouterr().out == orjson.dumps(expected) + b"\n"
