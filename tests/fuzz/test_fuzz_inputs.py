"""Hostile input against the decoders, the engine and ``rebalancer plan`` (no broker).

The contract: a decoder returns a value or raises pydantic's ``ValidationError`` or an
``InputError``, nothing else; what it accepts holds finite numbers within the bounds of
``messages._types``, 64-bit integers and clean ids, and re-serialises with orjson. The fast
snapshot decoder and the model agree on every input. The engine, given any decoded event,
returns work or raises ``InputError``; its intents, records, state and write-ahead all read
back. The ``plan`` command exits 0 or 2 and never prints a null quantity or a non-finite number.

The messages come from ``tests/fuzz/fuzz_messages.py``; each carries ``expected`` (True: built
valid, False: built invalid, None: unknown), which is held to the decoders' answers too.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.cli import main
from service.engine import EngineOptions, RebalanceEngine, Work
from service.errors import InputError, describe
from service.messages import DeltaIntent, PlanRecord, PositionSnapshot, topic_event_adapter
from service.messages._types import (
    MAX_AMOUNT,
    MAX_EPOCH_MS,
    MAX_LOT,
    MAX_PRICE,
    MAX_QUANTITY,
    MAX_SEQ,
    MIN_LOT,
)
from service.planner import PlannerOptions
from service.request import parse_request
from service.state.allocations import AllocationState
from service.state.snapshots import SnapshotTable
from service.state.stored_snapshot import StoredSnapshot, decode_snapshot_record, tombstone_key
from tests.examples import examples
from tests.fuzz.fuzz_messages import ID_FIELDS as INPUT_ID_FIELDS
from tests.fuzz.fuzz_messages import MIN_PRICE, Hostile, hostile_corpus, labelled

FUZZ = settings(
    deadline=None,
    report_multiple_bugs=False,  # one falsifying example per test: shrinking several is slow
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
NOW = 1_763_790_000_000

# -- what accepted data must look like ------------------------------------------------------

TIME_FIELDS = frozenset({"occurred_at", "as_of", "created_at", "expires_at", "planned_at", "since"})
QUANTITY_FIELDS = frozenset(
    {"qty", "current_qty", "target_qty", "delta_qty", "delta_qty_unrounded"}
)
AMOUNT_FIELDS = frozenset(
    {"total_equity", "cash", "avg_cost", "min_trade_notional", "notional", "plan_ms"}
)
ID_FIELDS = INPUT_ID_FIELDS | {"intent_id", "plan_id", "depends_on"}
"""Fields that hold one id, in inputs and in what the service writes."""
ID_LISTS = frozenset({"coalesced_event_ids", "intent_ids", "event_ids", "strategies"})
ID_KEYED = frozenset(
    {
        "world_alloc_after",
        "world_alloc_before",
        "lot_size_by_symbol",
        "per_world",
        "scale_by_strategy",
        "strategy_alloc_before",
        "strategy_alloc_after",
        "world_alloc",
    }
)
ID_KEYED_TWICE = frozenset(
    {"strategy_alloc_after_total", "strategy_alloc_before_total", "strategy_alloc"}
)
FORBIDDEN_IN_ID = re.compile(r"[|\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _id_problem(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, dict):  # a plan record's "policy" is the event
        return None
    if not isinstance(value, str):
        return f"{where}: id {value!r} is not text"
    if not 1 <= len(value) <= 200:
        return f"{where}: id of {len(value)} characters"
    found = FORBIDDEN_IN_ID.search(value)
    if found:
        return f"{where}: id {value[:60]!r} holds {found.group()!r}"
    return None


def problems(data: Any) -> list[str]:
    """Everything in ``data`` (plain JSON-like data, as dumped or read back) that accepted
    data must not hold: non-finite floats, integers beyond 64 bits, text orjson cannot write,
    numbers outside their field's bounds, a schema version other than the integer 1, ids
    with control characters or '|'."""
    out: list[str] = []

    def number(v: Any, key: str | None, where: str) -> None:
        if isinstance(v, bool):
            if key == "schema_version":
                out.append(f"{where}: schema_version {v!r}")
            return
        if isinstance(v, int):
            if not -(2**63) <= v < 2**64:
                out.append(f"{where}: integer {v} does not fit in 64 bits")
        elif not math.isfinite(v):
            out.append(f"{where}: {v!r} is not finite")
            return
        if key == "schema_version" and (v != 1 or not isinstance(v, int)):
            out.append(f"{where}: schema_version {v!r}")
        elif key in TIME_FIELDS and not (isinstance(v, int) and 0 <= v <= MAX_EPOCH_MS):
            out.append(f"{where}: time {v!r} outside 0..{MAX_EPOCH_MS} (or not an integer)")
        elif key == "seq" and not (isinstance(v, int) and 0 <= v <= MAX_SEQ):
            out.append(f"{where}: seq {v!r} outside 0..2**53-1")
        elif key in QUANTITY_FIELDS and not abs(v) <= MAX_QUANTITY:
            out.append(f"{where}: quantity {v!r} beyond 1e15")
        elif key == "mark" and not MIN_PRICE <= v <= MAX_PRICE:
            out.append(f"{where}: mark {v!r} outside (0, 1e12]")
        elif key in AMOUNT_FIELDS and not abs(v) <= MAX_AMOUNT:
            out.append(f"{where}: amount {v!r} beyond 1e27")

    def walk(v: Any, key: str | None, where: str, keyed: int = 0) -> None:
        """``keyed``: how many levels of maps keyed by ids ``v`` still is (their keys are
        ids, not field names)."""
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    out.append(f"{where}: key {k!r} is not text")
                    continue
                here = f"{where}.{k}"
                if keyed:
                    out.extend(p for p in [_id_problem(k, f"{where} key")] if p)
                    walk(x, None, here, keyed - 1)
                    continue
                inner = 2 if k in ID_KEYED_TWICE else 1 if k in ID_KEYED else 0
                walk(x, k, here, inner)
                if k in ID_FIELDS:
                    out.extend(p for p in [_id_problem(x, here)] if p)
                if k in ID_LISTS and isinstance(x, list):
                    out.extend(p for i, y in enumerate(x) if (p := _id_problem(y, f"{here}[{i}]")))
                if k == "lot_size_by_symbol" and isinstance(x, dict):
                    for s, lot in x.items():
                        if not (isinstance(lot, int | float) and MIN_LOT <= lot <= MAX_LOT):
                            out.append(f"{here}.{s}: lot size {lot!r} outside [1e-12, 1e12]")
        elif isinstance(v, list | tuple):
            for i, x in enumerate(v):
                walk(x, key, f"{where}[{i}]")
        elif isinstance(v, int | float):
            number(v, key, where)
        elif isinstance(v, str):
            try:
                v.encode()
            except UnicodeEncodeError:
                out.append(f"{where}: text {v[:40]!r} is not valid Unicode (a lone surrogate)")

    walk(data, None, "$")
    return out


def read_json(data: bytes) -> Any:
    """Parse JSON, refusing NaN and infinities (which orjson never writes, but a
    pre-serialised fragment could hold)."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"{token} in the output: {data[:300]!r}")

    return json.loads(data, parse_constant=refuse)


def reserialised(model_dump: Any, what: str) -> bytes:
    try:
        return orjson.dumps(model_dump)
    except orjson.JSONEncodeError as exc:  # pragma: no cover - a defect if it happens
        raise AssertionError(f"{what} does not re-serialise with orjson: {exc}") from exc


def check_accepted(data: Any, what: str) -> None:
    found = problems(data)
    assert not found, f"{what} accepted with: {found[:5]}"
    reserialised(data, what)


def check_label(h: Hostile, accepted: bool, detail: str = "") -> None:
    if h.expected is not None:
        assert accepted == h.expected, (
            f"{h.kind}: built {'valid' if h.expected else 'invalid'} but "
            f"{'accepted' if accepted else 'refused'} {detail}"
        )


def _show(h: Hostile) -> None:
    value = h.value if h.value is None or len(h.value) <= 2000 else h.value[:2000] + b"..."
    note(f"kind={h.kind} expected={h.expected} key={h.key!r} value={value!r}")


# -- 1. decoders ----------------------------------------------------------------------------


def decode_allocation(h: Hostile) -> Any | None:
    """The event, or None when the allocation topic's decoding refuses the record."""
    assert h.value is not None
    try:
        event = topic_event_adapter.validate_json(h.value)
    except ValidationError as exc:
        describe(exc)  # what the dead letter says: must not fail either
        return None
    check_accepted(event.model_dump(mode="json"), f"allocation event ({h.kind})")
    return event


@settings(FUZZ, max_examples=examples(1500))
@given(h=labelled("allocations"))
def test_allocation_topic_decoding(h: Hostile) -> None:
    _show(h)
    event = decode_allocation(h)
    # the service also requires the record's key to be the event's portfolio
    keyed = event is not None and h.key == event.portfolio_id.encode()
    check_label(h, keyed, "" if event is None else f"(key {h.key!r})")


def _model_outcome(value: bytes) -> PositionSnapshot | ValidationError:
    try:
        return PositionSnapshot.model_validate_json(value)
    except ValidationError as exc:
        return exc


def _stored_outcome(key: bytes | None, value: bytes) -> StoredSnapshot | Exception:
    try:
        stored = decode_snapshot_record(key, value)
    except (ValidationError, InputError) as exc:
        if isinstance(exc, ValidationError):
            describe(exc)  # what the dead letter says: must not fail either
        return exc
    assert stored is not None
    return stored


def _rows(stored: StoredSnapshot) -> list[tuple[Any, ...]]:
    return [(p.symbol, p.venue, p.qty, p.mark, p.avg_cost) for p in stored.positions()]


def check_snapshot_record(h: Hostile) -> bool:
    """Decode one snapshot record both ways; returns whether the topic accepts it."""
    if h.value is None:  # a tombstone: its key names what it deletes
        assert decode_snapshot_record(h.key, None) is None
        try:
            world_id, strategy_id = tombstone_key(h.key)
        except InputError:
            return False
        for name, value in (("world_id", world_id), ("strategy_id", strategy_id)):
            found = _id_problem(value, f"tombstone key {h.key!r}: {name}")
            assert found is None, found
        return True
    model = _model_outcome(h.value)
    unkeyed = _stored_outcome(None, h.value)
    assert isinstance(model, PositionSnapshot) == isinstance(unkeyed, StoredSnapshot), (
        f"decode_snapshot_record {'accepts' if isinstance(unkeyed, StoredSnapshot) else 'refuses'}"
        f" what PositionSnapshot {'accepts' if isinstance(model, PositionSnapshot) else 'refuses'}"
        f": {unkeyed!r} / {model!r}"
    )
    if not isinstance(model, PositionSnapshot) or not isinstance(unkeyed, StoredSnapshot):
        assert isinstance(unkeyed, ValidationError), f"refused with {unkeyed!r}"
        return False
    dumped = model.model_dump(mode="json")
    check_accepted(dumped, f"snapshot ({h.kind})")
    assert (unkeyed.world_id, unkeyed.strategy_id, unkeyed.as_of, unkeyed.seq) == (
        model.world_id,
        model.strategy_id,
        model.as_of,
        model.seq,
    )
    assert unkeyed.converged_plan_id == model.converged_plan_id
    assert unkeyed.position_count == len(model.positions)
    rows = _rows(unkeyed)
    assert rows == [(p.symbol, p.venue, p.qty, p.mark, p.avg_cost) for p in model.positions]
    stored_rows = msgspec.to_builtins(unkeyed.positions())
    check_accepted(stored_rows, f"stored positions ({h.kind})")
    keyed = _stored_outcome(h.key, h.value)
    matches = h.key is None or h.key == model.key.encode("utf-8", "surrogatepass")
    if matches:
        assert isinstance(keyed, StoredSnapshot), f"key {h.key!r} matches but: {keyed!r}"
    else:
        assert isinstance(keyed, InputError), f"key {h.key!r} for {model.key!r}: {keyed!r}"
    return matches


@settings(FUZZ, max_examples=examples(1500))
@given(h=labelled("snapshots"))
def test_snapshot_topic_decoding(h: Hostile) -> None:
    _show(h)
    check_label(h, check_snapshot_record(h))


# -- 2. the plan request --------------------------------------------------------------------


def check_request(h: Hostile) -> bool:
    assert h.value is not None
    try:
        context = parse_request(h.value, now_ms=NOW)
    except (InputError, ValidationError):
        return False
    table = context.positions
    data = {
        "event_id": context.event_id,
        "portfolio_id": context.portfolio_id,
        "occurred_at": context.occurred_at,
        "total_equity": context.total_equity,
        "changes": [
            {
                "world_id": c.world_id,
                "alloc_before": c.alloc_before,
                "alloc_after": c.alloc_after,
                "strategy_alloc_before": dict(c.strategy_before or {}),
                "strategy_alloc_after": dict(c.strategy_after or {}),
            }
            for c in context.changes
        ],
        "strategy_alloc": {w: dict(m) for w, m in context.current_weights.items()},
        "options": context.options.model_dump(mode="json"),
        "positions": [
            {
                "world_id": table.worlds[table.world[i]],
                "strategy_id": table.strategies[table.strategy[i]][1],
                "venue": table.venues[table.venue[i]],
                "symbol": table.symbols[table.symbol[i]],
                "qty": float(table.qty[i]),
                "mark": None if math.isnan(table.mark[i]) else float(table.mark[i]),
            }
            for i in range(len(table))
        ],
    }
    check_accepted(data, f"plan request ({h.kind})")
    for c in context.changes:
        for ratio in (c.alloc_before, c.alloc_after):
            assert ratio is None or 0 <= ratio <= 1, f"{c.world_id}: allocation {ratio!r}"
    read_json(context.trigger)
    return True


@settings(FUZZ, max_examples=examples(800))
@given(h=labelled("requests"))
def test_plan_request_parsing(h: Hostile) -> None:
    _show(h)
    check_label(h, check_request(h))


# -- 3. the plan command --------------------------------------------------------------------

REQUIRED_NUMBERS = frozenset(
    {
        "current_qty",
        "target_qty",
        "delta_qty",
        "delta_qty_unrounded",
        "scale_world",
        "total_equity",
        "min_trade_notional",
        "qty_decimals",
        "occurred_at",
        "created_at",
        "expires_at",
    }
)
NUMBER_MAPS = frozenset({"scale_by_strategy", "strategy_alloc_before", "strategy_alloc_after"})


def null_numbers(data: Any) -> list[str]:
    """Places of a plan (or intent) output where a number is required but null (or not a
    number) is written; a dropped key's mark and notional may be null."""
    out: list[str] = []

    def is_number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    def walk(v: Any, where: str, dropped: bool) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                here = f"{where}.{k}"
                required = k in REQUIRED_NUMBERS or (k in ("mark", "notional") and not dropped)
                if required and not is_number(x):
                    out.append(f"{here} is {x!r}")
                if k in NUMBER_MAPS and isinstance(x, dict):
                    out.extend(f"{here}.{s} is {y!r}" for s, y in x.items() if not is_number(y))
                walk(x, here, dropped or k in ("dropped", "global_dropped"))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]", dropped)
        elif isinstance(v, float) and not math.isfinite(v):
            out.append(f"{where} is {v!r}")

    walk(data, "$", False)
    return out


@dataclass
class CliRun:
    code: int
    stdout: bytes
    stderr: str


def run_plan(body: bytes, *flags: str) -> CliRun:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "request.json"
        path.write_bytes(body)
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        err = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["plan", str(path), "--now", "1000", *flags])
            out.flush()
        stdout = out.buffer.getvalue()
    return CliRun(code, stdout, err.getvalue())


def check_plan_output(stdout: bytes, lines: bool) -> None:
    outputs = [x for x in stdout.splitlines() if x.strip()] if lines else [stdout]
    for raw in outputs:
        data = read_json(raw)
        if lines and "error" in data:
            continue
        found = null_numbers(data)
        assert not found, f"plan output with null or non-finite numbers: {found[:5]}"


@settings(FUZZ, max_examples=examples(200))
@given(
    requests=st.lists(labelled("requests", 40), min_size=1, max_size=3),
    mode=st.sampled_from(["json", "json", "jsonl", "text"]),
)
def test_plan_command_on_hostile_requests(requests: list[Hostile], mode: str) -> None:
    for h in requests:
        _show(h)
    if mode == "jsonl":
        body = b"\n".join(h.value or b"" for h in requests)
        flags: tuple[str, ...] = ("--jsonl", "--with-intents")
    else:
        body = requests[0].value or b""
        flags = ("--format", "text") if mode == "text" else ("--with-intents",)
    run = run_plan(body, *flags)
    note(f"exit {run.code}; stderr {run.stderr[:500]!r}")
    assert run.code in (0, 2), f"exit code {run.code}: {run.stderr[-2000:]}"
    if run.code == 0 and mode != "text":
        check_plan_output(run.stdout, lines=mode == "jsonl")


# -- 4. the engine --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    """A snapshot-topic record as ``SnapshotTable.ingest`` reads it."""

    key: bytes | None
    value: bytes | None


def check_published(data: Any, model: Any, what: str) -> None:
    """``data`` as the edges publish it: orjson bytes that read back as ``model``."""
    found = [p for p in problems(data) if "is not finite" in p or "64 bits" in p]
    assert not found, f"{what}: {found[:5]}"
    raw = reserialised(data, what)
    back = read_json(raw)
    nulls = null_numbers(back)
    assert not nulls, f"{what} with null numbers: {nulls[:5]}"
    try:
        model.model_validate_json(raw)
    except ValidationError as exc:
        raise AssertionError(f"{what} does not validate as {model.__name__}: {exc}") from None
    found = problems(back)
    assert not found, f"{what}: {found[:5]}"


def check_work(work: Work) -> None:
    for i, intent in enumerate(work.intents):
        check_published(intent, DeltaIntent, f"intent {i}")
    for i, record in enumerate(work.records):
        check_published(record, PlanRecord, f"plan record {i}")
    AllocationState().apply_all(work.state)  # ChangelogError is a failure
    if work.pending is not None:
        fresh = AllocationState()
        fresh.apply(*work.pending)
        key = work.pending[0].decode()
        assert key.startswith("pending|"), key
        fresh.pending_plan(key.removeprefix("pending|"))


def carry_out(state: AllocationState, work: Work) -> None:
    """What the service does with work: the write-ahead, then the state."""
    if work.pending is not None:
        state.apply(*work.pending)
    state.apply_all(work.state)


def converge(table: SnapshotTable, state: AllocationState) -> None:
    """The execution nodes report every plan in flight as reached."""
    for (_, world_id), ws in list(state.worlds.items()):
        flight = ws.in_flight
        if flight is None:
            continue
        for strategy_id in flight.strategies:
            held = table.get(world_id, strategy_id)
            if held is None or held.as_of >= MAX_EPOCH_MS:
                continue
            rows = list(msgspec.to_builtins(held.positions()))
            table.apply(
                PositionSnapshot.model_validate(
                    {
                        "world_id": world_id,
                        "strategy_id": strategy_id,
                        "as_of": held.as_of + 1,
                        "positions": rows,
                        "converged_plan_id": flight.plan_id,
                    }
                )
            )


class Driver:
    """An engine fed as the service feeds it: snapshots ingested, events decoded and
    keyed, work carried out, held work released."""

    def __init__(self, options: EngineOptions) -> None:
        self.table = SnapshotTable()
        self.state = AllocationState()
        self.engine = RebalanceEngine(self.state, self.table, options)
        self.outcomes: Counter[str] = Counter()

    def snapshots(self, records: Iterable[Rec]) -> None:
        rejected: list[Exception] = []
        self.table.ingest(records, lambda _rec, exc: rejected.append(exc))
        for exc in rejected:
            assert isinstance(exc, ValidationError | InputError), repr(exc)
        positions = self.table.positions()
        assert all(math.isfinite(q) and abs(q) <= MAX_QUANTITY for q in positions.qty.tolist())

    def event(self, h: Hostile, now: int) -> None:
        event = decode_allocation(h)
        if event is None:
            self.outcomes["refused by the decoder"] += 1
            return
        try:
            work = self.engine.on_event(event, now)
        except InputError:
            self.outcomes["refused by the engine"] += 1
            return
        self.outcomes["planned" if work.plan else "held" if work.held_worlds else "other"] += 1
        check_work(work)
        carry_out(self.state, work)

    def release(self, now: int) -> None:
        for work in self.engine.released_work(now, None):
            self.outcomes["released" if work.plan else "release other"] += 1
            check_work(work)
            carry_out(self.state, work)


@st.composite
def engine_options(draw: st.DrawFn) -> EngineOptions:
    shared = draw(st.sampled_from([False, False, False, True]))
    planner = PlannerOptions(
        lot_size_by_symbol=draw(
            st.sampled_from([{}, {"X": 0.001}, {"BTC": MIN_LOT, "ETH": 0.25}, {"X": MAX_LOT}])
        ),
        min_trade_notional=draw(st.sampled_from([0.0, 10.0, 1e6])),
        flip_policy=draw(st.sampled_from(["flatten_then_open", "direct_flip"])),
        direct_flip_venues=("v1",),
        scale_rule=draw(st.sampled_from(["strategy", "bounded"])),
        execution_mode="shared_account" if shared else "per_world",
        allow_shared_account=shared,
        qty_decimals=draw(st.sampled_from([12, 0, 15])),
    )
    return EngineOptions(
        planner=planner,
        plan_settle_timeout_ms=draw(st.sampled_from([0, 1_000, 600_000])),
        max_snapshot_age_ms=draw(st.sampled_from([None, None, 10_000, 10**13])),
    )


@settings(FUZZ, max_examples=examples(400))
@given(
    options=engine_options(),
    first=st.lists(labelled("snapshots", 80), max_size=8),
    steps=st.lists(
        st.tuples(
            labelled("allocations", 60),
            st.lists(labelled("snapshots", 70), max_size=2),
            st.integers(0, 2_000_000),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
    start=st.sampled_from([1_000_000, NOW]),
)
def test_engine_on_hostile_events(
    options: EngineOptions,
    first: list[Hostile],
    steps: list[tuple[Hostile, list[Hostile], int, bool]],
    start: int,
) -> None:
    driver = Driver(options)
    for h in first:
        _show(h)
    driver.snapshots(Rec(h.key, h.value) for h in first)
    now = start
    for event, snaps, wait, reached in steps:
        _show(event)
        for h in snaps:
            _show(h)
        driver.snapshots(Rec(h.key, h.value) for h in snaps)
        driver.event(event, now)
        now += wait
        if reached:
            converge(driver.table, driver.state)
        driver.release(now)
    note(f"outcomes {dict(driver.outcomes)}")


# -- 5. a fixed corpus, as the stream test will send it --------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_corpus_through_decoders_and_engine(seed: int) -> None:
    corpus = hostile_corpus(seed, 1500)
    assert corpus == hostile_corpus(seed, 1500)  # deterministic
    kinds = Counter((topic, kind) for topic, kind, *_ in corpus)
    assert len(kinds) > 60, kinds
    driver = Driver(EngineOptions(plan_settle_timeout_ms=5_000))
    now = NOW
    mislabelled = []
    for i, (topic, kind, key, value, expected) in enumerate(corpus):
        h = Hostile(kind, key, value, expected)
        if topic == "snapshots":
            accepted = check_snapshot_record(h)
            driver.snapshots([Rec(key, value)])
        else:
            event = decode_allocation(h)
            accepted = event is not None and key == event.portfolio_id.encode()
            if accepted:
                driver.event(h, now)
        if expected is not None and accepted != expected:
            mislabelled.append((i, topic, kind, key, (value or b"")[:300]))
        now += 700
        if i % 50 == 0:
            converge(driver.table, driver.state)
            driver.release(now)
    assert not mislabelled, mislabelled[:5]
    assert driver.outcomes["planned"] > 0, driver.outcomes
    print(f"seed {seed}: {dict(driver.outcomes)}", file=sys.stderr)
