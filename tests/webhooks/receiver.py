"""A real webhook receiver: an HTTP server thread on loopback that records what it is sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str
    at: float = 0.0  # time.monotonic() when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """`respond(n)` gives (status, headers) for a request whose `webhook-id` was seen n times before."""

    respond: Callable[[int], tuple[int, dict[str, str]]] = lambda n: (204, {})
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{self.host}:{self.server.server_address[1]}"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    msg = headers.get("webhook-id")
                    n = sum(1 for r in outer.received if r.headers.get("webhook-id") == msg)
                    outer.received.append(Received(self.path, headers, body, time.monotonic()))
                status, headers = outer.respond(n)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)
