"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import tests.examples  # noqa: F401  (loads the hypothesis profile before any test module)
from tests.helpers import Row
from tests.kafka_support import broker, broker_name


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``broker`` every test that needs the broker fixture, directly or through others.
    Tests of what only Apache Kafka offers (``kafka_only``: its faults, security, the
    idempotent producer) are deselected, and counted as such, on the embedded broker;
    ``make test-kafka`` runs them. Browser tests (``browser``: they need Chromium) are
    deselected, and counted, unless ``REBALANCER_TEST_BROWSER=1``: ``make test-browser``."""
    for item in items:
        if "bootstrap_servers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)
    if os.environ.get("REBALANCER_TEST_BROWSER") != "1":
        _deselect(config, items, "browser")
    if broker_name() == "kafka" or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return
    _deselect(config, items, "kafka_only")


def _deselect(config: pytest.Config, items: list[pytest.Item], marker: str) -> None:
    kept = [item for item in items if item.get_closest_marker(marker) is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


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
