"""A 200,000-row QMTL planning request through POST /rebalancing/plan of a running service,
over real HTTP (issue 14, item 7: the request end to end, without a process start).

Run from the README's venv:  .venv/bin/python bench/plan_http.py
"""

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.parse import qmtl_request
from consumers.embedded_broker import EmbeddedBroker
from service.app import RebalancerApp
from service.settings import Settings, Topics
from tests.process_support import http_request  # one real HTTP/1.1 request


async def main():
    body = qmtl_request(200_000)
    with EmbeddedBroker() as broker:
        app = RebalancerApp(
            Settings(bootstrap_servers=broker.bootstrap_servers, http_port=0, topics=Topics())
        )
        await app.start()
        try:
            samples = []
            for _ in range(8):
                t = time.perf_counter()
                status, _, out = await http_request(
                    app.http.port, "POST", "/rebalancing/plan", body=body
                )
                samples.append((time.perf_counter() - t) * 1000)
                assert status == 200, out[:300]
            rest = samples[1:]  # after one warm-up
            print(
                f"{len(body) / 1e6:.1f} MB request, {len(out) / 1e6:.1f} MB answer; ms: median "
                f"{statistics.median(rest):.0f}, min {min(rest):.0f}, max {max(rest):.0f} "
                f"(n={len(rest)} after one warm-up)"
            )
        finally:
            await app.stop()


if __name__ == "__main__":
    asyncio.run(main())
