"""Where the engine's decision on one allocation event goes, back to back and after idle.

Issue 13 (event to last intent on Apache Kafka). Run from the README's venv:
    .venv/bin/python bench/decision.py [--quick]

The world of ``bench/stream.py``'s part (b): 10,000 positions (50 strategies x 200 symbols),
each event moving it between 0.3 and 0.2 (200 traded keys, 200 intents). The engine decides
in-process, without Kafka, as ``rebalancer run`` does (``RebalanceEngine.on_event``, its
state written as the edges write it). Each event is timed whole and in parts: the planner's
arithmetic, turning the plan into its record (``plan.wire``), serialising the write-ahead,
and the rest (admission, state, checks). Events come back to back, then with an idle pause
before each (100 ms, as the paced events of ``bench/stream.py`` arrive; ``--spin`` spends
it spinning on the clock instead of asleep), in alternating rounds; medians per round. Last,
the size of one write-ahead, and what zstd makes of it, in how long.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.runtime import tune_allocator

tune_allocator()  # as the service does at start-up, before the work allocates

from service.engine import EngineOptions, RebalanceEngine  # noqa: E402
from service.engine import effects as engine_effects  # noqa: E402
from service.messages import PositionSnapshot, allocation_event_adapter  # noqa: E402
from service.messages.allocation import AllocationEvent  # noqa: E402
from service.planner import plan as planner_plan  # noqa: E402
from service.state.allocations import AllocationState  # noqa: E402
from service.state.snapshots import SnapshotTable  # noqa: E402

PARTS = ("planner arithmetic", "record", "write-ahead serialised", "the rest")


class Timings:
    """Per part, the seconds spent in it during the event in hand."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, owner: Any, name: str, part: str) -> Callable[[], None]:
        """Time ``owner.name`` as ``part``; returns what undoes it."""
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[part] = self.spent.get(part, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original)


@contextmanager
def timed_parts(timings: Timings) -> Iterator[None]:
    undo = [
        timings.wrap(engine_effects, "run_planner", "planner arithmetic"),
        timings.wrap(planner_plan._Materialiser, "run", "record"),
        timings.wrap(engine_effects, "publication", "write-ahead serialised"),
    ]
    try:
        yield
    finally:
        for u in undo:
            u()


def engine_of_big_world() -> RebalanceEngine:
    symbols = [f"SYM{i:03d}" for i in range(200)]
    snapshots = SnapshotTable()
    for s in range(50):
        positions = [
            {"venue": "binance", "symbol": y, "qty": 1.5, "mark": 100.0 + i}
            for i, y in enumerate(symbols)
        ]
        snapshots.apply(
            PositionSnapshot.model_validate(
                {
                    "world_id": "big",
                    "strategy_id": f"s{s:02d}",
                    "as_of": 1_000,
                    "positions": positions,
                }
            )
        )
    return RebalanceEngine(AllocationState(), snapshots, EngineOptions(plan_settle_timeout_ms=1))


class Events:
    """The bench's events, one after another, each decided and its state written."""

    def __init__(self) -> None:
        self.engine = engine_of_big_world()
        self.serial = 0
        self.timings = Timings()

    def next_event(self) -> AllocationEvent:
        r = self.serial
        before, after = (0.3, 0.2) if r % 2 == 0 else (0.2, 0.3)
        return allocation_event_adapter.validate_python(
            {
                "type": "world_allocations_changed",
                "event_id": f"ev-{r}",
                "occurred_at": 1_000 + r,
                "total_equity": 1e7,
                "world_alloc_after": {"big": after},
                "world_alloc_before": {"big": before},
            }
        )

    def one(self) -> dict[str, float]:
        event = self.next_event()
        r = self.serial
        self.serial += 1
        self.timings.spent.clear()
        start = time.perf_counter()
        work = self.engine.on_event(event, 10_000 + 1_000 * r)
        total = time.perf_counter() - start
        if len(work.intents) != 200:
            raise RuntimeError(f"event {r}: {len(work.intents)} intents, not 200")
        state = self.engine.state
        if work.pending is not None:
            state.apply(*work.pending)
        state.apply_all(work.state)
        parts = {p: s * 1e3 for p, s in self.timings.spent.items()}
        parts["the rest"] = total * 1e3 - sum(parts.values())
        return {"total": total * 1e3, **parts}


def idle(seconds: float, spin: bool) -> None:
    """Wait: asleep (the process off the CPU), or spinning on the clock (on it)."""
    if not spin:
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def round_of(events: Events, n: int, idle_s: float, spin: bool) -> dict[str, float]:
    rows = []
    for _ in range(n):
        if idle_s:
            idle(idle_s, spin)
        rows.append(events.one())
    return {k: statistics.median(row[k] for row in rows) for k in rows[0]}


def print_write_ahead(events: Events) -> None:
    """The size of one write-ahead, and what zstd (as the producer compresses) makes of it."""
    from aiokafka.codec import zstd_encode

    work = events.engine.on_event(events.next_event(), 10_000 + 1_000 * events.serial)
    raw = work.pending[1] if work.pending is not None else None
    if raw is None:
        raise RuntimeError("the event's work has no write-ahead")
    samples = []
    for _ in range(30):
        start = time.perf_counter()
        packed = zstd_encode(raw)
        samples.append((time.perf_counter() - start) * 1e3)
    print(
        f"One write-ahead: {len(raw):,} bytes; zstd: {len(packed):,} bytes in "
        f"{statistics.median(samples):.2f} ms (median of 30).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    parser.add_argument("--idle-ms", type=float, default=100.0, help="pause before each event")
    parser.add_argument(
        "--spin", action="store_true", help="pause by spinning on the clock, not asleep"
    )
    args = parser.parse_args()
    n, rounds = (10, 2) if args.quick else (60, 5)
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {sys.platform}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
    )
    events = Events()
    with timed_parts(events.timings):
        for _ in range(20):  # warm-up: the table's columns, the layouts, the code paths
            events.one()
        results: dict[str, list[dict[str, float]]] = {"back to back": [], "idle before": []}
        for _ in range(rounds):
            results["back to back"].append(round_of(events, n, 0.0, False))
            results["idle before"].append(round_of(events, n, args.idle_ms / 1e3, args.spin))
    how = "spinning" if args.spin else "asleep"
    print(
        f"## The decision on one event, 10,000 positions, 200 intents "
        f"({rounds} rounds of {n} events each way; idle {args.idle_ms:g} ms, {how})\n"
    )
    print("Median of the rounds' medians, ms (min-max of the rounds' medians).\n")
    print("| part | back to back | idle before | idle / back to back |")
    print("|---|---:|---:|---:|")
    for part in ("total", *PARTS):
        cells = []
        for rows in results.values():
            values = [row.get(part, 0.0) for row in rows]
            cells.append(
                (
                    statistics.median(values),
                    f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})",
                )
            )
        ratio = cells[1][0] / cells[0][0] if cells[0][0] else float("nan")
        print(f"| {part} | {cells[0][1]} | {cells[1][1]} | {ratio:.2f} |")
    print()
    print_write_ahead(events)


if __name__ == "__main__":
    main()
