"""Reading a request body within a byte limit, for the routes that parse their own bodies.

The edge (`edge.py`) already bounds every body by its route class; a route that reads the body
itself still refuses it past its own limit: from Content-Length before reading, then as it streams.
"""

from __future__ import annotations

from fastapi import Request

from diffusiond.domain.errors import PayloadTooLarge


async def read_capped(request: Request, limit: int, what: str = "image") -> bytes:
    """The request body, refused (413, naming `what`) once it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"{what}: the request is larger than {limit:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"{what}: the request is larger than {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
