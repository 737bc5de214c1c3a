"""A small HTTP receiver for webhook tests and the bench: raw asyncio, one request per
connection, on a free local port; it can be down (not listening), fail, or answer late."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Received:
    """One request as the receiver got it (header names lower-cased)."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Receiver:
    """Answers ``status(request)`` (200 unless told otherwise) after ``delay`` seconds."""

    port: int = field(default_factory=free_port)
    status: Callable[[Received], int] = lambda _: 200
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    _server: asyncio.Server | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        return self

    async def stop(self) -> None:
        """Down: no longer listening (connections are refused)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Received(path, headers, body, asyncio.get_running_loop().time())
            self.requests.append(request)
            if self.delay:
                await asyncio.sleep(self.delay)
            code = self.status(request)
            if 200 <= code < 300:
                self.accepted.append(request)
            writer.write(
                f"HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
            pass
        except asyncio.CancelledError:  # the receiver stopped while answering late
            pass
        finally:
            writer.close()
