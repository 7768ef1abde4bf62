"""The model under test and a real `diffusiond serve` child process on loopback, as a user starts it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from diffusiond.config import Settings
from diffusiond.domain.models import ModelKind
from diffusiond.models.registry import BUNDLED_DIR
from diffusiond.services import build_services

BENCH_KEY = "sk-dfd-bench-admin-key"
MODEL_DIR_ENV = "DIFFUSIOND_BENCH_MODEL_DIR"
# Raised so the figures measure the server, not its per-tenant guards.
UNLIMITED = {
    "DIFFUSIOND_DEFAULT_CREDITS": "10000000",
    "DIFFUSIOND_RATE_LIMIT_PER_SECOND": "1000000",
    "DIFFUSIOND_RATE_LIMIT_BURST": "1000000",
    "DIFFUSIOND_MAX_QUEUED_JOBS_PER_TENANT": "10000000",
}


@dataclass(frozen=True)
class BenchModel:
    """The diffusers folder both sides run, and how clients name it."""

    path: Path
    engine_id: str  # the id clients send
    family: str  # the family registered in diffusiond (size limits, default sampler)
    label: str  # what the BENCHMARKS.md section says about it
    registered_by_server: bool  # the bundled model registers itself at start

    @property
    def scheduler(self) -> str:
        config = json.loads((self.path / "scheduler" / "scheduler_config.json").read_text())
        return str(config.get("_class_name", "unknown"))


def resolve_model(model_dir: Path | None, work: Path) -> BenchModel:
    """`--model-dir` (or DIFFUSIOND_BENCH_MODEL_DIR), else the bundled `shapes`, else a tiny fallback."""
    given = model_dir or (Path(os.environ[MODEL_DIR_ENV]) if os.environ.get(MODEL_DIR_ENV) else None)
    if given is not None:
        given = given.expanduser().resolve()
        if not (given / "model_index.json").is_file():
            raise SystemExit(f"{given} is not a diffusers folder (no model_index.json)")
        index = json.loads((given / "model_index.json").read_text())
        family = str(index.get("diffusiond_family", "shapes"))
        return BenchModel(given, "bench", family, f"`{given}` (given; registered as family {family})", False)
    bundled = BUNDLED_DIR / "shapes"
    if (bundled / "model_index.json").is_file():
        return BenchModel(bundled, "shapes", "shapes", "the bundled `shapes` model (`src/diffusiond/bundled/shapes`)",
                          True)
    from diffusiond.testing.tiny_models import save_tiny_sd

    path = save_tiny_sd(work / "tiny-sd")
    label = ("FALLBACK: a tiny random SD model (`diffusiond.testing.tiny_models.save_tiny_sd`), because the "
             "bundled `shapes` model is not in this checkout; these are not the bundled model's figures")
    return BenchModel(path, "bench", "tiny", label, False)


def prepare_home(home: Path, model: BenchModel, database_url: str | None = None) -> None:
    """Migrate the database and register the model (what `diffusiond models add` does), untimed."""
    home.mkdir(parents=True, exist_ok=True)
    services = build_services(Settings(home=home, database_url=database_url, executor="none"), with_workers=False)
    try:
        services.db.migrate()
        services.models.register_builtins()
        if not model.registered_by_server:
            services.models.add(model.path, model.engine_id, ModelKind.CHECKPOINT, family=model.family,
                                replace=True)
    finally:
        services.db.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class BenchServer:
    """`python -m diffusiond.cli serve` with its own home, port and an admin key."""

    home: Path
    model: BenchModel
    env: Mapping[str, str] = field(default_factory=dict)
    database_url: str | None = None
    port: int = field(default_factory=free_port)
    key: str = BENCH_KEY
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # perf_counter when the process was spawned

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        env = {**os.environ, **UNLIMITED, "DIFFUSIOND_HOME": str(self.home), "DIFFUSIOND_HOST": "127.0.0.1",
               "DIFFUSIOND_PORT": str(self.port), "DIFFUSIOND_BOOTSTRAP_KEY": self.key,
               "DIFFUSIOND_DEFAULT_MODEL": self.model.engine_id, "DIFFUSIOND_LOG_LEVEL": "warning",
               "HF_HUB_OFFLINE": "1", **self.env}
        if self.database_url:
            env["DIFFUSIOND_DATABASE_URL"] = self.database_url
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "server.log").open("ab")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "diffusiond.cli", "serve"], env=env, cwd=self.home,
                                     stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 120.0, poll: float = 0.02) -> float:
        """Seconds from spawn until /healthz answers 200."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"diffusiond serve exited:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started_at
            except httpx.HTTPError:
                pass
            time.sleep(poll)
        raise RuntimeError(f"diffusiond serve did not answer /healthz within {timeout:g} s:\n{self.log_tail()}")

    def start(self) -> float:
        self.spawn()
        return self.wait_healthy()

    def log_tail(self, chars: int = 3000) -> str:
        path = self.home / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> BenchServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def threads_env(threads: int | None) -> dict[str, str]:
    """Environment that caps a child's torch/OpenMP threads (empty: the library defaults)."""
    if not threads:
        return {}
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def parse_env(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings (from --server-env) as a mapping."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--server-env takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out
