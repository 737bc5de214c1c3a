"""Property tests of the proportional planner (SPEC 3) on random portfolios.

Every property compares the planner's output with quantities computed here, independently,
from the input rows: scale factors (SPEC 3.1), per-key sums, marks, lots and thresholds
(SPEC 3.2) and the reduce-only and flip rules (SPEC 3.3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from service.planner import (
    MultiWorldProportionalRebalancer,
    Plan,
    PlannerOptions,
    PlanningContext,
    PlanningError,
    PositionTable,
    WorldChange,
)
from service.planner.plan import intents_from_record
from tests.examples import examples

Row = tuple[str, str, str | None, str, float, float | None, int]
Json = dict[str, Any]
Key = tuple[str | None, str | None, str]
"""(world_id, venue, symbol); world_id is None for the global view."""

WORLDS = ("alpha", "beta", "gamma")
STRATEGIES = ("s1", "s2", "s3", "s4")
VENUES: tuple[str | None, ...] = (None, "binance", "okx")
NAMED_VENUES = ("binance", "okx")
SYMBOLS = ("BTC", "ETH", "SOL")
LOTS = (0.001, 0.01, 0.1, 0.25, 1.0)

FLAT_TOLERANCE = 1e-12
REL = 1e-9
ABS = 1e-9

SETTINGS = settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One planner input, kept as plain rows so that it can be rebuilt and permuted."""

    rows: tuple[Row, ...]
    changes: tuple[WorldChange, ...]
    options: PlannerOptions
    total_equity: float


def build_context(
    scenario: Scenario,
    rows: Sequence[Row] | None = None,
    changes: Sequence[WorldChange] | None = None,
) -> PlanningContext:
    """A fresh context (and a fresh position table) for the scenario."""
    return PlanningContext(
        event_id="evt-props",
        portfolio_id="pf-props",
        occurred_at=1_700_000_000_000,
        total_equity=scenario.total_equity,
        changes=tuple(scenario.changes if changes is None else changes),
        positions=PositionTable.from_rows(scenario.rows if rows is None else rows),
        options=scenario.options,
    )


def run(scenario: Scenario) -> Plan:
    """Plan the scenario with the multi-world planner."""
    return MultiWorldProportionalRebalancer().plan(build_context(scenario))


def weights(draw: st.DrawFn, *, zero_every: int) -> dict[str, float]:
    """Strategy weights for a random subset of strategies, zero about once in ``zero_every``."""
    chosen = draw(st.lists(st.sampled_from(STRATEGIES), unique=True, max_size=len(STRATEGIES)))
    out: dict[str, float] = {}
    for s in chosen:
        if draw(st.integers(0, zero_every - 1)) == 0:
            out[s] = 0.0
        else:
            out[s] = draw(alloc())
    return out


def alloc() -> st.SearchStrategy[float]:
    """A positive allocation in (0, 1]: round percentages or arbitrary floats."""
    return st.one_of(
        st.integers(1, 100).map(lambda k: k / 100),
        st.floats(0.001, 1.0, allow_nan=False, allow_infinity=False),
    )


@st.composite
def row_sets(draw: st.DrawFn) -> tuple[Row, ...]:
    """Position rows, at most one per (world, strategy, venue, symbol).

    Quantities are multiples of 0.001 in [-20, 20]. Marks are either the same for every row
    of a (venue, symbol) (recency then may tie) or per row, in which case every
    (world, strategy) gets its own recency so that the newest row of any key is unique.
    """
    worlds = draw(st.lists(st.sampled_from(WORLDS), unique=True, min_size=1))
    venues = draw(st.lists(st.sampled_from(VENUES), unique=True, min_size=1))
    symbols = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, min_size=1))
    capacity = len(worlds) * len(STRATEGIES) * len(venues) * len(symbols)
    slots = draw(
        st.lists(
            st.tuples(
                st.sampled_from(worlds),
                st.sampled_from(STRATEGIES),
                st.sampled_from(venues),
                st.sampled_from(symbols),
            ),
            unique=True,
            min_size=min(draw(st.integers(1, 16)), capacity // 2 + 1),
            max_size=24,
        )
    )
    mode = draw(st.sampled_from(["consistent", "per_row"]))
    pairs = sorted({(w, s) for w, s, _, _ in slots})
    order = draw(st.permutations(range(len(pairs))))
    distinct_recency = mode == "per_row" or draw(st.booleans())
    recency = {p: (order[i] if distinct_recency else 0) for i, p in enumerate(pairs)}
    pair_marks: dict[tuple[str | None, str], float | None] = {}
    rows: list[Row] = []
    for w, s, v, y in slots:
        qty = draw(st.integers(-20_000, 20_000)) / 1000
        if mode == "consistent":
            if (v, y) not in pair_marks:
                pair_marks[(v, y)] = draw(mark_values())
            mark = pair_marks[(v, y)]
        else:
            mark = draw(mark_values())
        rows.append((w, s, v, y, qty, mark, recency[(w, s)]))
    return tuple(rows)


def mark_values() -> st.SearchStrategy[float | None]:
    """A mark: positive, occasionally missing."""
    return st.integers(0, 11).flatmap(
        lambda k: (
            st.none()
            if k == 0
            else st.one_of(
                st.sampled_from([1.0, 2.5, 100.0, 3_000.0, 60_000.0]),
                st.floats(0.05, 80_000.0, allow_nan=False, allow_infinity=False),
            )
        )
    )


@st.composite
def option_sets(draw: st.DrawFn, **fixed: Any) -> PlannerOptions:
    """Planner options: lot sizes, thresholds, rules and policies."""
    by_symbol = {
        y: draw(st.sampled_from(LOTS))
        for y in draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=3))
    }
    by_venue: dict[str, dict[str, float]] = {}
    if draw(st.integers(0, 3)) == 0:
        for v in draw(st.lists(st.sampled_from(NAMED_VENUES), unique=True, min_size=1)):
            symbols = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, min_size=1))
            by_venue[v] = {y: draw(st.sampled_from(LOTS)) for y in symbols}
    shared = draw(st.integers(0, 5)) == 3
    values: dict[str, Any] = {
        "lot_size_by_symbol": by_symbol,
        "lot_size_by_venue": by_venue,
        "min_trade_notional": draw(
            st.one_of(
                st.sampled_from([0.0, 0.0, 1.0, 10.0, 250.0]),
                st.floats(0.0, 500.0, allow_nan=False, allow_infinity=False),
            )
        ),
        "scale_rule": draw(st.sampled_from(["strategy", "strategy", "bounded"])),
        "flip_policy": draw(st.sampled_from(["flatten_then_open", "direct_flip"])),
        "direct_flip_venues": tuple(
            draw(st.lists(st.sampled_from(NAMED_VENUES), unique=True, max_size=2))
        ),
        "execution_mode": "shared_account" if shared else "per_world",
        "allow_shared_account": shared,
    }
    values.update(fixed)
    return PlannerOptions(**values)


@st.composite
def world_changes(draw: st.DrawFn) -> tuple[WorldChange, ...]:
    """Moves for a random subset of the worlds (some worlds may stay unplanned)."""
    changes: list[WorldChange] = []
    for w in WORLDS:
        if draw(st.integers(0, 5)) == 0:
            continue
        before = 0.0 if draw(st.integers(0, 9)) == 0 else draw(alloc())
        after = 0.0 if draw(st.integers(0, 7)) == 0 else draw(alloc())
        strategy_after = weights(draw, zero_every=4) if draw(st.booleans()) else None
        strategy_before = weights(draw, zero_every=6) if draw(st.booleans()) else None
        changes.append(WorldChange(w, before, after, strategy_before, strategy_after))
    return tuple(changes)


@st.composite
def scenarios(draw: st.DrawFn, **fixed_options: Any) -> Scenario:
    """A random portfolio, world moves and options."""
    rows = draw(row_sets())
    changes = draw(world_changes())
    options = draw(option_sets(**fixed_options))
    total_equity = (
        0.0
        if draw(st.integers(0, 4)) == 0
        else draw(st.floats(1_000.0, 2_000_000.0, allow_nan=False, allow_infinity=False))
    )
    return Scenario(rows, changes, options, total_equity)


# --------------------------------------------------------------------------------------------
# An independent model of SPEC 3.1-3.2
# --------------------------------------------------------------------------------------------


def world_scale(before: float | None, after: float | None) -> float:
    if before is None or after is None:
        return 1.0
    if before == 0:
        return 1.0 if after > 0 else 0.0
    return after / before


def derived_weights(scenario: Scenario, world_id: str) -> dict[str, float]:
    """SPEC 3.1: strategy net notional / total_equity (or / the world's net notional)."""
    values: dict[str, list[float]] = defaultdict(list)
    for w, s, _, _, qty, mark, _ in scenario.rows:
        if w == world_id:
            values[s].append(0.0 if mark is None else qty * mark)
    notional = {s: math.fsum(v) for s, v in values.items()}
    if scenario.total_equity > 0:
        base = scenario.total_equity
    else:
        base = math.fsum(notional.values())
        if base <= 0:
            return dict.fromkeys(notional, 0.0)
    return {s: max(v, 0.0) / base for s, v in notional.items()}


def reference_scales(scenario: Scenario) -> dict[tuple[str, str], float]:
    """``g`` per held (world, strategy); worlds that are not moving keep ``g = 1``."""
    held: dict[str, set[str]] = defaultdict(set)
    for w, s, *_ in scenario.rows:
        held[w].add(s)
    g = {(w, s): 1.0 for w, strategies in held.items() for s in strategies}
    rule = scenario.options.scale_rule
    for change in scenario.changes:
        gw = world_scale(change.alloc_before, change.alloc_after)
        funded = change.alloc_after is not None and change.alloc_after > 0
        after_map = change.strategy_after
        if change.strategy_before is not None:
            before = dict(change.strategy_before)
        else:
            before = derived_weights(scenario, change.world_id)
        for s in held.get(change.world_id, set()):
            if after_map is None or s not in after_map:
                g[(change.world_id, s)] = gw
                continue
            a, b = after_map[s], before.get(s, 0.0)
            if a == 0:
                scale = 0.0
            else:
                gs = (gw if funded else 0.0) if b == 0 else a / b
                if rule == "strategy" or gw == 1:
                    scale = gs
                else:
                    scale = min(gw, gs) if gw < 1 else max(gw, gs)
            g[(change.world_id, s)] = scale
    return g


@dataclass
class RefKey:
    """A key's sums, computed exactly (``math.fsum``) from its rows."""

    qtys: list[float] = field(default_factory=list)
    targets: list[float] = field(default_factory=list)
    strategy_qtys: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    scales: list[float] = field(default_factory=list)
    newest: tuple[int, int] | None = None
    mark: float | None = None

    @property
    def current(self) -> float:
        return math.fsum(self.qtys)

    @property
    def target(self) -> float:
        return math.fsum(self.targets)

    @property
    def delta(self) -> float:
        return math.fsum([*self.targets, *(-q for q in self.qtys)])

    @property
    def gross(self) -> float:
        return math.fsum(abs(q) for q in self.qtys)

    @property
    def size(self) -> float:
        """The key's magnitude, for slack relative to it."""
        return max(1.0, self.gross, abs(self.target))

    @property
    def flat(self) -> bool:
        return abs(self.target) <= FLAT_TOLERANCE * self.gross

    @property
    def liquidated(self) -> bool:
        return all(g == 0 for g in self.scales)

    def breakdown(self, g: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
        return {p: math.fsum(q * g[p] - q for q in qs) for p, qs in self.strategy_qtys.items()}


def reference_keys(scenario: Scenario, g: dict[tuple[str, str], float]) -> dict[Key, RefKey]:
    """Per-world keys of the moving worlds, and global keys (world None) over all rows."""
    planned = {c.world_id for c in scenario.changes}
    keys: dict[Key, RefKey] = defaultdict(RefKey)
    for i, (w, s, v, y, qty, mark, recency) in enumerate(scenario.rows):
        views: list[Key] = [(None, v, y)]
        if w in planned:
            views.append((w, v, y))
        for k in views:
            ref = keys[k]
            ref.qtys.append(qty)
            ref.targets.append(qty * g[(w, s)])
            ref.scales.append(g[(w, s)])
            ref.strategy_qtys.setdefault((w, s), []).append(qty)
            if mark is not None and (ref.newest is None or (recency, i) > ref.newest):
                ref.newest, ref.mark = (recency, i), mark
    return dict(keys)


def lot_for(options: PlannerOptions, venue: str | None, symbol: str) -> float | None:
    """The lot size of a (venue, symbol): the venue's own wins over the symbol's."""
    if venue is not None:
        lot = options.lot_size_by_venue.get(venue, {}).get(symbol)
        if lot is not None:
            return lot
    return options.lot_size_by_symbol.get(symbol)


def toward_zero(x: float, lot: float | None) -> float:
    """``x`` rounded toward zero to whole lots (12 decimals without a lot)."""
    if lot is None:
        return round(x, 12)
    n = math.floor(abs(x) / lot + 1e-9 * max(abs(x) / lot, 1.0))
    return math.copysign(n * lot, x)


def close(a: float, b: float, rel: float = REL, abs_: float = ABS) -> bool:
    return abs(a - b) <= abs_ + rel * max(abs(a), abs(b))


def whole_lots(x: float, lot: float) -> bool:
    n = abs(x) / lot
    return abs(n - round(n)) <= 1e-9 * max(1.0, n)


def on_decimals(x: float, decimals: int = 12) -> bool:
    return abs(round(x, decimals) - x) <= 4 * math.ulp(x)


def not_larger(x: float, bound: float) -> bool:
    """``|x| <= |bound|`` with 1e-9 relative and 1e-12 absolute slack."""
    return abs(x) <= abs(bound) * (1 + 1e-9) + 1e-12


# --------------------------------------------------------------------------------------------
# Reading plans
# --------------------------------------------------------------------------------------------


def views(record: Json) -> Iterator[tuple[str | None, list[Json], list[Json]]]:
    """Each view's (world_id or None, traded keys, dropped keys)."""
    for world_id, world in record["per_world"].items():
        yield world_id, world["deltas"], world["dropped"]
    yield None, record["global_deltas"], record["global_dropped"]


def traded(record: Json) -> Iterator[tuple[Key, Json]]:
    for world_id, deltas, _ in views(record):
        for d in deltas:
            yield (world_id, d["venue"], d["symbol"]), d


def emitted_world(options: PlannerOptions, world_id: str | None) -> bool:
    """Whether a view's keys are published as intents."""
    return (options.execution_mode == "shared_account") == (world_id is None)


def intents_by_key(plan: Plan) -> dict[Key, list[Json]]:
    out: dict[Key, list[Json]] = defaultdict(list)
    for intent in plan.intents():
        out[(intent["world_id"], intent["venue"], intent["symbol"])].append(intent)
    return dict(out)


def is_exact_close(leg: Json) -> bool:
    return leg["target_qty"] == 0.0 and leg["delta_qty"] == -leg["current_qty"]


def shrinks_without_crossing(current: float, target: float) -> bool:
    """SPEC 3.3: the position shrinks in absolute size and does not cross zero."""
    return current != 0 and target * current >= 0 and abs(target) < abs(current)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_strategy_breakdown_sums_to_the_unrounded_delta(scenario: Scenario) -> None:
    """(1) Per traded key, the breakdown sums to ``delta_qty_unrounded``, and each strategy's
    share is its own unnetted delta on the key."""
    plan = run(scenario)
    g = reference_scales(scenario)
    refs = reference_keys(scenario, g)
    shared = scenario.options.execution_mode == "shared_account"
    for key, d in traded(plan.record()):
        if key[0] is None and not shared:
            assert d["strategy_breakdown"] == []
            continue
        parts = d["strategy_breakdown"]
        total = math.fsum(p["delta_qty"] for p in parts)
        assert close(total, d["delta_qty_unrounded"]), (key, parts, d["delta_qty_unrounded"])
        assert close(total, refs[key].delta), (key, total, refs[key].delta)
        expected = refs[key].breakdown(g)
        got = {(p.get("world_id") or key[0], p["strategy_id"]): p["delta_qty"] for p in parts}
        assert set(got) == set(expected), key
        for pair, value in expected.items():
            assert close(got[pair], value), (key, pair, got[pair], value)


@SETTINGS
@given(scenarios())
def test_deltas_are_whole_lots_and_never_overshoot(scenario: Scenario) -> None:
    """(2) Every executed quantity is whole lots (12 decimals without a lot) and no larger
    than the unrounded move, except exact closes."""
    plan = run(scenario)
    options = scenario.options
    refs = reference_keys(scenario, reference_scales(scenario))
    for key, d in traded(plan.record()):
        ref = refs[key]
        lot = lot_for(options, key[1], key[2])

        def rounded(x: float, lot: float | None = lot, key: Key = key) -> None:
            if lot is None:
                assert on_decimals(x), (key, x)
            else:
                assert whole_lots(x, lot), (key, x, lot)

        assert close(d["delta_qty_unrounded"], ref.delta), (key, d, ref.delta)
        if not d["flip"] and not is_exact_close(d):
            rounded(d["delta_qty"])
            assert not_larger(d["delta_qty"], ref.delta), (key, d["delta_qty"], ref.delta)
            assert d["delta_qty"] * ref.delta > 0, (key, d["delta_qty"], ref.delta)
        for leg in d["legs"]:
            if is_exact_close(leg):
                continue
            if leg["leg"] == "open":
                rounded(leg["delta_qty"])
                assert not_larger(leg["delta_qty"], ref.target), (key, leg, ref.target)
                assert leg["delta_qty"] * ref.target > 0, (key, leg, ref.target)
            elif d["flip"]:
                # direct_flip: one leg to the lot-rounded target, through zero.
                rounded(leg["target_qty"])
                assert not_larger(leg["target_qty"], ref.target), (key, leg, ref.target)
                assert not_larger(leg["delta_qty"], ref.delta), (key, leg, ref.delta)
            else:
                rounded(leg["delta_qty"])
                assert not_larger(leg["delta_qty"], ref.delta), (key, leg, ref.delta)


@st.composite
def liquidations(draw: st.DrawFn) -> Scenario:
    """A scenario in which some worlds go to 0 and some strategies are given weight 0.

    The world of the first row is always liquidated, so there is something to close.
    """
    scenario = draw(scenarios())
    first_world = scenario.rows[0][0]
    by_world = {c.world_id: c for c in scenario.changes}
    changes: list[WorldChange] = []
    for w in WORLDS:
        change = by_world.get(w) or WorldChange(w, draw(alloc()), draw(alloc()))
        if w == first_world or draw(st.integers(0, 2)) == 0:
            before = change.alloc_before or draw(alloc())
            if draw(st.booleans()):
                change = WorldChange(w, before, 0.0, change.strategy_before, None)
            else:
                zero = dict.fromkeys(STRATEGIES, 0.0)
                change = WorldChange(w, before, draw(alloc()), change.strategy_before, zero)
        else:
            zeroed = draw(st.lists(st.sampled_from(STRATEGIES), unique=True))
            after = {**(change.strategy_after or {}), **dict.fromkeys(zeroed, 0.0)}
            change = dataclasses.replace(change, strategy_after=after or None)
        changes.append(change)
    return dataclasses.replace(scenario, changes=tuple(changes))


@SETTINGS
@given(liquidations())
def test_a_flat_target_is_closed_exactly(scenario: Scenario) -> None:
    """(3) A key whose holders are all liquidated is closed to exactly 0, whatever its lot."""
    plan = run(scenario)
    record = plan.record()
    options = scenario.options
    refs = reference_keys(scenario, reference_scales(scenario))
    found = {
        (world_id, d["venue"], d["symbol"]): d
        for world_id, deltas, dropped in views(record)
        for d in [*deltas, *dropped]
    }
    by_key = intents_by_key(plan)
    checked = 0
    for key, ref in refs.items():
        current = round(ref.current, 12) + 0.0
        if not ref.liquidated or current == 0:
            continue
        entry = found[key]
        if ref.mark is None:
            assert entry.get("reason") == "missing_mark", (key, entry)
            continue
        if abs(current) * ref.mark < options.min_trade_notional * (1 + 1e-9):
            continue  # too small to trade: may be dropped
        checked += 1
        assert "reason" not in entry, (key, entry)
        assert close(entry["current_qty"], ref.current), (key, entry, ref.current)
        assert entry["target_qty"] == 0.0, (key, entry)
        assert entry["delta_qty"] == -entry["current_qty"], (key, entry)
        assert entry["flip"] is False, (key, entry)
        assert entry["reduce_only"] is True, (key, entry)
        if emitted_world(options, key[0]):  # legs are materialised for published views only
            (leg,) = entry["legs"]
            assert leg["leg"] == "close", (key, leg)
            assert leg["target_qty"] == 0.0, (key, leg)
            assert leg["delta_qty"] == -leg["current_qty"] == -entry["current_qty"], (key, leg)
            (intent,) = by_key[key]
            assert intent["target_qty"] == 0.0, (key, intent)
            assert intent["delta_qty"] == -intent["current_qty"], (key, intent)
            assert intent["current_qty"] + intent["delta_qty"] == 0.0, (key, intent)
    note(f"liquidated keys checked: {checked}")


@SETTINGS
@given(scenarios())
def test_reduce_only_never_crosses_zero_or_grows(scenario: Scenario) -> None:
    """(4) ``reduce_only`` is set exactly when a leg shrinks a position without crossing 0."""
    plan = run(scenario)
    legs = [leg for _, d in traded(plan.record()) for leg in d["legs"]]
    for item in [*plan.intents(), *legs]:
        current, target = item["current_qty"], item["target_qty"]
        assert close(item["delta_qty"], target - current), item
        if item["reduce_only"]:
            assert target == 0.0 or abs(target) < abs(current), item
            assert target * current >= 0, item
            assert current != 0, item
        else:
            assert not shrinks_without_crossing(current, target), item


@st.composite
def unit_scalings(draw: st.DrawFn) -> Scenario:
    """Every world keeps its allocation; strategies keep theirs (cascade or restated)."""
    scenario = draw(scenarios())
    changes: list[WorldChange] = []
    for w in WORLDS:
        a = draw(alloc())
        if draw(st.booleans()):
            changes.append(WorldChange(w, a, a))
        else:
            chosen = draw(st.lists(st.sampled_from(STRATEGIES), unique=True))
            same = {s: draw(alloc()) for s in chosen}
            changes.append(WorldChange(w, a, a, same, dict(same)))
    return dataclasses.replace(scenario, changes=tuple(changes))


@SETTINGS
@given(unit_scalings())
def test_scaling_by_one_yields_no_intents(scenario: Scenario) -> None:
    """(5) A move that changes nothing trades nothing: every key is dropped as unchanged."""
    plan = run(scenario)
    record = plan.record()
    assert plan.intents() == []
    assert record["intent_ids"] == []
    for world_id, deltas, dropped in views(record):
        assert deltas == [], (world_id, deltas)
        assert {d["reason"] for d in dropped} <= {"unchanged"}, (world_id, dropped)
        for d in dropped:
            assert d["delta_qty_unrounded"] == 0.0, (world_id, d)


def plan_bytes(plan: Plan) -> tuple[str, list[str], bytes, bytes, bytes]:
    """A plan's ids and serialised record and intents, plain and in the wire form (which
    keeps breakdown layouts on the table between plans)."""
    return (
        plan.plan_id,
        [i["intent_id"] for i in plan.intents()],
        orjson.dumps(plan.record()),
        orjson.dumps(plan.intents()),
        orjson.dumps(plan.wire),
    )


@SETTINGS
@given(scenarios())
def test_planning_is_deterministic(scenario: Scenario) -> None:
    """(6) The same input, planned twice, gives the same ids and the same bytes."""
    planner = MultiWorldProportionalRebalancer()
    context = build_context(scenario)
    first = plan_bytes(planner.plan(context))
    again = plan_bytes(planner.plan(context))
    fresh = plan_bytes(MultiWorldProportionalRebalancer().plan(build_context(scenario)))
    assert again == first
    assert fresh == first
    assert len(set(first[1])) == len(first[1])


@SETTINGS
@given(scenarios())
def test_a_table_prepared_or_planned_on_before_gives_the_same_plan(scenario: Scenario) -> None:
    """(6a) What a planner keeps on a position table between plans (``prepare``, or an
    earlier plan with other moves) changes no byte of the next plan."""
    expected = plan_bytes(run(scenario))
    planner = MultiWorldProportionalRebalancer()
    prepared = build_context(scenario)
    planner.prepare(prepared.positions, scenario.options)
    assert plan_bytes(planner.plan(prepared)) == expected
    reused = build_context(scenario)
    other = [WorldChange(c.world_id, c.alloc_after, c.alloc_before) for c in scenario.changes]
    for first in (other, other[:1]):  # the reverse move first, and one world's of it
        with contextlib.suppress(PlanningError):
            planner.plan(dataclasses.replace(reused, changes=tuple(first)))
    assert plan_bytes(planner.plan(reused)) == expected


@SETTINGS
@given(scenarios())
def test_the_wire_form_serialises_to_the_same_bytes(scenario: Scenario) -> None:
    """(6b) The service publishes ``Plan.wire`` (breakdowns pre-serialised): byte for byte
    what the plain record and intents serialise to, so a plan resumed from its write-ahead
    republishes identical intents."""
    plan = run(scenario)
    record = plan.wire
    assert orjson.dumps(record) == orjson.dumps(plan.record())
    intents = intents_from_record(record)
    assert [orjson.dumps(i) for i in intents] == [orjson.dumps(i) for i in plan.intents()]


@SETTINGS
@given(scenarios())
def test_one_world_plans_its_global_view_from_its_own(scenario: Scenario) -> None:
    """(6c) The service plans one world on a table of that world's rows. Its global view
    is then copied from the world's keys instead of netted again: the same bytes as netting
    it, plain and wire form, whatever the options (shared accounts always net)."""
    assume(scenario.changes)
    change = scenario.changes[0]
    rows = [r for r in scenario.rows if r[0] == change.world_id]
    assume(rows)
    context = build_context(scenario, rows=rows, changes=[change])

    class NettingAgain(MultiWorldProportionalRebalancer):
        reuse_world_view = False

    try:
        reused = MultiWorldProportionalRebalancer().plan(context)
    except PlanningError:
        return
    netted = NettingAgain().plan(build_context(scenario, rows=rows, changes=[change]))
    shared = scenario.options.execution_mode == "shared_account"
    assert reused.global_is_per_world is not shared
    assert not netted.global_is_per_world
    assert plan_bytes(reused) == plan_bytes(netted)


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False))
def test_row_order_does_not_matter(scenario: Scenario, random: Any) -> None:
    """(7) Shuffling the rows (and the order the worlds are named in) changes nothing."""
    rows = list(scenario.rows)
    random.shuffle(rows)
    changes = list(scenario.changes)
    random.shuffle(changes)
    original = run(scenario)
    shuffled = MultiWorldProportionalRebalancer().plan(build_context(scenario, rows, changes))
    note(f"shuffled rows: {rows}")
    assert shuffled.plan_id == original.plan_id
    assert plan_bytes(shuffled) == plan_bytes(original)


@SETTINGS
@given(scenarios())
def test_netting_sums_rows_per_key(scenario: Scenario) -> None:
    """(8) Each key's current, unrounded delta and mark come from its rows; a traded adjust
    keeps ``target = current + delta``; every key of every view is reported exactly once."""
    plan = run(scenario)
    record = plan.record()
    g = reference_scales(scenario)
    refs = reference_keys(scenario, g)
    for world_id, world in record["per_world"].items():
        for s, scale in world["scale_by_strategy"].items():
            if (world_id, s) in g:
                assert close(scale, g[(world_id, s)], 1e-12, 0.0), (world_id, s, scale)
    seen: list[Key] = []
    for world_id, deltas, dropped in views(record):
        for d in [*deltas, *dropped]:
            key = (world_id, d["venue"], d["symbol"])
            seen.append(key)
            ref = refs[key]
            assert close(d["current_qty"], ref.current), (key, d, ref.current)
            assert close(d["delta_qty_unrounded"], ref.delta), (key, d, ref.delta)
            assert d["mark"] == ref.mark, (key, d["mark"], ref.mark)
        for d in deltas:
            key = (world_id, d["venue"], d["symbol"])
            if d["flip"] or d["target_qty"] == 0.0:
                continue
            assert close(d["target_qty"], d["current_qty"] + d["delta_qty"]), (key, d)
            lot = lot_for(scenario.options, key[1], key[2]) or 0.0
            slack = lot * (1 + 1e-9) + ABS + REL * refs[key].size
            assert abs(d["target_qty"] - refs[key].target) <= slack, (key, d)
    assert len(seen) == len(set(seen))
    assert set(seen) == set(refs)


@SETTINGS
@given(scenarios(flip_policy="flatten_then_open"))
def test_flips_close_then_open(scenario: Scenario) -> None:
    """(9) Under flatten_then_open a sign flip is a reduce-only close to 0 and an open that
    depends on it, to the unrounded target rounded toward zero in lots."""
    plan = run(scenario)
    options = scenario.options
    refs = reference_keys(scenario, reference_scales(scenario))
    by_key = intents_by_key(plan)
    traded_keys = dict(traded(plan.record()))
    for key, d in traded_keys.items():
        ref = refs[key]
        emitted = emitted_world(options, key[0])
        if not d["flip"]:
            if emitted:
                assert len(d["legs"]) == 1, (key, d)
                assert len(by_key[key]) == 1, (key, by_key[key])
            continue
        assert ref.current * ref.target < 0, (key, ref.current, ref.target)
        # The open target is the unrounded target rounded toward zero: the biggest whole
        # number of lots not beyond it.
        lot = lot_for(options, key[1], key[2])
        opened = d["target_qty"]
        assert opened * ref.target > 0, (key, opened, ref.target)
        assert not_larger(opened, ref.target), (key, opened, ref.target)
        step = lot if lot is not None else 1e-12
        slack = step * (1 + 1e-9) + 1e-12 + REL * ref.size
        assert abs(ref.target) - abs(opened) < slack, (key, opened, ref.target)
        if not emitted:  # legs are materialised for published views only
            continue
        close_leg, open_leg = d["legs"]
        assert close_leg["leg"] == "close", (key, close_leg)
        assert close_leg["reduce_only"] is True, (key, close_leg)
        assert close_leg["target_qty"] == 0.0, (key, close_leg)
        assert close_leg["delta_qty"] == -close_leg["current_qty"], (key, close_leg)
        assert close(close_leg["current_qty"], ref.current), (key, close_leg)
        assert open_leg["leg"] == "open", (key, open_leg)
        assert open_leg["depends_on"] == close_leg["intent_id"], (key, open_leg)
        assert open_leg["reduce_only"] is False, (key, open_leg)
        assert open_leg["current_qty"] == 0.0, (key, open_leg)
        assert open_leg["target_qty"] == open_leg["delta_qty"] == opened, (key, d)
        intents = by_key[key]
        assert [i["leg"] for i in intents] == ["close", "open"], (key, intents)
        first, second = intents
        assert second["depends_on"] == first["intent_id"], (key, intents)
        assert first["reduce_only"] is True, (key, first)
        assert first["target_qty"] == 0.0, (key, first)
        assert first["delta_qty"] == -first["current_qty"], (key, first)
        assert second["reduce_only"] is False, (key, second)
        assert second["target_qty"] == opened, (key, second)
    # Conversely, a key that clearly flips, with an opening side that clearly survives
    # rounding and the threshold, must be planned as a flip.
    floor = options.min_trade_notional * (1 + 1e-6)
    for key, ref in refs.items():
        if ref.mark is None or ref.current * ref.target >= 0 or ref.flat:
            continue
        if abs(round(ref.current, 12)) == 0 or abs(ref.target) < 1e-9 * ref.gross:
            continue
        opened = toward_zero(ref.target, lot_for(options, key[1], key[2]))
        if abs(opened) * ref.mark < floor or abs(opened) == 0 or abs(ref.delta) * ref.mark < floor:
            continue
        assert key in traded_keys, (key, ref.current, ref.target)
        assert traded_keys[key]["flip"] is True, (key, traded_keys[key])


@SETTINGS
@given(scenarios())
def test_drop_reasons_are_justified(scenario: Scenario) -> None:
    """(10) Traded keys clear ``min_trade_notional``; each dropped key's reason holds."""
    plan = run(scenario)
    options = scenario.options
    minimum = options.min_trade_notional
    refs = reference_keys(scenario, reference_scales(scenario))
    for world_id, deltas, dropped in views(plan.record()):
        for d in deltas:
            ref = refs[(world_id, d["venue"], d["symbol"])]
            assert ref.mark is not None, d
            assert abs(ref.delta) * ref.mark >= minimum * (1 - 1e-9), (d, ref.delta)
            for leg in d["legs"]:
                if leg["leg"] != "close":
                    assert abs(leg["delta_qty"]) * ref.mark >= minimum * (1 - 1e-9), leg
        for d in dropped:
            key = (world_id, d["venue"], d["symbol"])
            ref = refs[key]
            reason = d["reason"]
            if reason == "unchanged":
                negligible = abs(ref.delta) <= FLAT_TOLERANCE * ref.size
                assert negligible or (ref.flat and round(ref.current, 12) == 0), (key, d)
            elif reason == "missing_mark":
                assert ref.mark is None, (key, d)
            elif reason == "below_min_notional":
                assert ref.mark is not None, (key, d)
                notional = abs(ref.delta) * ref.mark
                if notional >= minimum * (1 + 1e-9):
                    rounded = toward_zero(ref.delta, lot_for(options, key[1], key[2]))
                    assert not ref.flat, (key, d)
                    assert ref.current * ref.target >= 0, (key, d)
                    assert abs(rounded) * ref.mark < minimum * (1 + 1e-9), (key, d, rounded)
            else:
                assert reason == "rounded_to_zero", (key, d)
                lot = lot_for(options, key[1], key[2])
                assert not ref.flat, (key, d)
                assert ref.current * ref.target >= 0, (key, d)
                assert abs(ref.delta) < (lot or 1e-12) * (1 + 1e-9) + REL * ref.size, (key, d)
