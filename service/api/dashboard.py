"""The dashboard (issue 15): a page served by the service, and the reads it needs beyond /v1.

Front end: one server-served HTML page, one stylesheet and one script of plain JavaScript
with hand-drawn SVG charts: no build step, no CDN, nothing vendored; it calls the same
``/v1`` API as any client, with the token the operator signs in with (kept in the tab's
session storage), and follows ``/v1/events`` (server-sent events over a fetch, so the token
travels in a header, never in a URL) to refresh without reloading.
"""

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Annotated, Any, Protocol

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field

from ..policies.costs import CostModel
from ..state.read_model import ReadModel
from .auth import Principal
from .changes import Changes
from .plan_costs import estimated_cost

STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
KEEPALIVE_S = 15.0


class DashboardBackend(Protocol):
    read_model: ReadModel
    changes: Changes

    @property
    def cost_model(self) -> CostModel: ...

    @property
    def metrics_registry(self) -> CollectorRegistry: ...

    def is_ready(self) -> bool: ...


class Bucket(BaseModel):
    start: int
    end: int
    plans: int = Field(description="Plans with intents created in the bucket.")
    turnover: float = Field(description="Notional traded by their intents.")
    estimated_cost: float = Field(description="Their cost by the cost model (costs).")
    realised_cost: float | None = Field(
        default=None,
        description="Fees + slippage of the fills the execution nodes reported for them; "
        "null where no plan of the bucket has a reported fill.",
    )
    realised_plans: int = Field(default=0, description="Plans of the bucket with reported fills.")


class PlanStats(BaseModel):
    """Turnover, estimated and realised cost over time, for the history charts."""

    buckets: list[Bucket]
    plans: int = Field(description="Plans in the history (every status).")
    cost_model: dict[str, float] = Field(description="fee_bps, half_spread_bps, fixed_per_trade")


class Health(BaseModel):
    ready: bool
    events_consumed: float
    events_dead_lettered: float = Field(description="Bad inputs sent to the dead-letter topic.")
    consumer_lag: float = Field(description="Records behind, summed over input partitions.")
    plans_known: int


def add_dashboard(
    app: FastAPI, backend: DashboardBackend, reader: Any, refusals: dict[int | str, Any]
) -> None:
    """The page, its assets, the event stream and the reads the page needs (``reader``: the
    read permission's dependency; ``refusals``: its documented 401/403 answers)."""
    page = resources.files(__package__).joinpath("static/dashboard.html").read_bytes()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        media = STATIC.get(name)
        if media is None:
            raise HTTPException(404, f"no asset {name!r}")
        data = resources.files(__package__).joinpath(f"static/{name}").read_bytes()
        return Response(data, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get(
        "/v1/events",
        tags=["dashboard"],
        response_class=StreamingResponse,
        responses={**refusals, 200: {"content": {"text/event-stream": {}}}},
    )
    async def events(request: Request, _: Annotated[Principal, reader]) -> StreamingResponse:
        """Server-sent events: ``change`` (with the read model's version) whenever the read
        model changes (bursts coalesce), a comment every 15 s to keep the stream open."""
        return StreamingResponse(
            _stream(backend.changes, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/plans/stats", response_model=PlanStats, tags=["dashboard"], responses=refusals)
    async def plan_stats(
        _: Annotated[Principal, reader],
        portfolio: str | None = None,
        buckets: Annotated[int, Query(ge=1, le=500)] = 48,
    ) -> PlanStats:
        """Turnover, estimated cost and realised cost (where execution nodes reported fills)
        of the plans with intents, in equal time buckets from the first plan to the last."""
        model = backend.cost_model
        plans = [
            p
            for p in backend.read_model.plans.oldest_first()
            if p.intents and (portfolio is None or p.portfolio_id == portfolio)
        ]
        out: list[Bucket] = []
        if plans:
            first, last = plans[0].created_at, plans[-1].created_at
            width = max(1, math.ceil((last - first + 1) / buckets))
            out = [
                Bucket(
                    start=first + i * width,
                    end=first + (i + 1) * width,
                    plans=0,
                    turnover=0,
                    estimated_cost=0,
                )
                for i in range(buckets)
            ]
            for p in plans:
                b = out[min((p.created_at - first) // width, buckets - 1)]
                b.plans += 1
                b.turnover += p.turnover
                b.estimated_cost += estimated_cost(model, p.turnover, p.traded_keys)
                realised = backend.read_model.realised.of(p.plan_id)
                if realised is not None:
                    b.realised_cost = (b.realised_cost or 0.0) + realised.total
                    b.realised_plans += 1
        return PlanStats(
            buckets=out,
            plans=len(backend.read_model.plans),
            cost_model={
                "fee_bps": model.fee_bps,
                "half_spread_bps": model.half_spread_bps,
                "fixed_per_trade": model.fixed_per_trade,
            },
        )

    @app.get("/v1/health", response_model=Health, tags=["dashboard"], responses=refusals)
    async def health(_: Annotated[Principal, reader]) -> Health:
        """Readiness, dead letters and consumer lag, as /metrics counts them."""
        registry = backend.metrics_registry
        return Health(
            ready=backend.is_ready(),
            events_consumed=_total(registry, "rebalancer_events_consumed_total"),
            events_dead_lettered=_total(registry, "rebalancer_events_dead_lettered_total"),
            consumer_lag=_total(registry, "rebalancer_consumer_lag"),
            plans_known=len(backend.read_model.plans),
        )


async def _stream(changes: Changes, disconnected: Callable[[], Any]) -> AsyncIterator[bytes]:
    seen = changes.version
    yield b"retry: 2000\n\n"
    idle = 0.0
    while not changes.closed:
        version = await changes.after(seen, timeout=1.0)
        if version > seen:
            seen = version
            idle = 0.0
            data = orjson.dumps({"version": version})
            yield b"event: change\ndata: " + data + b"\n\n"
            continue
        if await disconnected():
            return
        idle += 1.0
        if idle >= KEEPALIVE_S:
            idle = 0.0
            yield b": keepalive\n\n"
        await asyncio.sleep(0)


def _total(registry: CollectorRegistry, name: str) -> float:
    """A metric's samples summed over their labels (0 when there are none yet)."""
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                total += sample.value
    return total
