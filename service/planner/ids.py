"""Deterministic identifiers: the same event on the same state always gets the same ids.

Ids are SHA-256 (hardware-accelerated on most CPUs) truncated to 128 bits, in hex.
"""

from __future__ import annotations

import hashlib

import orjson

HEX_CHARS = 32


def intent_id(plan_id: str, world_id: str | None, venue: str | None, symbol: str, leg: str) -> str:
    """Hash of ``(plan_id, world_id, venue, symbol, leg)``; null and "" stay distinct."""
    material = orjson.dumps(["intent/v1", plan_id, world_id, venue, symbol, leg])
    return hashlib.sha256(material).hexdigest()[:HEX_CHARS]


class PlanHasher:
    """Accumulates the trigger and the state a plan was computed on into ``plan_id``."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(b"plan/v1\x00")

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(len(data).to_bytes(8, "little"))
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:HEX_CHARS]
