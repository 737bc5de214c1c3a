"""Every Kafka client the project makes, built in one place with the configured security.

``KafkaClients`` knows the bootstrap servers and ``Security`` and makes producers,
consumers and admin clients with them, so a SASL or TLS setting reaches all of them.
``connect`` checks, before anything starts, that the brokers answer with these settings and
names the cause when they do not (a wrong password, an untrusted certificate, nothing
listening), and learns what the broker supports (``BrokerFeatures``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from service.settings import Security

DESCRIBE_PRODUCERS, DESCRIBE_TRANSACTIONS = 61, 65
"""API keys of the producer-state and transaction-state requests (KIP-664). Apache Kafka has
served them since 2.8/3.0; the embedded broker (Tansu) does not, and it also lacks what they
describe: idempotent and transactional producers."""


@dataclass(frozen=True)
class BrokerFeatures:
    """What the connected broker can be trusted with."""

    full_kafka: bool
    """Keeps producer state (idempotence, transactions) and reports exact end offsets. False
    for the embedded broker, whose workarounds then apply."""

    @property
    def idempotent_producer(self) -> bool:
        return self.full_kafka

    @property
    def transactions(self) -> bool:
        return self.full_kafka

    @property
    def exact_end_offsets(self) -> bool:
        return self.full_kafka

    @classmethod
    def from_api_keys(cls, keys: set[int]) -> BrokerFeatures:
        return cls(full_kafka={DESCRIBE_PRODUCERS, DESCRIBE_TRANSACTIONS} <= keys)


EMBEDDED = BrokerFeatures(full_kafka=False)
"""Assumed until ``connect`` has asked the broker: the cautious choice."""


class BrokerUnreachableError(RuntimeError):
    """The brokers cannot be used with these settings; the message says why, per broker,
    without any secret."""


@dataclass
class KafkaClients:
    """Makes the project's Kafka clients: one bootstrap list, one security setting."""

    bootstrap_servers: str
    security: Security = field(default_factory=Security)
    client_id: str = "rebalancer"
    features: BrokerFeatures = EMBEDDED
    _ssl: ssl.SSLContext | None = field(default=None, init=False, repr=False)

    def connection(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client takes for the connection."""
        security = self.security
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": security.protocol,
        }
        if security.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if security.sasl:
            assert security.password is not None  # Security's validator requires it
            kwargs["sasl_mechanism"] = security.sasl_mechanism
            kwargs["sasl_plain_username"] = security.username
            kwargs["sasl_plain_password"] = security.password.get_secret_value()
        return kwargs

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            s = self.security
            self._ssl = create_ssl_context(
                cafile=s.ca_file,
                certfile=s.cert_file,
                keyfile=s.key_file,
                password=None if s.key_password is None else s.key_password.get_secret_value(),
            )
        return self._ssl

    def producer(self, **options: Any) -> AIOKafkaProducer:
        """A producer; idempotent where the broker keeps producer state, unless the caller
        says otherwise (``enable_idempotence``), and always when it is transactional."""
        options.setdefault("client_id", self.client_id)
        options.setdefault("enable_idempotence", self.features.idempotent_producer)
        if options.get("transactional_id") is not None:
            options["enable_idempotence"] = True  # a transactional producer is idempotent
        if options["enable_idempotence"]:
            options["acks"] = "all"
        return AIOKafkaProducer(**self.connection(), **options)

    @property
    def isolation_level(self) -> str:
        """What consumers read by default: only committed transactions where the broker has
        them (an exactly-once service writes in transactions; records written without one
        are read as soon as they are written either way)."""
        return "read_committed" if self.features.transactions else "read_uncommitted"

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        options.setdefault("client_id", self.client_id)
        options.setdefault("isolation_level", self.isolation_level)
        return AIOKafkaConsumer(*topics, **self.connection(), **options)

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.connection(), client_id=self.client_id)

    async def connect(self, timeout: float = 60.0) -> BrokerFeatures:
        """Connect to a bootstrap broker, learn its features (kept in ``features``) and
        return them. Refused settings (authentication, certificates) fail at once; brokers
        that do not answer yet are retried until ``timeout``. Raises ``BrokerUnreachableError``."""
        deadline = time.monotonic() + timeout
        while True:
            reasons = []
            for host, port in _hosts(self.bootstrap_servers):
                try:
                    conn = await asyncio.wait_for(
                        create_conn(
                            host, port, client_id=self.client_id, **_conn_args(self.connection())
                        ),
                        timeout=max(1.0, min(15.0, deadline - time.monotonic())),
                    )
                except Exception as exc:
                    reason, fatal = _explain(exc, self.security)
                    if fatal:
                        raise BrokerUnreachableError(f"{host}:{port}: {reason}") from None
                    reasons.append(f"{host}:{port}: {reason}")
                    continue
                keys = set(conn._versions)  # the ApiVersions answer of the handshake
                conn.close()
                self.features = BrokerFeatures.from_api_keys(keys)
                return self.features
            if time.monotonic() >= deadline:
                raise BrokerUnreachableError(
                    f"no broker answered within {timeout:g} s: " + "; ".join(reasons)
                )
            await asyncio.sleep(0.5)


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, timeout: float = 30.0) -> list[int]:
    """The partitions of ``topic``, once the consumer's metadata has them.

    A consumer without a subscription knows no topic's partitions until it asks for that
    topic: Apache Kafka answers a metadata request for no topics with none (the embedded
    broker answers with all), and ``consumer.topics()`` does not keep what it fetched."""
    deadline = time.monotonic() + timeout
    while True:
        await consumer._client.add_topic(topic)  # tracked, and its metadata fetched
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic!r} has no partitions after {timeout:g} s")
        await asyncio.sleep(0.05)


def clients_of(servers: str | KafkaClients, *, client_id: str = "rebalancer") -> KafkaClients:
    """``servers`` as clients: bootstrap servers alone mean plaintext (tests, the embedded
    broker)."""
    if isinstance(servers, KafkaClients):
        return servers
    return KafkaClients(servers, client_id=client_id)


def _hosts(bootstrap_servers: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            got = item.strip()
            raise BrokerUnreachableError(f"bootstrap_servers: expected HOST:PORT, got {got!r}")
        out.append((host.strip("[]"), int(port)))
    return out


def _conn_args(connection: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in connection.items() if k != "bootstrap_servers"}


def _explain(exc: BaseException, security: Security) -> tuple[str, bool]:
    """Why a connection failed, in words, and whether retrying can help."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            trust = f"ca_file {security.ca_file}" if security.ca_file else "the system's CAs"
            return (
                f"the broker's TLS certificate is not trusted by {trust} ({cause.verify_message})",
                True,
            )
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed ({cause.reason or cause})", True
        if isinstance(cause, SaslAuthenticationFailed | AuthenticationFailedError):
            return (
                f"SASL authentication as {security.username!r} with "
                f"{security.sasl_mechanism} failed: wrong username or password, or no such user",
                True,
            )
        if isinstance(cause, UnsupportedSaslMechanismError):
            return f"the broker does not accept SASL mechanism {security.sasl_mechanism}", True
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (no broker listening there yet)", False
        if isinstance(cause, asyncio.TimeoutError | TimeoutError):
            return (
                "no answer (a broker that is down, or a protocol that does not match the "
                f"listener: security.protocol is {security.protocol})",
                False,
            )
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, KafkaError | OSError):
        return f"{type(exc).__name__}: {exc}", False
    return f"{type(exc).__name__}: {exc}", False
