"""Planning requests: turn a user's JSON into a ``PlanningContext``.

Two shapes are accepted. Our own: ``{"event": <allocation event>, "snapshots": [...],
"current": {...}, "options": {...}}`` (what the stream service builds from its topics). And
QMTL's ``POST /rebalancing/plan`` body (``total_equity``, ``world_alloc_before/after``,
``strategy_alloc_*_total``, flat ``positions`` rows, ``min_trade_notional``,
``lot_size_by_symbol``), so users of that API can switch with their payloads as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import orjson
from pydantic import Field, TypeAdapter, ValidationError

from .errors import InputError, input_error
from .messages import PositionSnapshot, StrategyWeightsUpdated, WorldAllocationsChanged
from .messages._types import (
    SUM_TOLERANCE,
    EpochMs,
    LotSize,
    Message,
    Name,
    NonNegative,
    Price,
    Quantity,
    Ratio,
)
from .messages.allocation import AllocationEvent
from .planner import (
    MultiWorldProportionalRebalancer,
    PlannerOptions,
    PlanningContext,
    PlanningError,
    PositionTable,
    WorldChange,
)
from .planner.bounds import check_plan
from .planner.ids import hex_id
from .planner.intents import intents_from_record
from .request_fast import FastDecoder


class CurrentAllocations(Message):
    """The service's own view of the allocations, used for "before" values it is not told."""

    world_alloc: dict[Name, Ratio] = Field(default_factory=dict)
    strategy_alloc: dict[Name, dict[Name, Ratio]] = Field(default_factory=dict)


class PlanRequest(Message):
    """Our own request shape: one allocation event and the snapshots to plan it on."""

    event: AllocationEvent
    snapshots: list[PositionSnapshot] = Field(default_factory=list)
    total_equity: NonNegative | None = Field(
        default=None, description="For strategy_weights_updated, which carries no equity."
    )
    current: CurrentAllocations = Field(default_factory=CurrentAllocations)
    options: dict[str, Any] = Field(default_factory=dict)


class QmtlPosition(Message):
    """A row of QMTL's request: one strategy's holding of one symbol."""

    world_id: Name
    strategy_id: Name
    symbol: Name
    qty: Quantity
    mark: Price | None = None
    venue: Name | None = None


class QmtlPlanRequest(Message):
    """QMTL's multi-world planning request, plus our optional ids and options."""

    total_equity: NonNegative
    world_alloc_before: dict[Name, Ratio]
    world_alloc_after: dict[Name, Ratio]
    positions: list[QmtlPosition]
    strategy_alloc_before_total: dict[Name, dict[Name, Ratio]] | None = None
    strategy_alloc_after_total: dict[Name, dict[Name, Ratio]] | None = None
    min_trade_notional: NonNegative | None = None
    lot_size_by_symbol: dict[Name, LotSize] | None = None
    mode: Literal["scaling"] | None = Field(
        default=None, description="Only 'scaling' is supported (overlay modes are not)."
    )
    overlay: None = Field(
        default=None, description="Accepted as null only: overlay planning is not offered."
    )
    schema_version: int | None = Field(default=None, ge=1)
    rebalance_intent: dict[str, Any] | None = None
    realized_returns_by_world: dict[str, Any] | None = None
    stress_by_world: dict[str, Any] | None = None
    event_id: Name | None = None
    portfolio_id: Name = "default"
    occurred_at: EpochMs | None = None
    options: dict[str, Any] = Field(default_factory=dict)


_plan_request = TypeAdapter(PlanRequest)
_qmtl_request = TypeAdapter(QmtlPlanRequest)
_fast = FastDecoder(PlanRequest.model_fields.keys() | QmtlPlanRequest.model_fields.keys())


def parse_request(
    raw: bytes | str | dict[str, Any],
    *,
    defaults: PlannerOptions | None = None,
    now_ms: int = 0,
    qmtl_only: bool = False,
) -> PlanningContext:
    """Validate a request of either shape and build the planning context.

    ``now_ms`` stands in for ``occurred_at`` when a QMTL request has none (it only sets the
    intents' timestamps; ids do not depend on it). Raises ``InputError`` naming the field.

    JSON text goes the fast way (``request_fast``) when it can; whatever that path declines
    goes through the models, which name what is wrong (``model_parse_request``).
    """
    if isinstance(raw, bytes | str):
        context = fast_parse_request(raw, defaults=defaults, now_ms=now_ms, qmtl_only=qmtl_only)
        if context is not None:
            return context
    return model_parse_request(raw, defaults=defaults, now_ms=now_ms, qmtl_only=qmtl_only)


def fast_parse_request(
    raw: bytes | str,
    *,
    defaults: PlannerOptions | None = None,
    now_ms: int = 0,
    qmtl_only: bool = False,
) -> PlanningContext | None:
    """``parse_request``'s context by the fast path, or None where that path declines (any
    request the models refuse, and some they accept). Public for the test that holds it to
    ``model_parse_request``."""
    fast = _fast.decode(raw)
    if fast is None or (qmtl_only and fast.shape == "ours"):
        return None
    defaults = defaults or PlannerOptions()
    try:
        if fast.shape == "ours":
            request = _plan_request.validate_python(fast.fields)
            return _from_event(request, defaults, fast.table)
        qmtl = _qmtl_request.validate_python(fast.fields)
        return _qmtl_context(qmtl, fast.fields, defaults, now_ms, fast.table)
    except (ValidationError, InputError):
        return None  # the models' path says why


def model_parse_request(
    raw: bytes | str | dict[str, Any],
    *,
    defaults: PlannerOptions | None = None,
    now_ms: int = 0,
    qmtl_only: bool = False,
) -> PlanningContext:
    """``parse_request`` by the models alone: every row through pydantic."""
    if isinstance(raw, bytes | str):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc}") from None
    else:
        data = raw
    if not isinstance(data, dict):
        raise InputError(f"request: expected a JSON object, got {type(data).__name__}")
    defaults = defaults or PlannerOptions()
    if "event" in data and qmtl_only:
        raise InputError(
            "request: this takes QMTL's request body; ours (with 'event') goes to "
            "POST /v1/preview or `rebalancer plan`"
        )
    if "event" in data:
        try:
            request = _plan_request.validate_python(data)
        except ValidationError as exc:
            raise input_error(exc) from None
        return _from_event(
            request, defaults, lambda: PositionTable.from_snapshots(request.snapshots)
        )
    if data.keys() & {"world_alloc_after", "world_alloc_before", "positions", "total_equity"}:
        return _from_qmtl(data, defaults, now_ms)
    raise InputError(
        "request: expected our shape (with 'event' and 'snapshots') or QMTL's "
        "(with 'world_alloc_after' and 'positions')"
    )


def _options(defaults: PlannerOptions, overrides: dict[str, Any]) -> PlannerOptions:
    if not overrides:
        return defaults
    try:
        return PlannerOptions.model_validate({**defaults.model_dump(), **overrides})
    except ValidationError as exc:
        raise input_error(exc, "options.") from None


def _canonical(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


MAX_NESTING = 253
"""How deep a field of a QMTL body may nest (containers in its value): its canonical JSON
(the trigger, hashed into the ids) is written by orjson, which stops at 255 levels."""


def _nested_deeper(value: Any, levels: int) -> bool:
    """Whether ``value`` holds containers more than ``levels`` deep."""
    if not isinstance(value, dict | list):
        return False
    if levels == 0:
        return True
    items = value.values() if isinstance(value, dict) else value
    return any(_nested_deeper(v, levels - 1) for v in items)


def _canonical_body(body: dict[str, Any]) -> bytes:
    """``_canonical(body)``; a field nested too deep to write (QMTL's free-form fields take
    any JSON) is an ``InputError`` naming it."""
    try:
        return _canonical(body)
    except TypeError:
        for name, value in body.items():
            if _nested_deeper(value, MAX_NESTING):
                raise InputError(f"{name}: nested more than {MAX_NESTING} levels deep") from None
        raise


def _from_event(
    request: PlanRequest, defaults: PlannerOptions, positions: Callable[[], PositionTable]
) -> PlanningContext:
    event = request.event
    overrides = dict(request.options)
    current = request.current
    changes: list[WorldChange] = []
    if isinstance(event, WorldAllocationsChanged):
        if event.min_trade_notional is not None:
            overrides.setdefault("min_trade_notional", event.min_trade_notional)
        if event.lot_size_by_symbol is not None:
            merged = {**defaults.lot_size_by_symbol, **event.lot_size_by_symbol}
            overrides.setdefault("lot_size_by_symbol", merged)
        total_equity = event.total_equity
        unnamed = {w: r for w, r in current.world_alloc.items() if w not in event.world_alloc_after}
        combined = sum(unnamed.values()) + sum(event.world_alloc_after.values())
        if combined > 1 + SUM_TOLERANCE:
            raise InputError(
                f"world_alloc_after: with the worlds it leaves untouched {sorted(unnamed)}, "
                f"world allocations would add up to {combined:.12g}, above 1"
            )
        for world, after in sorted(event.world_alloc_after.items()):
            before = (event.world_alloc_before or {}).get(world, current.world_alloc.get(world))
            if before is None:
                raise InputError(
                    f"world_alloc_before.{world}: missing, and no current allocation is known "
                    f"for world {world!r}; the move cannot be scaled without it"
                )
            changes.append(
                WorldChange(
                    world_id=world,
                    alloc_before=before,
                    alloc_after=after,
                    strategy_before=(event.strategy_alloc_before_total or {}).get(world),
                    strategy_after=(event.strategy_alloc_after_total or {}).get(world),
                )
            )
    else:
        assert isinstance(event, StrategyWeightsUpdated)
        total_equity = request.total_equity or 0.0
        world_alloc = current.world_alloc.get(event.world_id)
        if world_alloc is not None:
            total = sum(event.strategy_alloc_after_total.values())
            if total > world_alloc + SUM_TOLERANCE:
                raise InputError(
                    f"strategy_alloc_after_total: strategy weights add up to {total:.12g}, above "
                    f"world {event.world_id!r}'s allocation {world_alloc:.12g}"
                )
        changes.append(
            WorldChange(
                world_id=event.world_id,
                alloc_before=world_alloc,
                alloc_after=world_alloc,
                strategy_before=event.strategy_alloc_before_total,
                strategy_after=event.strategy_alloc_after_total,
            )
        )
    return PlanningContext(
        event_id=event.event_id,
        portfolio_id=event.portfolio_id,
        occurred_at=event.occurred_at,
        total_equity=total_equity,
        changes=tuple(changes),
        positions=positions(),
        options=_options(defaults, overrides),
        current_weights=current.strategy_alloc,
        trigger=_canonical(
            {"event": event.model_dump(mode="json"), "current": current.model_dump(mode="json")}
        ),
    )


def _from_qmtl(data: dict[str, Any], defaults: PlannerOptions, now_ms: int) -> PlanningContext:
    try:
        request = _qmtl_request.validate_python(data)
    except ValidationError as exc:
        raise input_error(exc) from None
    return _qmtl_context(
        request,
        data,
        defaults,
        now_ms,
        lambda: PositionTable.from_rows(
            (p.world_id, p.strategy_id, p.venue, p.symbol, p.qty, p.mark, 0)
            for p in request.positions
        ),
    )


def _qmtl_context(
    request: QmtlPlanRequest,
    data: dict[str, Any],
    defaults: PlannerOptions,
    now_ms: int,
    positions: Callable[[], PositionTable],
) -> PlanningContext:
    """The context of a validated QMTL request (``data``: its fields as read)."""
    for world in request.world_alloc_after:
        if world not in request.world_alloc_before:
            raise InputError(
                f"world_alloc_before.{world}: missing; every world in world_alloc_after needs "
                "its before allocation"
            )
    # what does not change the plan does not change its ids: QMTL's optional no-op fields
    ignored = {"positions", "occurred_at", "options", "overlay", "mode", "schema_version"}
    body = {k: v for k, v in data.items() if k not in ignored}
    trigger = _canonical_body(body)
    event_id = request.event_id or "req-" + hex_id(trigger, 24)
    occurred_at = request.occurred_at if request.occurred_at is not None else now_ms
    event = {
        "type": "world_allocations_changed",
        "event_id": event_id,
        "portfolio_id": request.portfolio_id,
        "occurred_at": occurred_at,
        "total_equity": request.total_equity,
        "world_alloc_after": request.world_alloc_after,
        "world_alloc_before": request.world_alloc_before,
        "strategy_alloc_after_total": request.strategy_alloc_after_total,
        "strategy_alloc_before_total": request.strategy_alloc_before_total,
        "min_trade_notional": request.min_trade_notional,
        "lot_size_by_symbol": request.lot_size_by_symbol,
    }
    try:
        checked = WorldAllocationsChanged.model_validate(event)
    except ValidationError as exc:
        raise input_error(exc) from None
    overrides = dict(request.options)
    if checked.min_trade_notional is not None:
        overrides.setdefault("min_trade_notional", checked.min_trade_notional)
    if checked.lot_size_by_symbol is not None:
        merged = {**defaults.lot_size_by_symbol, **checked.lot_size_by_symbol}
        overrides.setdefault("lot_size_by_symbol", merged)
    changes = tuple(
        WorldChange(
            world_id=world,
            alloc_before=request.world_alloc_before[world],
            alloc_after=after,
            strategy_before=(checked.strategy_alloc_before_total or {}).get(world),
            strategy_after=(checked.strategy_alloc_after_total or {}).get(world),
        )
        for world, after in sorted(request.world_alloc_after.items())
    )
    return PlanningContext(
        event_id=event_id,
        portfolio_id=request.portfolio_id,
        occurred_at=occurred_at,
        total_equity=request.total_equity,
        changes=changes,
        positions=positions(),
        options=_options(defaults, overrides),
        trigger=trigger,
    )


def plan_request(
    raw: bytes | str | dict[str, Any],
    *,
    defaults: PlannerOptions | None = None,
    now_ms: int = 0,
    with_intents: bool = False,
    qmtl_only: bool = False,
    wire: bool = False,
) -> dict[str, Any]:
    """Plan a request of either shape (``qmtl_only``: QMTL's alone): the plan record (with
    its intents if asked). Raises ``InputError`` naming the field, or the reason the plan
    cannot be made.

    ``wire``: each key's ``strategy_breakdown`` comes as JSON already (``Plan.wire``), for a
    caller that only writes the result with ``orjson.dumps`` (no indent option, which a
    fragment ignores): the same bytes, without a dict per strategy and key."""
    context = parse_request(raw, defaults=defaults, now_ms=now_ms, qmtl_only=qmtl_only)
    try:
        plan = check_plan(MultiWorldProportionalRebalancer().plan(context))
    except PlanningError as exc:
        raise InputError(str(exc)) from None
    if wire:
        record = plan.wire
        return {**record, "intents": intents_from_record(record)} if with_intents else record
    record = plan.record()
    if with_intents:
        return {**record, "intents": plan.intents()}
    return record
