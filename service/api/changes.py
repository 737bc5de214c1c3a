"""Tells waiting readers (the dashboard's event stream) that the read model changed.

A version number that the service bumps as it applies what it reads; a reader waits for a
version past the one it has seen. Bursts coalesce: a reader woken once sees the latest
version, not one wake-up per record.
"""

from __future__ import annotations

import asyncio
import contextlib


class Changes:
    """A version and a condition to wait on it, in the service's event loop."""

    def __init__(self) -> None:
        self.version = 0
        self.closed = False
        """Set when the service stops: streams end."""
        self._changed = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self._changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def after(self, seen: int, timeout: float) -> int:
        """The version once it is past ``seen`` (or the current one after ``timeout``)."""
        while self.version <= seen and not self.closed:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
            if self.version <= seen:
                return self.version
        return self.version
