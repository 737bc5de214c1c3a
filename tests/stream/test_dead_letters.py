"""Dead letters: bounded in size, identified by hash, and published even where the broker's
message size is smaller than assumed (no broker needed: the producer's hand-over is stubbed)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from consumers.producer import Outgoing, OutputProducer, dead_letter_for, shrunk
from service.errors import InputError
from service.messages import DeadLetter
from service.settings import Topics


def letter(value: bytes | None, key: bytes | None = b"k", limit: int = 1_000) -> DeadLetter:
    return dead_letter_for("t", 0, 7, key, value, InputError("bad"), "why", 1, max_bytes=limit)


def test_small_input_is_kept_whole_with_its_size_and_hash() -> None:
    d = letter(b"abc")
    assert base64.b64decode(d.value_b64 or "") == b"abc"
    assert d.value_size == 3
    assert d.value_sha256 == hashlib.sha256(b"abc").hexdigest()
    assert d.truncated is False


def test_large_input_is_cut_and_marked() -> None:
    value = bytes(range(256)) * 40
    d = letter(value, key=b"x" * 5_000)
    assert base64.b64decode(d.value_b64 or "") == value[:1_000]
    assert base64.b64decode(d.key_b64 or "") == b"x" * 1_000
    assert (d.value_size, d.value_sha256, d.truncated) == (
        len(value),
        hashlib.sha256(value).hexdigest(),
        True,
    )


def test_a_long_reason_is_cut() -> None:
    d = dead_letter_for("t", 0, 0, None, None, ValueError(), "x" * 50_000, 1)
    assert len(d.error_message) < 8_100
    assert d.error_message.endswith("(50000 characters in all)")
    assert d.value_size is None
    assert d.value_sha256 is None


def test_shrunk_keeps_an_eighth_until_nothing_is_left() -> None:
    d: DeadLetter | None = letter(b"v" * 800)
    sizes = []
    while d is not None:
        sizes.append(len(base64.b64decode(d.value_b64 or "")))
        d = shrunk(d)
    assert sizes == [800, 100, 12, 1, 0]


class StubbedProducer(OutputProducer):
    """Publishes nowhere: refuses any batch holding a letter over ``limit`` bytes."""

    def __init__(self, limit: int, failure: Exception | None = None) -> None:
        super().__init__("127.0.0.1:1", Topics(), client_id="t", writer_id="w")
        self.limit = limit
        self.failure = failure
        self.published: list[DeadLetter] = []
        self._pending: list[DeadLetter] = []
        self.renewed = 0

    async def renew(self) -> None:
        self.renewed += 1

    async def _dead_letter_batch(self, letters: list[DeadLetter]) -> Outgoing:
        self._pending = letters
        return Outgoing("dlq", [], len(letters))

    async def publish(self, outgoing: Outgoing) -> int:
        if self.failure is not None:
            raise self.failure
        if any(len(d.model_dump_json()) > self.limit for d in self._pending):
            raise MessageSizeTooLargeError()
        self.published.extend(self._pending)
        return len(self._pending)


async def test_a_letter_the_broker_refuses_as_too_large_goes_out_smaller() -> None:
    producer = StubbedProducer(limit=1_200)
    letters = [letter(b"a" * 10), letter(b"b" * 1_000), letter(b"c" * 10)]
    assert await producer.dead_letters(letters) == 3
    small = {base64.b64decode(d.value_b64 or "")[:1]: d for d in producer.published}
    assert set(small) == {b"a", b"b", b"c"}
    assert small[b"b"].truncated
    assert small[b"b"].value_size == 1_000
    assert not small[b"a"].truncated
    # a producer whose batch was refused for good goes on as a new one (two refusals: the
    # three letters together, then "b" alone; "b" cut to an eighth fits)
    assert producer.renewed == 2


async def test_a_letter_that_never_fits_is_raised() -> None:
    producer = StubbedProducer(limit=10)
    with pytest.raises(MessageSizeTooLargeError):
        await producer.dead_letters([letter(b"x")])


async def test_a_broker_failure_is_raised_not_swallowed() -> None:
    failure: Any = KafkaConnectionError("down")
    producer = StubbedProducer(limit=10_000, failure=failure)
    with pytest.raises(KafkaConnectionError):
        await producer.dead_letters([letter(b"x")])
