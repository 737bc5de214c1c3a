"""Deterministic identifiers: the same event on the same state always gets the same ids.

Ids are SHA-256 truncated to 128 bits, in hex. The netted state behind a plan id (arrays of
hundreds of kilobytes for large portfolios) is first summarised with xxh3-128, which is about
thirty times faster than SHA-256 there, and that summary is hashed with the rest.
"""

from __future__ import annotations

import hashlib

import orjson
import xxhash

HEX_CHARS = 32


def hex_id(material: bytes, chars: int = HEX_CHARS) -> str:
    """The first ``chars`` hex characters of the SHA-256 of ``material``: every derived id
    (intents, slices, held records, requests, long policy event ids) is made here."""
    return hashlib.sha256(material).hexdigest()[:chars]


def intent_id(plan_id: str, world_id: str | None, venue: str | None, symbol: str, leg: str) -> str:
    """Hash of ``(plan_id, world_id, venue, symbol, leg)``; null and "" stay distinct."""
    return hex_id(orjson.dumps(["intent/v1", plan_id, world_id, venue, symbol, leg]))


class PlanHasher:
    """Accumulates the trigger and the state a plan was computed on into ``plan_id``."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(b"plan/v1\x00")
        self._bulk = xxhash.xxh3_128()

    def update(self, data: bytes | memoryview) -> None:
        """Small, structured input (the trigger, options, scale factors)."""
        self._h.update(len(data).to_bytes(8, "little"))
        self._h.update(data)

    def update_bulk(self, data: bytes | memoryview) -> None:
        """Large array data (the netted state)."""
        self._bulk.update(len(data).to_bytes(8, "little"))
        self._bulk.update(data)

    def hexdigest(self) -> str:
        h = self._h.copy()
        h.update(self._bulk.digest())
        return h.hexdigest()[:HEX_CHARS]
