"""A loopback HTTP server for the load generators' own tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

CONNECT_DELAY = 1.0  # what the first request on a new connection takes
SLOW_PATH_SECONDS = 0.05  # what every request to /slow takes


class _Handler(BaseHTTPRequestHandler):
    """One instance per connection: its first request is slow, like a cold connection.

    GET /slow takes SLOW_PATH_SECONDS, GET /status/N answers N, POST echoes its JSON body."""

    protocol_version = "HTTP/1.1"
    warm = False

    def _answer(self, status: int, body: bytes) -> None:
        if not self.warm:
            threading.Event().wait(CONNECT_DELAY)
            self.warm = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/slow":
            threading.Event().wait(SLOW_PATH_SECONDS)
        status = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/status/") else 200
        self._answer(status, b"{}")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(200, json.dumps({"echo": json.loads(body), "auth": self.headers["Authorization"]}).encode())

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
