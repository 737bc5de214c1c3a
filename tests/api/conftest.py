"""A running service with API tokens for every role, on the test broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.app import RebalancerApp
from tests.api.test_http_api import api_settings


@pytest.fixture
async def service(bootstrap_servers: str) -> AsyncIterator[RebalancerApp]:
    app = RebalancerApp(api_settings(bootstrap_servers))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
