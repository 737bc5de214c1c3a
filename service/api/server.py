"""The HTTP server: uvicorn serving the API inside the service's own event loop.

One loop for Kafka and HTTP keeps reads consistent with the work (a request runs between two
steps of the loop, never inside a piece of work's state change) and needs no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

STARTUP_TIMEOUT_S = 10.0


class _InLoopServer(uvicorn.Server):
    """uvicorn without its signal handlers: the service owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ApiServer:
    """Serves ``app`` on ``host:port`` (port 0: a free one, see ``port`` once started)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # the service's logging, not uvicorn's
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        self._server = _InLoopServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen; returns the bound port. Raises ``OSError`` naming the address if it cannot
        be bound (uvicorn would exit the process instead, so the socket is bound here)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.create_server((self.host.strip("[]"), self.port), family=family)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if self._task.done():
                self._task.result()  # its exception, if it failed
                raise OSError(f"HTTP server on {self.host}:{self.port} did not start")
            if asyncio.get_running_loop().time() > deadline:
                raise OSError(f"HTTP server on {self.host}:{self.port} did not start in time")
            await asyncio.sleep(0.01)
        self.port = int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, timeout=5)
