"""The load generator's clock: what it counts as a request's latency (never timed itself)."""

from __future__ import annotations

import gc

import httpx
from bench.clients import cycle_collector_paused, run_load

from tests.bench.conftest import CONNECT_DELAY


def _fast(client: httpx.Client, _: object) -> int:
    client.get("/fast")
    return 0


def test_the_clock_starts_once_every_client_is_connected(slow_to_connect: str) -> None:
    result = run_load(slow_to_connect, "key", _fast, range(8), 4)
    assert not result.errors and len(result.latencies_s) == 8
    # Clients keep their connections alive, so a cold connection is no part of a request's latency:
    # each thread warms its connection before the clock starts.
    assert max(result.latencies_s) < CONNECT_DELAY / 2, result.latencies_s
    assert result.wall_s < CONNECT_DELAY / 2


def test_cycle_collection_is_paused_while_measuring_and_resumed_after() -> None:
    assert gc.isenabled()
    with cycle_collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
