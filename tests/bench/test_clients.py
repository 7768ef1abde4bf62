"""The load generator's clock: what it counts as a request's latency (never timed itself)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from bench.clients import cycle_collector_paused, run_load, run_paced

CONNECT_DELAY = 1.0  # what the first request on a new connection takes


class _Handler(BaseHTTPRequestHandler):
    """One instance per connection: its first request is slow, like a cold connection."""

    protocol_version = "HTTP/1.1"
    warm = False

    def do_GET(self) -> None:
        if not self.warm:
            threading.Event().wait(CONNECT_DELAY)
            self.warm = True
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def slow_to_connect() -> Iterator[str]:
    """A loopback server that answers the first request of a connection after CONNECT_DELAY."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _fast(client: httpx.Client, _: object) -> int:
    client.get("/fast")
    return 0


@pytest.mark.parametrize("paced", [True, False])
def test_the_clock_starts_once_every_client_is_connected(slow_to_connect: str, paced: bool) -> None:
    items = range(8)
    if paced:
        result = run_paced(slow_to_connect, "key", _fast, items, rate=200.0, concurrency=4)
    else:
        result = run_load(slow_to_connect, "key", _fast, items, 4)
    assert not result.errors and len(result.latencies_s) == 8
    # Clients keep their connections alive, so a cold connection is no part of a request's latency:
    # each thread warms its connection before the clock starts.
    assert max(result.latencies_s) < CONNECT_DELAY / 2, result.latencies_s
    assert result.wall_s < CONNECT_DELAY / 2 + 8 / 200


def test_cycle_collection_is_paused_while_measuring_and_resumed_after() -> None:
    assert gc.isenabled()
    with cycle_collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
