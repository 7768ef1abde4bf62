"""Server-side fetches of client URLs: the webhook SSRF guard, size and time limits, data and s3 URLs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from diffusiond.domain.errors import InvalidParams, PayloadTooLarge
from diffusiond.webhooks.fetch import UrlFetcher
from diffusiond.webhooks.ssrf import UrlPolicy


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/to/"):
                self.send_response(302)
                self.send_header("location", self.path[len("/to"):] if self.path != "/to/private" else
                                 "http://192.168.1.1/x")
                self.end_headers()
                return
            body = b"x" * (2000 if self.path == "/big" else 10)
            self.send_response(200 if self.path != "/missing" else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_loopback_is_refused_unless_allowed(site: str) -> None:
    with pytest.raises(InvalidParams, match="loopback, private") as e:
        UrlFetcher(UrlPolicy()).fetch(site + "/ok")
    assert e.value.code == "invalid_url"
    assert UrlFetcher(UrlPolicy("127.0.0.1")).fetch(site + "/ok") == b"x" * 10


def test_limits_redirects_and_statuses(site: str) -> None:
    fetcher = UrlFetcher(UrlPolicy("127.0.0.1"), max_bytes=1000)
    with pytest.raises(PayloadTooLarge):
        fetcher.fetch(site + "/big")
    assert fetcher.fetch(site + "/to/ok") == b"x" * 10  # a redirect to an allowed place
    with pytest.raises(InvalidParams, match=r"192\.168\.1\.1"):
        fetcher.fetch(site + "/to/private")  # each hop is checked again
    with pytest.raises(InvalidParams, match="HTTP 404"):
        fetcher.fetch(site + "/missing")
    with pytest.raises(InvalidParams, match="only http"):
        fetcher.fetch("file:///etc/passwd")


def test_data_and_s3_urls() -> None:
    fetcher = UrlFetcher(UrlPolicy(), max_bytes=5)
    assert fetcher.fetch("data:image/png;base64,aGVsbG8=") == b"hello"
    with pytest.raises(PayloadTooLarge):
        fetcher.fetch("data:,toolongtext")
    with pytest.raises(InvalidParams, match="own bucket"):
        fetcher.fetch("s3://bucket/key")
    assert fetcher.fetch("s3://bucket/key", s3=lambda b, k: f"{b}{k}".encode()[:5]) == b"bucke"
