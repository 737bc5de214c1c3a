"""The HTTP application: the operations endpoints and the ``/v1`` API, over a ``Backend``.

Every ``/v1`` route names the permission it needs (``auth.Permission``); the caller's token
decides (401 without a valid token, 403 when its role lacks the permission). Every route and
dependency is ``async``: FastAPI runs plain functions in a thread pool, and the read model and
state are changed by the event loop's tasks, so they are read on that loop only. Responses are
pydantic models, so ``/openapi.json`` describes each of them.
"""

import functools
import uuid
from typing import Annotated, Any, Literal, Protocol

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import Work
from ..engine.approval import approval_required
from ..engine.options import ApprovalRules
from ..errors import InputError, describe
from ..live.outlook import PolicyOutlook
from ..messages import allocation_event_adapter
from ..messages.allocation import AllocationEvent
from ..messages.command import OperatorCommand, PlanAction, ScopeAction
from ..metrics import Metrics
from ..planner import PlannerOptions
from ..request import QmtlPlanRequest, plan_request
from ..state.allocations import (
    AllocationState,
    HeldChange,
    InFlight,
    TradingState,
)
from ..state.read_model import CursorError, NodeView, ReadModel
from .auth import Authenticator, ForbiddenError, Permission, Principal, UnauthenticatedError
from .dashboard import DashboardBackend, add_dashboard
from .limits import BodyLimit
from .plan_costs import CostedPlan, costed


class Backend(DashboardBackend, Protocol):
    """What the running service offers the API."""

    metrics: Metrics
    read_model: ReadModel

    def is_ready(self) -> bool: ...

    def clock(self) -> int: ...

    @property
    def approval_rules(self) -> ApprovalRules:
        """The configured approval mode (``approval``)."""
        ...

    def policy_outlooks(self, portfolio_id: str) -> dict[str, list[PolicyOutlook]]:
        """Per watched world of the portfolio, what each live policy sees of it now."""
        ...

    @property
    def planner_options(self) -> PlannerOptions:
        """The configured planner defaults (``planner``)."""
        ...

    async def submit(self, command: OperatorCommand) -> None:
        """Publish the command on the allocation topic; returns once the broker has it."""
        ...

    def preview(self, event: AllocationEvent) -> Work:
        """What the engine would do with ``event`` now, on the read model's state and the
        live snapshots; nothing is written or published. Raises ``InputError``."""
        ...


class CommandRequest(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        description="Why: kept with the command, the trading state and the plan records."
    )


class PreviewResult(BaseModel):
    """A dry run: what the service would publish for the event now."""

    outcome: str = Field(description="planned, held or duplicate (applied before).")
    records: list[dict[str, Any]] = Field(description="Plan records (schemas/plan_record).")
    intents: list[dict[str, Any]] = Field(description="Delta intents (schemas/delta_intent).")


class CommandAccepted(BaseModel):
    command_id: str
    status_url: str


class CommandStatus(BaseModel):
    command_id: str
    status: Literal["accepted", "applied", "refused"] = Field(
        description="accepted: on the allocation topic, not yet applied by the portfolio's "
        "owner; applied or refused: decided, with detail saying what or why."
    )
    portfolio_id: str
    world_id: str | None
    action: str
    requested_by: str
    reason: str
    requested_at: int
    decided_at: int | None = None
    detail: str | None = None


class ErrorBody(BaseModel):
    error: str


class Caller(BaseModel):
    name: str
    role: str


class WorldView(BaseModel):
    world_id: str
    trading: TradingState = Field(description="The world's own trading state.")
    trading_mode: str = Field(
        description="The mode that applies: the stricter of the world's and the portfolio's."
    )
    alloc: float | None = Field(description="The world's allocation (share of equity).")
    strategy_alloc: dict[str, float]
    in_flight: InFlight | None = Field(description="The plan the world waits to reach, if any.")
    held: HeldChange | None = Field(description="A change that waits, and why.")
    approval_required: bool = Field(
        description="Whether the world's plans are proposed for approval (a command's "
        "setting for the world, else the portfolio's, else the configuration)."
    )
    proposal: str | None = Field(description="The world's plan awaiting approval, if any.")
    policies: list[PolicyOutlook] = Field(
        description="Each live policy watching the world: its drift against the rule's band "
        "and when the rule looks at it next (empty when no policy watches it)."
    )


class ProposalView(BaseModel):
    """A plan awaiting approval."""

    plan_id: str
    worlds: list[str]
    requested_by: str | None = Field(
        description="The token (or 'policy:<name>') that asked for it; null for an event."
    )
    proposed_at: int
    deadline: int = Field(description="It expires unless approved before.")
    intents: int = Field(description="Intents approval publishes.")
    event_ids: list[str] = Field(description="The changes it carries out.")


class PortfolioView(BaseModel):
    portfolio_id: str
    total_equity: float | None
    trading: TradingState
    worlds: list[WorldView]
    plans_in_flight: list[str] = Field(description="Plans not yet reached, by id.")
    plan_being_written: bool = Field(
        description="A plan was written ahead and is being published (or was, by an owner "
        "that stopped: the next owner finishes it)."
    )
    proposals: list[ProposalView] = Field(description="Plans awaiting approval.")


class PortfolioList(BaseModel):
    portfolios: list[PortfolioView]


class NodeList(BaseModel):
    nodes: list[NodeView] = Field(
        description="Every execution node that published a heartbeat, by venue then node id."
    )


class PlanPage(BaseModel):
    plans: list[CostedPlan]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


COMPONENT = "#/components/schemas/{model}"

SUBMITTED_KEPT = 10_000
"""Commands this instance accepted and remembers until they are decided."""

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No bearer token, or not a configured one."},
    403: {"model": ErrorBody, "description": "The token's role does not allow this."},
    422: {"model": ErrorBody, "description": "A parameter that is not valid."},
}


def build_app(
    backend: Backend, auth: Authenticator, max_body_bytes: int = 64 * 1024 * 1024
) -> FastAPI:
    """The application for one service instance."""
    app = FastAPI(
        title="rebalancer",
        version="1",
        description="Operations endpoints and the operator API of the rebalancing service.",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    bearer = HTTPBearer(auto_error=False, description="An API token (api.tokens)")

    @app.exception_handler(UnauthenticatedError)
    async def _unauthenticated(_: Request, exc: UnauthenticatedError) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )

    @app.exception_handler(ForbiddenError)
    async def _forbidden(_: Request, exc: ForbiddenError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=403)

    def needs(permission: Permission) -> Any:
        async def check(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> Principal:
            header = None if credentials is None else f"Bearer {credentials.credentials}"
            return auth.authorize(header, permission)

        return Depends(check)

    reader = needs(Permission.READ)
    add_dashboard(app, backend, reader, UNAUTHORIZED)

    @app.get("/metrics", response_class=Response, tags=["operations"])
    async def metrics() -> Response:
        """Prometheus metrics (unauthenticated)."""
        return Response(generate_latest(backend.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_class=PlainTextResponse, tags=["operations"])
    async def healthz() -> str:
        """Alive (unauthenticated)."""
        return "ok\n"

    @app.get(
        "/readyz",
        response_class=PlainTextResponse,
        tags=["operations"],
        responses={503: {"description": "Still restoring state."}},
    )
    async def readyz() -> PlainTextResponse:
        """200 once state is restored and the consumer has joined (unauthenticated)."""
        if backend.is_ready():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("restoring state\n", status_code=503)

    @app.get("/v1/whoami", response_model=Caller, tags=["api"], responses=UNAUTHORIZED)
    async def whoami(caller: Annotated[Principal, reader]) -> Caller:
        """The caller's token name and role."""
        return Caller(name=caller.name, role=caller.role)

    @app.get("/v1/portfolios", response_model=PortfolioList, tags=["api"], responses=UNAUTHORIZED)
    async def portfolios(_: Annotated[Principal, reader]) -> PortfolioList:
        """Every portfolio the topics know, with its worlds."""
        model = backend.read_model
        return PortfolioList(portfolios=[portfolio_view(backend, p) for p in model.portfolio_ids()])

    @app.get(
        "/v1/portfolios/{portfolio}",
        response_model=PortfolioView,
        tags=["api"],
        responses={**UNAUTHORIZED, 404: {"model": ErrorBody}},
    )
    async def portfolio(portfolio: str, _: Annotated[Principal, reader]) -> PortfolioView:
        """One portfolio, with its worlds."""
        model = backend.read_model
        if portfolio not in model.portfolio_ids():
            raise HTTPException(404, f"portfolio {portfolio!r} is not known")
        return portfolio_view(backend, portfolio)

    @app.get(
        "/v1/plans",
        response_model=PlanPage,
        tags=["api"],
        responses=UNAUTHORIZED,
    )
    async def plans(
        _: Annotated[Principal, reader],
        portfolio: str | None = None,
        world: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> PlanPage:
        """Plan history, newest first, paged; each plan with its estimated cost and, once an
        execution node reports fills of it, its realised cost (fees and slippage)."""
        try:
            found, after = backend.read_model.plans.page(
                portfolio=portfolio, world=world, status=status, cursor=cursor, limit=limit
            )
        except CursorError as exc:
            raise HTTPException(422, str(exc)) from None
        model, realised = backend.cost_model, backend.read_model.realised
        return PlanPage(plans=[costed(p, model, realised) for p in found], next_cursor=after)

    @app.get("/v1/nodes", response_model=NodeList, tags=["api"], responses=UNAUTHORIZED)
    async def nodes(_: Annotated[Principal, reader]) -> NodeList:
        """The execution nodes, by their heartbeats: venue, alive (last heartbeat less than
        three of its intervals old), last heartbeat, the plans each is working on."""
        return NodeList(nodes=backend.read_model.nodes.views(backend.clock()))

    operator = needs(Permission.OPERATE)
    submitted: dict[str, OperatorCommand] = {}  # by this instance, until decided

    async def submit(
        portfolio: str,
        world: str | None,
        action: str,
        body: CommandRequest,
        caller: Principal,
        plan_id: str | None = None,
    ) -> CommandAccepted:
        if action == "waive-approval" and not caller.may(Permission.APPROVE):
            raise ForbiddenError(
                f"role {caller.role} cannot waive approval: that takes both the operate and "
                "the approve permissions (admin)"
            )
        try:
            command = OperatorCommand(
                type="operator_command",
                command_id=uuid.uuid4().hex,
                portfolio_id=portfolio,
                world_id=world,
                action=action,  # type: ignore[arg-type]
                reason=body.reason,
                requested_by=caller.name,
                requested_at=backend.clock(),
                plan_id=plan_id,
            )
        except ValidationError as exc:
            raise HTTPException(422, describe(exc)) from None
        await backend.submit(command)
        if len(submitted) >= SUBMITTED_KEPT:
            submitted.pop(next(iter(submitted)))
        submitted[command.command_id] = command
        return CommandAccepted(
            command_id=command.command_id, status_url=f"/v1/commands/{command.command_id}"
        )

    command_responses: dict[int | str, dict[str, Any]] = {
        **UNAUTHORIZED,
        202: {"description": "On the allocation topic; the portfolio's owner applies it."},
    }

    post_command = functools.partial(
        app.post,
        status_code=202,
        response_model=CommandAccepted,
        tags=["commands"],
        responses=command_responses,
    )

    @post_command("/v1/portfolios/{portfolio}/{action}")
    async def portfolio_command(
        portfolio: str,
        action: ScopeAction,
        body: CommandRequest,
        caller: Annotated[Principal, operator],
    ) -> CommandAccepted:
        """A command for the whole portfolio: pause, resume, reduce-only, halt, flatten,
        require-approval, waive-approval (admin: it takes the approve permission too)."""
        return await submit(portfolio, None, action, body, caller)

    @post_command("/v1/portfolios/{portfolio}/worlds/{world}/{action}")
    async def world_command(
        portfolio: str,
        world: str,
        action: ScopeAction,
        body: CommandRequest,
        caller: Annotated[Principal, operator],
    ) -> CommandAccepted:
        """A command for one world: pause, resume, reduce-only, halt, flatten, rebalance
        (now), require-approval, waive-approval (admin)."""
        return await submit(portfolio, world, action, body, caller)

    approver = needs(Permission.APPROVE)

    @post_command(
        "/v1/plans/{plan_id}/{decision}",
        responses={**command_responses, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
    )
    async def plan_decision(
        plan_id: str,
        decision: PlanAction,
        body: CommandRequest,
        caller: Annotated[Principal, approver],
    ) -> CommandAccepted:
        """Approve a proposed plan (its intents published as proposed, if nothing it was
        made from has moved; else it expires and is proposed again) or reject it."""
        summary = backend.read_model.plans.get(plan_id)
        if summary is None:
            raise HTTPException(
                404,
                f"plan {plan_id!r} is not known here (yet: the plan history follows the plan "
                "topic)",
            )
        if summary.status != "proposed":
            raise HTTPException(
                409, f"plan {plan_id!r} is {summary.status}, not proposed: nothing to {decision}"
            )
        return await submit(summary.portfolio_id, None, decision, body, caller, plan_id)

    documented: dict[str, Any] = {}  # request bodies read raw, described in the document

    def json_body(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        """``openapi_extra`` for a route that reads its JSON body itself (with the parser
        and error messages the CLI uses): the body's schema under ``name``."""
        documented.update(schema.pop("$defs", {}))
        documented[name] = schema
        ref = {"$ref": f"#/components/schemas/{name}"}
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}

    @app.post(
        "/v1/preview",
        response_model=PreviewResult,
        tags=["api"],
        responses=UNAUTHORIZED,
        openapi_extra=json_body(
            "AllocationEvent", allocation_event_adapter.json_schema(ref_template=COMPONENT)
        ),
    )
    async def preview(request: Request, _: Annotated[Principal, operator]) -> Response:
        """Plan an allocation event (our format) against the live snapshots and state, and
        return the plan record and intents it would publish. Nothing is published, nothing
        recorded: a dry run."""
        try:
            event = allocation_event_adapter.validate_json(await request.body())
            work = backend.preview(event)
        except ValidationError as exc:
            raise HTTPException(422, describe(exc)) from None
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None
        outcome = "duplicate" if work.duplicate else work.outcome.value
        payload = {"outcome": outcome, "records": work.records, "intents": work.intents}
        return Response(orjson.dumps(payload), media_type="application/json")

    @app.post(
        "/rebalancing/plan",
        response_model=dict[str, Any],
        tags=["qmtl"],
        responses=UNAUTHORIZED,
        openapi_extra=json_body(
            "QmtlPlanRequest", QmtlPlanRequest.model_json_schema(ref_template=COMPONENT)
        ),
    )
    async def qmtl_plan(request: Request, _: Annotated[Principal, operator]) -> Response:
        """QMTL's planning request, answered with the plan (QMTL's response shape: per_world
        and global_deltas, with more per key). Pure planning on the request's own positions:
        nothing of the service's state is read or written."""
        raw = await request.body()
        try:
            record = plan_request(
                raw,
                defaults=backend.planner_options,
                now_ms=backend.clock(),
                qmtl_only=True,
                wire=True,
            )
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None
        return Response(orjson.dumps(record), media_type="application/json")

    @app.get(
        "/v1/commands/{command_id}",
        response_model=CommandStatus,
        tags=["commands"],
        responses={**UNAUTHORIZED, 404: {"model": ErrorBody}},
    )
    async def command_status(command_id: str, _: Annotated[Principal, reader]) -> CommandStatus:
        """Accepted (on the topic), applied (with its effect) or refused (with why)."""
        found = backend.read_model.command(command_id)
        if found is not None:
            portfolio_id, decided = found
            submitted.pop(command_id, None)
            return CommandStatus(
                status=decided.outcome,
                portfolio_id=portfolio_id,
                **decided.model_dump(exclude={"outcome"}),
            )
        pending = submitted.get(command_id)
        if pending is None:
            raise HTTPException(
                404,
                f"command {command_id!r} is not known here (not submitted to this "
                "instance, and not decided yet)",
            )
        return CommandStatus(
            status="accepted", **pending.model_dump(include=set(CommandStatus.model_fields))
        )

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        document = default_openapi()
        document.setdefault("components", {}).setdefault("schemas", {}).update(documented)
        return document

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's own: a body that is not JSON (or not UTF-8)
            return JSONResponse(
                {"error": f"body: cannot be read as JSON ({exc.detail})"}, status_code=422
            )
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": request_errors(exc)}, status_code=422)

    return app


def request_errors(exc: RequestValidationError) -> str:
    """``where: what`` for each problem of a request (``query.limit: ...``)."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def proposal_views(state: AllocationState, portfolio_id: str) -> list[ProposalView]:
    out = []
    for p, plan_id in sorted(state.proposals):
        proposed = state.proposal(p, plan_id) if p == portfolio_id else None
        if proposed is None:
            continue
        record, terms = proposed.record, proposed.terms
        out.append(
            ProposalView(
                plan_id=plan_id,
                worlds=[w.world_id for w in terms.worlds],
                requested_by=terms.requested_by,
                proposed_at=terms.proposed_at,
                deadline=terms.deadline,
                intents=len(record.get("intent_ids") or []),
                event_ids=list(record.get("coalesced_event_ids") or []),
            )
        )
    return out


def portfolio_view(backend: Backend, portfolio_id: str) -> PortfolioView:
    state, rules = backend.read_model.state, backend.approval_rules
    outlooks = backend.policy_outlooks(portfolio_id)
    worlds = state.portfolio_worlds(portfolio_id)
    portfolio = state.portfolio(portfolio_id)
    return PortfolioView(
        portfolio_id=portfolio_id,
        total_equity=portfolio.total_equity,
        trading=portfolio.trading,
        worlds=[
            WorldView(
                world_id=w.world_id,
                trading=w.trading,
                trading_mode=state.trading_mode(w),
                alloc=w.alloc,
                strategy_alloc=w.strategy_alloc,
                in_flight=w.in_flight,
                held=w.held,
                approval_required=approval_required(rules, portfolio, w),
                proposal=w.proposal,
                policies=outlooks.get(w.world_id, []),
            )
            for w in worlds
        ],
        plans_in_flight=sorted({w.in_flight.plan_id for w in worlds if w.in_flight}),
        plan_being_written=portfolio_id in state.pending,
        proposals=proposal_views(state, portfolio_id),
    )
