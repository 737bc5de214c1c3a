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
    value_b64: str | None = Field(description="The original value bytes, base64; null if none.")
    error_class: str
    error_message: str
    failed_at: EpochMs
