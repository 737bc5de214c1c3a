"""``rebalancer demo --ui`` as a process: started, read until it says it keeps running."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tests.process_support import ROOT


@dataclass
class RunningDemo:
    process: asyncio.subprocess.Process
    url: str
    token: str
    output: list[str]


@contextlib.asynccontextmanager
async def demo_ui(timeout: float = 120.0) -> AsyncIterator[RunningDemo]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        "demo",
        "--ui",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    url = token = None
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            line = (await asyncio.wait_for(process.stdout.readline(), max(left, 0.1))).decode()
            if not line:
                raise AssertionError("the demo ended early:\n" + "".join(lines))
            lines.append(line)
            found = re.match(
                r"dashboard: (\S+)/ \(sign in with the demo's admin token (\S+)\)", line
            )
            if found:
                url, token = found.group(1), found.group(2)
            if line.startswith("still running for the dashboard"):
                break
        assert url is not None, "".join(lines)
        assert token is not None, "".join(lines)
        yield RunningDemo(process, url, token, lines)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
