"""Shared fixtures: tiny models the project builds, and a real diffusiond server on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from diffusiond.config import Settings
from diffusiond.domain.models import ModelKind
from diffusiond.services import Services, build_services
from diffusiond.store.database import Database
from tests.backends import database_url

ADMIN_KEY = "sk-dfd-test-admin-key"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database: a SQLite file, then a real PostgreSQL (skipped if unreachable)."""
    with database_url(request.param, tmp_path) as url:
        database = Database(url)
        database.migrate()
        yield database
        database.dispose()


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD pipeline folder (diffusers layout, safetensors)."""
    from diffusiond.testing.tiny_models import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "tiny")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """`diffusiond serve` in a child process, exactly as a user starts it."""

    home: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    key: str = ADMIN_KEY
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> Settings:
        return Settings(home=self.home, port=self.port, bootstrap_key=self.key, executor="none")

    def services(self) -> Services:
        """The same database and blobs as the server, without workers (for assertions)."""
        return build_services(self.settings(), with_workers=False)

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "DIFFUSIOND_HOME": str(self.home), "DIFFUSIOND_PORT": str(self.port),
               "DIFFUSIOND_BOOTSTRAP_KEY": self.key, "DIFFUSIOND_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1",
               # the test process and the server share two cores: one torch thread each
               "DIFFUSIOND_TORCH_THREADS": "1",
               **self.env}
        log = (self.home / "server.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "diffusiond.cli", "serve"], env=env, cwd=self.home,
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.home / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, **kwargs)  # type: ignore[arg-type]


def prepare_home(home: Path, tiny_sd_dir: Path) -> None:
    """Register the tiny model and the aliases seed 003's examples use, via the registry."""
    services = build_services(Settings(home=home, executor="none"), with_workers=False)
    services.db.migrate()
    services.models.register_builtins()
    services.models.add(tiny_sd_dir, "tiny", ModelKind.CHECKPOINT, family="tiny", replace=True)
    for alias in ("stable-diffusion-v1-5", "stable-inpainting-512-v2-0"):
        services.models.alias(alias, "tiny")
    services.models.alias("esrgan-v1-x2plus", "lanczos")
    services.db.dispose()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    """One server for the contract tests, with the tiny model as `tiny` and common aliases."""
    home = tmp_path_factory.mktemp("server-home")
    prepare_home(home, tiny_sd_dir)
    live = LiveServer(home=home, port=free_port(), env={"DIFFUSIOND_DEFAULT_MODEL": "tiny"})
    live.start()
    yield live
    live.stop()


@pytest.fixture
def new_key(server: LiveServer) -> Iterator[object]:
    """A factory for keys of fresh tenants: new_key(credits=10.0) -> key."""
    services = server.services()

    def make(credits: float = 100.0, admin: bool = False) -> str:
        return services.keys.create("test", admin=admin, credits_milli=round(credits * 1000)).key

    yield make
    services.db.dispose()
