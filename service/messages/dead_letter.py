"""Dead letters: input that could not be used, kept byte for byte with the reason."""

from __future__ import annotations

from pydantic import Field

from ._types import EpochMs, Message, SchemaVersion


class DeadLetter(Message):
    """A rejected input record and why; the consumer moves on after publishing it."""

    schema_version: SchemaVersion = 1
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    key_b64: str | None = None
    value_b64: str | None = Field(
        description="The original value bytes, base64 (the first bytes only when "
        "``truncated``); null if none."
    )
    value_size: int | None = Field(
        default=None, ge=0, description="Length of the original value, in bytes."
    )
    value_sha256: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description="SHA-256 of the whole original value, hex: identifies it when truncated.",
    )
    truncated: bool = Field(
        default=False,
        description="The key or value was cut to fit the broker's message size; sizes and "
        "hashes describe the originals.",
    )
    error_class: str
    error_message: str
    failed_at: EpochMs
