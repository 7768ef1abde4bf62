"""The server the hardening tests share: no workers (nothing submitted runs, so a synchronous request
always waits out its 2 s timeout), and the tiny model registered as `tiny`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.jobs.conftest import KeyFactory, key_factory, start_server
from tests.conftest import LiveServer


@pytest.fixture(scope="session")
def edge_server(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    # The default bucket (50 at once, 30/s) is tested with its own slow key; the admin key that the
    # other tests share must not run dry when a fast machine sends their requests back to back.
    live = start_server(tmp_path_factory.mktemp("edge"), tiny_sd_dir, DIFFUSIOND_EXECUTOR="none",
                        DIFFUSIOND_SYNC_TIMEOUT_SECONDS="2", DIFFUSIOND_RATE_LIMIT_PER_SECOND="1000",
                        DIFFUSIOND_RATE_LIMIT_BURST="1000")
    yield live
    live.stop()


@pytest.fixture
def edge_key(edge_server: LiveServer) -> Iterator[KeyFactory]:
    yield from key_factory(edge_server)
