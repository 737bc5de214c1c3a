"""The client factory's pure parts: what a broker's API list says it supports, and the
bootstrap list it is given."""

from __future__ import annotations

import pytest

from consumers.clients import (
    DESCRIBE_PRODUCERS,
    DESCRIBE_TRANSACTIONS,
    BrokerFeatures,
    BrokerUnreachableError,
    _hosts,
)

TANSU_0_5_KEYS = {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 24, 25}
"""The API keys the embedded broker advertised (a subset: it has no producer-state APIs)."""


def test_the_embedded_broker_is_not_trusted_with_producer_state() -> None:
    features = BrokerFeatures.from_api_keys(TANSU_0_5_KEYS)
    assert not features.idempotent_producer
    assert not features.exact_end_offsets


def test_a_broker_with_producer_and_transaction_state_apis_is_full_kafka() -> None:
    features = BrokerFeatures.from_api_keys(
        TANSU_0_5_KEYS | {DESCRIBE_PRODUCERS, DESCRIBE_TRANSACTIONS}
    )
    assert features.idempotent_producer
    assert features.transactions
    assert features.exact_end_offsets
    assert not BrokerFeatures.from_api_keys(TANSU_0_5_KEYS | {DESCRIBE_PRODUCERS}).full_kafka


def test_bootstrap_lists_are_parsed_and_bad_entries_named() -> None:
    assert _hosts("127.0.0.1:9092, kafka-2:9093") == [("127.0.0.1", 9092), ("kafka-2", 9093)]
    assert _hosts("[::1]:9092") == [("::1", 9092)]
    with pytest.raises(BrokerUnreachableError, match="expected HOST:PORT, got 'kafka'"):
        _hosts("127.0.0.1:9092,kafka")
