"""Benchmark 2: the control plane. `POST /v1/jobs` and `GET /v1/jobs/{id}` with the worker paused.

The server runs with DIFFUSIOND_WORKERS=0 (jobs stay queued), on SQLite and on PostgreSQL. The
baseline measured in the same run is the HTTP floor of the same server: `GET /healthz` at the same
concurrency (FastAPI + uvicorn, no auth, no database). The load comes from `bench.http_load`: one
event loop on raw keep-alive connections, so the load generator takes little of the CPU it shares
with the server on a small machine.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import http_load
from bench.clients import LoadResult, generations, job_body
from bench.http_load import Request
from bench.report import Section, Table, command_line, fmt, ratio
from bench.server import BenchModel, BenchServer, prepare_home, process_cpu_seconds

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_SUBMIT_P99_MS = 50.0
COLUMNS = ("database", "operation", "load", "requests", "errors", "wall s", "requests/s", "vs /healthz",
           "p50 ms", "p99 ms", "server CPU ms/req")


@dataclass(frozen=True)
class ControlConfig:
    requests: int = 1000
    concurrency: int = 16
    warmup: int = 20
    paced_rate: float = 100.0  # open-loop submits per second: the latency of a server that keeps up
    paced_requests: int = 500
    backends: tuple[str, ...] = ("sqlite", "postgresql")
    pg_admin_url: str = PG_ADMIN_URL


QUICK = ControlConfig(requests=200, warmup=10, paced_requests=200)


@contextmanager
def database(kind: str, home: Path, admin_url: str) -> Iterator[str | None]:
    """None for SQLite under the home; a throwaway PostgreSQL database, dropped afterwards."""
    if kind == "sqlite":
        yield None
        return
    import psycopg

    name = f"diffusiond_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    host = admin_url.split("://", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{host}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_unavailable(admin_url: str) -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    try:
        import psycopg

        with psycopg.connect(admin_url, connect_timeout=3):
            return None
    except Exception as e:  # ImportError, OperationalError: either way the row is skipped, with the reason
        return f"{admin_url} is not reachable ({type(e).__name__}: {str(e).strip()[:200]})"


HEALTHZ = Request("GET", "/healthz")


def _submitted(ids: list[str]) -> http_load.Check:
    def check(status: int, body: Any) -> str | None:
        if status != 200:
            return f"HTTP {status}: {str(body)[:300]}"
        ids.append(str(body["job"]["id"]))
        return None

    return check


def _waiting(status: int, body: Any) -> str | None:
    if status != 200 or body["job"]["status"] != "WAITING":
        return f"HTTP {status}: {str(body)[:300]}"
    return None


def submits(bodies: list[dict[str, Any]], ids: list[str]) -> list[Request]:
    check = _submitted(ids)
    return [Request("POST", "/v1/jobs", body, check) for body in bodies]


@dataclass
class Measured:
    """One operation's load result and the server's CPU time per request during it."""

    load: LoadResult
    server_cpu_ms: float
    label: str


def measure_backend(model: BenchModel, cfg: ControlConfig, home: Path, database_url: str | None,
                    server_env: Mapping[str, str]) -> dict[str, Measured]:
    prepare_home(home, model, database_url)
    total = cfg.warmup + cfg.requests + cfg.paced_requests
    # Every job stays queued, all of one tenant: the per-tenant limit must hold them all.
    env = {**server_env, "DIFFUSIOND_WORKERS": "0", "DIFFUSIOND_MAX_QUEUED_JOBS_PER_TENANT": str(total)}
    size = 64 if model.family in ("shapes", "tiny") else 512
    bodies = [job_body(model.engine_id, g) for g in generations(total, size, 20)]
    closed, paced = bodies[cfg.warmup: cfg.warmup + cfg.requests], bodies[cfg.warmup + cfg.requests:]
    ids: list[str] = []
    out: dict[str, Measured] = {}
    with BenchServer(home, model, env=env, database_url=database_url) as server:
        assert server.proc is not None
        pid = server.proc.pid

        def load(requests: list[Request], rate: float | None = None) -> LoadResult:
            return http_load.run(server.url, server.key, requests, cfg.concurrency, rate=rate)

        def measured(label: str, run: Callable[[], LoadResult]) -> Measured:
            cpu = process_cpu_seconds(pid)
            result = run()
            return Measured(result, (process_cpu_seconds(pid) - cpu) * 1000 / max(result.requests, 1), label)

        load([HEALTHZ] * cfg.warmup)
        warm = load(submits(bodies[: cfg.warmup], ids))
        if warm.errors:
            raise RuntimeError(f"warm-up submit failed: {warm.errors[0]}\n{server.log_tail()}")
        ids.clear()
        closed_loop = f"{cfg.concurrency} in flight"
        out["GET /healthz"] = measured(closed_loop, lambda: load([HEALTHZ] * cfg.requests))
        out["POST /v1/jobs"] = measured(closed_loop, lambda: load(submits(closed, ids)))
        gets = [Request("GET", f"/v1/jobs/{job_id}", check=_waiting) for job_id in ids]
        out["GET /v1/jobs/{id}"] = measured(closed_loop, lambda: load(gets))
        out["POST /v1/jobs (open loop)"] = measured(f"{cfg.paced_rate:g}/s paced", lambda: load(
            submits(paced, []), rate=cfg.paced_rate))
    return out


def run(model: BenchModel, work: Path, *, config: ControlConfig = ControlConfig(),
        server_env: Mapping[str, str] | None = None, label: str = "") -> Section:
    section = Section(title="Control plane: /v1/jobs with the worker paused", command=command_line(),
                      model=model.label + " (registered, never loaded: no worker runs)", label=label)
    t = Table(COLUMNS)
    for kind in config.backends:
        print(f"control plane: {kind}", flush=True)
        missing = postgres_unavailable(config.pg_admin_url) if kind == "postgresql" else None
        if missing is not None:
            section.notes.append(f"{kind}: not measured: {missing}")
            continue
        with database(kind, work / f"control-{kind}", config.pg_admin_url) as url:
            res = measure_backend(model, config, work / f"control-{kind}", url, server_env or {})
        floor = res["GET /healthz"].load
        for op, m in res.items():
            load = m.load
            t.add(kind, op if op != "GET /healthz" else "GET /healthz (baseline: HTTP floor)", m.label,
                  load.requests, len(load.errors), fmt(load.wall_s), fmt(load.per_second, 1),
                  ratio(load.per_second, floor.per_second), fmt(load.latency_ms(50), 1),
                  fmt(load.latency_ms(99), 1), fmt(m.server_cpu_ms, 2))
        for op in ("POST /v1/jobs", "POST /v1/jobs (open loop)"):
            p99 = res[op].load.latency_ms(99)
            verdict = "met" if p99 < TARGET_SUBMIT_P99_MS else "NOT met"
            section.notes.append(f"target submit p99 < {TARGET_SUBMIT_P99_MS:g} ms on {kind}, {res[op].label}: "
                                 f"{fmt(p99, 1)} ms, {verdict}")
        for op, m in res.items():
            load = m.load
            if load.errors:
                section.notes.append(f"{kind} {op}: {len(load.errors)} failed, first: {load.errors[0][:200]}")
    section.facts += [
        ("server", "`diffusiond serve` child process, DIFFUSIOND_WORKERS=0 (jobs stay queued), "
                   "DIFFUSIOND_MAX_QUEUED_JOBS_PER_TENANT raised to the jobs submitted, fresh home; "
                   "PostgreSQL: a throwaway database on 127.0.0.1:5432"),
        ("requests", f"{config.requests} per operation at concurrency {config.concurrency} (`bench.http_load`: "
                     f"one asyncio event loop, {config.concurrency} raw HTTP/1.1 keep-alive connections, closed "
                     f"loop), after {config.warmup} warm-up submits; each submit a one-stage txt2img job with a "
                     "fresh requestId; the GETs read the jobs just submitted (queue growing)"),
        ("open loop", f"{config.paced_requests} more submits due at a fixed {config.paced_rate:g}/s, sent over "
                      f"{config.concurrency} connections; latency counted from when each was due, so queueing in a "
                      "server that falls behind is included; the schedule starts once every connection has "
                      "answered once"),
        ("server CPU", "user + system CPU seconds of the server process during the operation (/proc), per "
                       "request; the load generator runs on the same cores and costs about 0.1-0.2 ms per "
                       "request (its cycle collector is paused while it measures)"),
    ]
    section.tables.append(("", t))
    return section
