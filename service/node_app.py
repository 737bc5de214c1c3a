"""An execution node's composition root: the node (``consumers.execution_node``) and its HTTP
endpoints (``/metrics``, ``/healthz``, ``/readyz``), in one event loop.

The endpoints start first, so ``/healthz`` answers and ``/readyz`` says 503 while the node
restores its state and joins its group; then the node starts and ``/readyz`` turns 200.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from consumers.execution_node import ExecutionNode

from .api.node import build_node_app
from .api.server import ApiServer

log = logging.getLogger("rebalancer.execution")


class NodeApp:
    """``node`` with its endpoints on ``host:port`` (port 0: a free one, ``port`` once
    started)."""

    def __init__(self, node: ExecutionNode, host: str, port: int) -> None:
        self.node = node
        self.http = ApiServer(build_node_app(self), host, port)

    @property
    def registry(self) -> CollectorRegistry:
        return self.node.metrics.registry

    def is_ready(self) -> bool:
        return self.node.is_ready()

    @property
    def port(self) -> int:
        return self.http.port

    async def start_http(self) -> int:
        """Serve the endpoints; returns the port. ``OSError`` if it cannot be bound."""
        port = await self.http.start()
        host = self.http.host
        self.node.endpoint = f"{host}:{port}"
        log.info(
            "execution node %s serves /metrics, /healthz and /readyz on http://%s:%d",
            self.node.node_id,
            host,
            port,
        )
        return port

    async def start(self) -> None:
        """The endpoints (unless ``start_http`` already started them), then the node."""
        if self.node.endpoint is None:
            await self.start_http()
        try:
            await self.node.start()
        except BaseException:
            await self.stop()  # what had started (the node stops only what it started)
            raise

    async def stop(self) -> None:
        """The node first (its last heartbeat says it stopped), then the endpoints."""
        try:
            await self.node.stop()
        finally:
            await self.http.stop()
