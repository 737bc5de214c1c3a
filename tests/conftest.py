"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tests.examples  # noqa: F401  (loads the hypothesis profile before any test module)
from tests.helpers import Row
from tests.kafka_support import broker


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``broker`` every test that needs the broker fixture, directly or through others."""
    for item in items:
        if "bootstrap_servers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


@pytest.fixture
def btc_rows() -> list[Row]:
    """SPEC 3.5's two strategies holding BTC on one venue."""
    return [
        ("a", "s1", "binance", "BTC", 0.6, 60_000.0, 0),
        ("a", "s2", "binance", "BTC", 0.9, 60_000.0, 0),
    ]


@pytest.fixture(scope="session")
def bootstrap_servers() -> Iterator[str]:
    """One real broker for the whole test session."""
    with broker() as servers:
        yield servers
