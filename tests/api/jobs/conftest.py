"""Servers for the `/v1/jobs` contract tests: one without workers (jobs stay queued, so queue and
cancel behaviour is deterministic) and one with a worker running the tiny model."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from diffusiond.config import Settings
from tests.conftest import LiveServer, free_port, prepare_home

KeyFactory = Callable[..., str]


def start_server(home: Path, tiny_sd_dir: Path, **env: str) -> LiveServer:
    prepare_home(home, tiny_sd_dir)
    live = LiveServer(home=home, port=free_port(),
                      env={"DIFFUSIOND_DEFAULT_MODEL": "tiny", "DIFFUSIOND_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
                           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                           **env})
    live.start()
    return live


@pytest.fixture(scope="session")
def queue_server(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    """No workers: submitted jobs wait in the queue until canceled."""
    live = start_server(tmp_path_factory.mktemp("jobs-queue"), tiny_sd_dir, DIFFUSIOND_EXECUTOR="none")
    yield live
    live.stop()


def key_factory(live: LiveServer) -> Iterator[KeyFactory]:
    services = live.services()

    def make(credits: float = 100.0, admin: bool = False) -> str:
        return services.keys.create("test", admin=admin, credits_milli=round(credits * 1000)).key

    yield make
    services.db.dispose()


@pytest.fixture
def queue_key(queue_server: LiveServer) -> Iterator[KeyFactory]:
    yield from key_factory(queue_server)


def png_bytes(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 30, 30),
              fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def upload(client: httpx.Client, data: bytes, mime: str = "image/png") -> str:
    r = client.post("/v1/resource/image/upload", files={"file": ("x", data, mime)})
    assert r.status_code == 200, r.text
    return str(r.json()["resourceId"])


def txt2img_stages(prompt: str = "a red circle", size: int = 64, steps: int = 2, count: int = 1,
                   seed: int = 7, model: str = "tiny") -> list[dict[str, object]]:
    return [
        {"type": "INPUT_INITIALIZE", "inputInitialize": {"seed": str(seed), "count": str(count)}},
        {"type": "DIFFUSION", "diffusion": {"width": str(size), "height": str(size), "prompts": [{"text": prompt}],
                                            "sdModel": model, "steps": str(steps), "cfgScale": 5}},
    ]


@pytest.fixture(scope="session")
def work_server(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    """One in-process worker running the tiny model."""
    live = start_server(tmp_path_factory.mktemp("jobs-work"), tiny_sd_dir, DIFFUSIOND_WORKERS="1")
    yield live
    live.stop()


@pytest.fixture
def work_key(work_server: LiveServer) -> Iterator[KeyFactory]:
    yield from key_factory(work_server)


def wait_job(client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 120.0) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()["job"]
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {statuses}: {job}")


def sse_events(client: httpx.Client, job_id: str, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every `job` event of the job's stream, until the stream ends."""
    import json

    events: list[dict[str, Any]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "job":
                events.append(json.loads(line.removeprefix("data: ")))
    return events


@dataclass
class PgLiveServer(LiveServer):
    """A server on PostgreSQL instead of the SQLite file."""

    database_url: str = ""

    def settings(self) -> Settings:
        return Settings(home=self.home, port=self.port, bootstrap_key=self.key, executor="none",
                        database_url=self.database_url)


@pytest.fixture(scope="session")
def pg_queue_server(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    """The worker-less server on PostgreSQL (skipped when PostgreSQL is not running)."""
    from diffusiond.domain.models import ModelKind
    from diffusiond.services import build_services
    from tests.backends import database_url

    home = tmp_path_factory.mktemp("jobs-pg")
    with database_url("postgres", home) as url:
        services = build_services(Settings(home=home, executor="none", database_url=url), with_workers=False)
        services.db.migrate()
        services.models.add(tiny_sd_dir, "tiny", ModelKind.CHECKPOINT, family="tiny", replace=True)
        services.db.dispose()
        live = PgLiveServer(home=home, port=free_port(), database_url=url,
                            env={"DIFFUSIOND_DEFAULT_MODEL": "tiny", "DIFFUSIOND_EXECUTOR": "none",
                                 "DIFFUSIOND_DATABASE_URL": url, "OMP_NUM_THREADS": "1"})
        live.start()
        yield live
        live.stop()
