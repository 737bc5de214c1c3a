"""docker-compose.yml, which Docker cannot run here, checked against what is tested: its broker
has the version and settings of the one the tests run (deploy/kafka/run: each shared setting of
broker.properties is a KAFKA_* variable with the same value), and its service's settings load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.api.auth import check_exposure
from service.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
PER_NODE = {
    # set by the launcher per node; the compose file has its own listeners and quorum
    "NODE_ID",
    "PROCESS_ROLES",
    "CONTROLLER_QUORUM_VOTERS",
    "LISTENERS",
    "ADVERTISED_LISTENERS",
    "LISTENER_SECURITY_PROTOCOL_MAP",
    "INTER_BROKER_LISTENER_NAME",
    "CONTROLLER_LISTENER_NAMES",
}


def shared_settings() -> dict[str, str]:
    out = {}
    for line in (ROOT / "deploy/kafka/broker.properties").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def compose_kafka_environment() -> dict[str, str]:
    text = (ROOT / "docker-compose.yml").read_text()
    pairs = re.findall(r"^\s+KAFKA_([A-Z0-9_]+):\s*(.+?)\s*$", text, flags=re.M)
    return {name: value.strip('"') for name, value in pairs}


def as_variable(key: str) -> str:
    return key.upper().replace(".", "_").replace("-", "_")


def test_compose_sets_every_shared_broker_setting_to_the_same_value() -> None:
    shared = {as_variable(k): v for k, v in shared_settings().items()}
    compose = {k: v for k, v in compose_kafka_environment().items() if k not in PER_NODE}
    assert "GROUP_COORDINATOR_APPEND_LINGER_MS" in shared
    assert compose == shared


def test_compose_runs_the_launchers_kafka_version() -> None:
    pom = (ROOT / "deploy/kafka/pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert version is not None, "deploy/kafka/pom.xml names no kafka.version"
    image = re.search(r"image:\s*apache/kafka:(\S+)", (ROOT / "docker-compose.yml").read_text())
    assert image is not None
    assert image.group(1) == version.group(1)


def test_the_compose_service_settings_load_and_may_listen_beyond_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    pairs = re.findall(r"^\s+(REBALANCER_[A-Z0-9_]+):\s*(.+?)\s*$", text, flags=re.M)
    assert pairs
    for name, value in pairs:
        monkeypatch.setenv(name, value.strip("'\""))
    settings = load_settings()
    assert settings.http_host == "0.0.0.0"
    check_exposure(settings.http_host, settings.api)  # refused if it had no tokens
    assert [t.role for t in settings.api.tokens] == ["admin"]
