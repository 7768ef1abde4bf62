"""`read_capped`: a body within its limit is read whole; past it, 413 before reading or mid-stream."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request
from starlette.types import Message

from diffusiond.api.bodies import read_capped
from diffusiond.domain.errors import PayloadTooLarge


def request(chunks: list[bytes], content_length: int | None = None) -> tuple[Request, list[int]]:
    """A request whose body arrives in `chunks`; the list counts the chunks the app received."""
    received: list[int] = []
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]

    async def receive() -> Message:
        index = len(received)
        received.append(index)
        return {"type": "http.request", "body": chunks[index], "more_body": index + 1 < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return Request(scope, receive), received


def test_a_body_within_the_limit_is_read_whole() -> None:
    req, _ = request([b"ab", b"cd", b"e"])
    assert asyncio.run(read_capped(req, 5, "body")) == b"abcde"


def test_a_declared_length_past_the_limit_is_refused_before_reading() -> None:
    req, received = request([b"abcdef"], content_length=6)
    with pytest.raises(PayloadTooLarge, match="body: the request is larger than 5 bytes"):
        asyncio.run(read_capped(req, 5, "body"))
    assert received == []


def test_a_stream_past_the_limit_is_refused_at_the_chunk_that_passes_it() -> None:
    req, received = request([b"abc", b"def", b"ghi", b"jkl"])  # chunked: no length declared
    with pytest.raises(PayloadTooLarge, match="image: the request is larger than 5 bytes"):
        asyncio.run(read_capped(req, 5))
    assert len(received) == 2
