"""create_app: what every request shares, whichever dialect it speaks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from diffusiond.app import create_app
from diffusiond.config import Settings
from diffusiond.services import build_services


class Overlap:
    """Wraps blocking calls and records how many ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def slow(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                time.sleep(0.05)
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.running -= 1

        return wrapped


def test_blocking_request_work_shares_one_bounded_pool(tmp_path: Path) -> None:
    # A submit (awaited off the event loop) and a status read (a plain `def` endpoint) reach the
    # database from threads; with api_threads=2, sixteen of them at once still run two at a time.
    settings = Settings(home=tmp_path, executor="none", api_threads=2)
    services = build_services(settings, with_workers=False)
    overlap = Overlap()
    services.jobs.submit = overlap.slow(services.jobs.submit)  # type: ignore[method-assign]
    services.jobs.get = overlap.slow(services.jobs.get)  # type: ignore[method-assign]
    body = {"stages": [{"type": "DIFFUSION", "diffusion": {"width": 64, "height": 64, "steps": 2,
                                                           "prompts": [{"text": "a red square"}]}}]}
    with TestClient(create_app(settings, services)) as client:
        key = services.keys.create("t", credits_milli=100_000).key
        client.headers["Authorization"] = f"Bearer {key}"
        first = client.post("/v1/jobs", json={**body, "requestId": "first"})
        assert first.status_code == 200, first.text
        job_id = first.json()["job"]["id"]
        overlap.most = 0

        def one(i: int) -> int:
            if i % 2:
                return client.get(f"/v1/jobs/{job_id}").status_code
            return client.post("/v1/jobs", json={**body, "requestId": f"r{i}"}).status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(one, range(16)))
    assert codes == [200] * 16
    assert overlap.most == 2


def test_request_threads_default_to_a_few_more_than_the_cores(monkeypatch: Any) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert Settings().resolved_api_threads == 4
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert Settings().resolved_api_threads == 8
    assert Settings(api_threads=32).resolved_api_threads == 32
