"""The service on an Apache Kafka listener that asks for TLS and SCRAM (SASL_SSL).

One Kafka node (``deploy/kafka/run --sasl-ssl``) with a certificate for 127.0.0.1 signed by a
CA made here, and one SCRAM user. The service and an execution node run as real processes
configured only through ``REBALANCER_SECURITY__*``: they plan and execute end to end. A wrong
password or a CA that did not sign the broker's certificate stops ``rebalancer run`` at once
with exit code 4 and the cause in words. The password is in none of the output.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from consumers.clients import KafkaClients
from service.settings import Security, Settings
from tests.brokers import ApacheKafka
from tests.kafka_support import Feed, Tail, fresh_settings, settings_env
from tests.process_support import ROOT, ServiceProcess, http_get
from tests.stream.test_stream_service import btc, snapshot, world_move

pytestmark = pytest.mark.kafka_only

USER = "rebalancer-svc"
PASSWORD = f"pw-{secrets.token_urlsafe(18)}"
WRONG_PASSWORD = f"pw-{secrets.token_urlsafe(18)}"
FAIL_DEADLINE_S = 60.0
"""A refused start-up must end well within this: authentication and certificate failures are
not retried."""


# --- certificates ------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"openssl {' '.join(args)}:\n{done.stderr}"


def make_ca(directory: Path, name: str) -> None:
    """A self-signed CA: ``ca.pem`` and ``ca.key`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )  # fmt: skip


def make_broker_certificate(directory: Path) -> None:
    """``broker.pem`` for 127.0.0.1 and localhost, signed by the CA in ``directory``, and its
    unencrypted PKCS#8 key ``broker.key``: what ``deploy/kafka/run --sasl-ssl`` reads."""
    (directory / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", str(secrets.randbits(63)), "-days", "2", "-extfile", "broker.ext",
        "-out", "broker.pem",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The broker's CA and certificate (``broker``), and a CA that signed nothing (``other``)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make the test certificates")
    root = tmp_path_factory.mktemp("tls")
    make_ca(root / "broker", "rebalancer test CA")
    make_broker_certificate(root / "broker")
    make_ca(root / "other", "an unrelated CA")
    return {"broker": root / "broker", "other": root / "other"}


@pytest.fixture(scope="module")
def kafka(tls: dict[str, Path]) -> Iterator[ApacheKafka]:
    """One node with a PLAINTEXT and a SASL_SSL listener, and the SCRAM user ``USER``."""
    with ApacheKafka(sasl_ssl=tls["broker"], scram=[(USER, PASSWORD)]) as node:
        yield node


# --- clients and processes with the security settings ------------------------------------------


def security(tls_dir: Path, password: str = PASSWORD) -> Security:
    return Security(
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        username=USER,
        password=SecretStr(password),
        ca_file=tls_dir / "ca.pem",
    )


def security_env(tls_dir: Path, password: str = PASSWORD) -> dict[str, str]:
    """``REBALANCER_SECURITY__*``: the only way the processes here learn the security."""
    return {
        "REBALANCER_SECURITY__PROTOCOL": "SASL_SSL",
        "REBALANCER_SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
        "REBALANCER_SECURITY__USERNAME": USER,
        "REBALANCER_SECURITY__PASSWORD": password,
        "REBALANCER_SECURITY__CA_FILE": str(tls_dir / "ca.pem"),
    }


def run_refused(settings: Settings, env: dict[str, str]) -> tuple[int, str, str, float]:
    """``rebalancer run`` expected to give up: exit code, stdout, stderr, seconds taken."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "run", "--log-level", "debug"],
        env={**os.environ, **settings_env(settings), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=FAIL_DEADLINE_S + 60,  # a hang fails the test instead of blocking the run
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


async def wait_for(condition: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


# --- the tests ---------------------------------------------------------------------------------


async def test_plans_and_executes_end_to_end_over_sasl_ssl(
    kafka: ApacheKafka, tls: dict[str, Path], tmp_path: Path
) -> None:
    servers = kafka.sasl_ssl_servers
    assert servers
    assert servers != kafka.bootstrap_servers
    settings = fresh_settings(servers)
    t = settings.topics
    clients = KafkaClients(servers, security(tls["broker"]), "security-test")
    assert (await clients.connect()).full_kafka
    env = security_env(tls["broker"])

    service_log = tmp_path / "service.log"
    service = ServiceProcess(settings, service_log, **env)
    node_log = tmp_path / "execute.log"
    paper = tmp_path / "paper.json"
    node: subprocess.Popen[bytes] | None = None
    try:
        await service.ready(timeout=120)  # connected over SASL_SSL, topics created
        async with Feed(clients) as feed:
            await feed.snapshot(t.snapshots, snapshot("a", "s1", [btc(0.6)]))
            await feed.snapshot(t.snapshots, snapshot("a", "s2", [btc(0.9)]))

        def held() -> float | None:
            try:
                state: dict[str, Any] = orjson.loads(paper.read_bytes())
            except (FileNotFoundError, orjson.JSONDecodeError):
                return None
            qty: float | None = state.get("accounts", {}).get("a", {}).get("BTCUSDT")
            return qty

        with open(node_log, "ab") as out:
            node = subprocess.Popen(
                [
                    *(sys.executable, "-m", "service.cli", "execute", "--venue", "binance"),
                    *("--paper-state", str(paper), "--log-level", "info"),
                ],
                env={**os.environ, **settings_env(settings), **env},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # the node read the snapshot topic over SASL_SSL and seeded its paper venue from it
        await wait_for(lambda: held() == pytest.approx(1.5), "the paper venue seeded", 90)

        async with Feed(clients) as feed:
            await feed.event(t.allocations, world_move("e1", {"a": 0.3}, {"a": 0.2}))
        async with Tail(clients, t.plans) as plans:
            records = await plans.until(
                lambda rs: any(r["status"] == "planned" for r in rs), timeout=90
            )
        plan = next(r for r in records if r["status"] == "planned")
        assert plan["event_id"] == "e1"
        async with Tail(clients, t.intents) as intents:
            published = await intents.until(
                lambda rs: set(plan["intent_ids"]) <= {i["intent_id"] for i in rs}
            )
        assert {i["venue"] for i in published} == {"binance"}
        # the node executed the intents and reports the plan reached, on the snapshot topic
        async with Tail(clients, t.snapshots) as snaps:
            await snaps.until(
                lambda rs: (
                    {r["strategy_id"] for r in rs if r.get("converged_plan_id") == plan["plan_id"]}
                    >= {"s1", "s2"}
                ),
                timeout=90,
            )
        assert held() == pytest.approx(2.25)  # 1.5 scaled by 0.3 / 0.2

        status, metrics = await http_get(service.port, "/metrics")
        assert status == 200
        assert metrics
        assert PASSWORD not in metrics

        service.proc.send_signal(signal.SIGTERM)
        assert await service.exited(timeout=60) == 0, service.output()
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=60) == 0, node_log.read_text()[-3000:]
    finally:
        service.stop()
        if node is not None and node.poll() is None:
            node.kill()
            node.wait(timeout=30)
    service_output = service_log.read_text()
    assert f"connected to {servers} (Apache Kafka" in service_output
    assert PASSWORD not in service_output
    assert PASSWORD not in node_log.read_text()


def test_a_wrong_password_stops_start_up_with_the_cause(
    kafka: ApacheKafka, tls: dict[str, Path]
) -> None:
    settings = fresh_settings(kafka.sasl_ssl_servers)
    code, out, err, took = run_refused(settings, security_env(tls["broker"], WRONG_PASSWORD))
    assert code == 4, err[-3000:]
    assert took < FAIL_DEADLINE_S
    assert "error: cannot use the Kafka brokers:" in err
    assert f"SASL authentication as '{USER}' with SCRAM-SHA-512 failed" in err
    assert "wrong username or password" in err
    for secret in (WRONG_PASSWORD, PASSWORD):
        assert secret not in out
        assert secret not in err  # even at --log-level debug


def test_an_untrusted_certificate_stops_start_up_with_the_cause(
    kafka: ApacheKafka, tls: dict[str, Path]
) -> None:
    settings = fresh_settings(kafka.sasl_ssl_servers)
    code, out, err, took = run_refused(settings, security_env(tls["other"]))
    assert code == 4, err[-3000:]
    assert took < FAIL_DEADLINE_S
    assert "error: cannot use the Kafka brokers:" in err
    assert f"TLS certificate is not trusted by ca_file {tls['other'] / 'ca.pem'}" in err
    assert PASSWORD not in out
    assert PASSWORD not in err


def test_the_password_is_in_no_log_of_the_broker_or_its_launcher(kafka: ApacheKafka) -> None:
    """Kept last: the broker has seen the logins of the tests above by now."""
    logs = [kafka.data / "launcher.log", kafka.data / "cluster.json"]
    logs += sorted(kafka.data.glob("node-*/*.log")) + sorted(kafka.data.glob("node-*/*.out"))
    logs += sorted(kafka.data.glob("node-*/server.properties"))
    assert any(p.name == "server.log" for p in logs)
    for path in logs:
        text = path.read_text(errors="replace")
        assert PASSWORD not in text, path
        assert WRONG_PASSWORD not in text, path
