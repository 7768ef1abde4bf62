"""The control plane's load generator: what it sends and what it counts (never timed itself)."""

from __future__ import annotations

from typing import Any

import pytest
from bench.http_load import Request

from bench import http_load
from tests.bench.conftest import CONNECT_DELAY, SLOW_PATH_SECONDS


@pytest.mark.parametrize("rate", [None, 200.0])
def test_the_clock_starts_once_every_connection_has_answered(slow_to_connect: str, rate: float | None) -> None:
    result = http_load.run(slow_to_connect, "key", [Request("GET", "/fast")] * 8, 4, rate=rate)
    assert not result.errors and len(result.latencies_s) == 8
    # Each connection's slow first answer comes before the clock starts, as kept-alive clients' do.
    assert max(result.latencies_s) < CONNECT_DELAY / 2, result.latencies_s
    assert result.wall_s < CONNECT_DELAY / 2


def test_the_open_loop_counts_from_when_a_request_was_due(slow_to_connect: str) -> None:
    # One connection, a request due every 10 ms, each taking 50 ms: the server falls behind, and
    # the waiting counts. The fifth is due at 40 ms and answered at about 250 ms.
    result = http_load.run(slow_to_connect, "key", [Request("GET", "/slow")] * 5, 1, rate=100.0)
    assert not result.errors
    assert max(result.latencies_s) > 4 * SLOW_PATH_SECONDS
    closed = http_load.run(slow_to_connect, "key", [Request("GET", "/slow")] * 5, 1)
    assert max(closed.latencies_s) < 3 * SLOW_PATH_SECONDS  # a closed loop never waits for a slot


def test_bodies_go_as_json_with_the_key_and_checks_see_the_answer(slow_to_connect: str) -> None:
    seen: list[Any] = []

    def check(status: int, body: Any) -> str | None:
        seen.append(body)
        return None if body["echo"]["n"] % 2 == 0 else f"odd n {body['echo']['n']}"

    posts = [Request("POST", "/jobs", {"n": n, "text": "é"}, check) for n in range(6)]
    result = http_load.run(slow_to_connect, "sk-test", posts, 2)
    assert sorted(b["echo"]["n"] for b in seen) == list(range(6))
    assert all(b["auth"] == "Bearer sk-test" and b["echo"]["text"] == "é" for b in seen)
    assert len(result.latencies_s) == 3 and sorted(result.errors) == [f"POST /jobs: odd n {n}" for n in (1, 3, 5)]


def test_without_a_check_anything_but_200_is_an_error(slow_to_connect: str) -> None:
    result = http_load.run(slow_to_connect, "key", [Request("GET", "/status/503"), Request("GET", "/status/200")], 1)
    assert result.errors == ["GET /status/503: HTTP 503"] and len(result.latencies_s) == 1
