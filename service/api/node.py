"""The HTTP endpoints of an execution node: ``/metrics``, ``/healthz``, ``/readyz``.

Open (no token): they tell nothing an operator's scraper should not see, as the service's own
operations endpoints. Served by ``ApiServer`` in the node's event loop.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class NodeProbe(Protocol):
    """What a running execution node offers its endpoints."""

    def is_ready(self) -> bool: ...

    @property
    def registry(self) -> CollectorRegistry: ...


def build_node_app(node: NodeProbe) -> FastAPI:
    """The application of one execution node."""
    app = FastAPI(
        title="rebalancer execution node",
        version="1",
        description="Operations endpoints of an execution node.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(node.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        """Alive."""
        return "ok\n"

    @app.get("/readyz", response_class=PlainTextResponse)
    async def readyz() -> PlainTextResponse:
        """200 once the node's consumer has joined and its state is restored, 503 before."""
        if node.is_ready():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("restoring state\n", status_code=503)

    return app
