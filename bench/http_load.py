"""A lean load generator for the control-plane benchmark: asyncio, raw HTTP/1.1 keep-alive.

The httpx threads of `bench.clients` cost about 1 ms of CPU per request and share one GIL; on a
2-core machine that is the server's CPU they take, and a response waits for its thread to get the
GIL before it is timed. Here one event loop (uvloop when installed) drives every connection: a
request costs the load generator 0.1-0.2 ms, and a response is timed as soon as it is
read. Latency is still measured at the client, over real sockets, through the whole server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.clients import LoadResult, cycle_collector_paused

TIMEOUT = 30.0
Check = Callable[[int, Any], str | None]  # (status, decoded body) -> what is wrong, or None


@dataclass(frozen=True)
class Request:
    """One request: the body is sent as JSON when given; `check` sees the decoded answer and
    returns an error message, or None when the answer is right."""

    method: str
    path: str
    body: Any = None
    check: Check | None = None


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a request and reads a Content-Length answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, key: str) -> None:
        self.reader, self.writer = reader, writer
        self.head = f"Host: {host}\r\nAuthorization: Bearer {key}\r\nAccept: application/json\r\n"

    @classmethod
    async def open(cls, base_url: str, key: str) -> Connection:
        url = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port or 80)
        return cls(reader, writer, url.netloc, key)

    async def send(self, req: Request) -> tuple[int, Any]:
        if req.body is None:
            payload = b""
            head = f"{req.method} {req.path} HTTP/1.1\r\n{self.head}\r\n"
        else:
            payload = json.dumps(req.body).encode()
            head = (f"{req.method} {req.path} HTTP/1.1\r\n{self.head}Content-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n")
        self.writer.write(head.encode() + payload)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding":
                raise ValueError("chunked answers are not read by this client")
        if length is None:
            raise ValueError("an answer without Content-Length")
        data = await self.reader.readexactly(length)
        return status, json.loads(data) if data else None

    def close(self) -> None:
        self.writer.close()


def run(base_url: str, key: str, requests: Sequence[Request], concurrency: int,
        rate: float | None = None) -> LoadResult:
    """Closed loop (`rate` None: `concurrency` requests always in flight) or open loop (request i
    due at start + i / rate, latency counted from when it was due, over `concurrency` connections)."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with cycle_collector_paused(), asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_drive(base_url, key, requests, concurrency, rate))


async def _drive(base_url: str, key: str, requests: Sequence[Request], concurrency: int,
                 rate: float | None) -> LoadResult:
    result = LoadResult(concurrency=concurrency, wall_s=0.0)
    connections = [await Connection.open(base_url, key) for _ in range(concurrency)]
    # Each connection has answered once before the clock starts, as kept-alive clients' have.
    for c in connections:
        await c.send(Request("GET", "/healthz"))
    pending = iter(enumerate(requests))
    start = time.perf_counter() + (0.01 if rate is not None else 0.0)

    async def client(conn: Connection) -> None:
        for i, req in pending:  # the shared iterator hands each request to one client
            if rate is None:
                t0 = time.perf_counter()
            else:
                t0 = start + i / rate
                await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
            try:
                status, body = await asyncio.wait_for(conn.send(req), TIMEOUT)
            except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as e:
                result.errors.append(f"{type(e).__name__}: {e}")
                return  # the connection's state is unknown after a failure: this client stops
            elapsed = time.perf_counter() - t0
            problem = req.check(status, body) if req.check else (None if status == 200 else f"HTTP {status}")
            if problem:
                result.errors.append(f"{req.method} {req.path}: {problem}")
            else:
                result.latencies_s.append(elapsed)

    try:
        await asyncio.gather(*(client(c) for c in connections))
    finally:
        result.wall_s = time.perf_counter() - start
        for c in connections:
            c.close()
    return result
