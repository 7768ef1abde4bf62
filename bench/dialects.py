"""The A1111 and EKS dialects against Stability v1, on the same images, in the same run.

One `diffusiond serve` child; every client sends the very same generations (prompt, seed, size,
steps, Euler, CFG) at each concurrency:

- Stability v1 `text-to-image` with `Accept: image/png`: the reference;
- A1111 `POST /sdapi/v1/txt2img`: base64 PNGs in JSON, infotext and all;
- an EKS `POST /v1alpha2` text-to-image task, timed from submit until its `.out` result file is on
  disk (the worker writes it after the images): "submit to output file present". One watcher thread
  looks into every waiting task's folder each 5 ms (one thread per task, each polling on its own,
  took CPU from the server on a 2-core machine: thousands of wake-ups a second at concurrency 16).

Clients take turns in rounds (Stability, A1111, EKS, then again), so the machine's drift in speed
falls on all three alike; each row sums its rounds. Target: each dialect at most 5% slower than
Stability at every concurrency (images/s ratio >= 0.95).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.clients import PNG_MAGIC, Generation, LoadResult, RequestFailed, generations, run_load, stability_txt2img
from bench.report import Section, Table, command_line, fmt, ratio
from bench.server import BenchModel, BenchServer, prepare_home

TARGET_RATIO = 0.95
CLIENTS = ("stability", "a1111", "eks")
LABELS = {"stability": "Stability v1 text-to-image (reference)", "a1111": "A1111 /sdapi/v1/txt2img",
          "eks": "EKS /v1alpha2 task (submit to .out present)"}
COLUMNS = ("client", "concurrency", "requests", "errors", "wall s", "images/s", "vs Stability", "p50 ms", "p99 ms")
POLL_SECONDS = 0.005


@dataclass(frozen=True)
class DialectConfig:
    size: int = 64
    steps: int = 20
    concurrencies: tuple[int, ...] = (1, 16)
    requests: int = 32  # per client, concurrency and round (rounded up to a multiple of the concurrency)
    rounds: int = 3
    warmup: int = 2

    def count(self, concurrency: int) -> int:
        return -(-max(self.requests, concurrency) // concurrency) * concurrency


@dataclass
class DialectResult:
    loads: dict[tuple[str, int], list[LoadResult]] = field(default_factory=dict)

    def merged(self, client: str, concurrency: int) -> LoadResult:
        parts = self.loads[(client, concurrency)]
        out = LoadResult(concurrency=concurrency, wall_s=sum(p.wall_s for p in parts))
        for p in parts:
            out.latencies_s += p.latencies_s
            out.images += p.images
            out.errors += p.errors
        return out


def a1111_txt2img(client: httpx.Client, g: Generation) -> int:
    """POST /sdapi/v1/txt2img as A1111 clients do; returns the images received."""
    body = {"prompt": g.prompt, "seed": g.seed, "width": g.width, "height": g.height, "steps": g.steps,
            "cfg_scale": g.cfg_scale, "sampler_name": "Euler", "scheduler": "automatic", "batch_size": 1, "n_iter": 1}
    r = client.post("/sdapi/v1/txt2img", json=body)
    if r.status_code != 200:
        raise RequestFailed(f"a1111 {r.status_code}: {r.text[:300]}")
    import base64

    images = r.json()["images"]
    if not images or not base64.b64decode(images[0][:16]).startswith(PNG_MAGIC):
        raise RequestFailed("a1111: no PNG in the answer")
    return len(images)


class OutWatcher:
    """One thread that looks for the `.out` file of every waited-for folder each `POLL_SECONDS`, and
    sleeps while nothing is waited for (the Stability and A1111 rounds see no wake-ups)."""

    def __init__(self) -> None:
        self._waiting: dict[Path, threading.Event] = {}
        self._changed = threading.Condition()
        threading.Thread(target=self._watch, daemon=True, name="eks-out-watcher").start()

    def wait(self, folder: Path, timeout: float) -> bool:
        event = threading.Event()
        with self._changed:
            self._waiting[folder] = event
            self._changed.notify()
        try:
            return event.wait(timeout)
        finally:
            with self._changed:
                self._waiting.pop(folder, None)

    def _watch(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._waiting))
                waiting = list(self._waiting.items())
            for folder, event in waiting:
                if folder.is_dir() and any(p.suffix == ".out" for p in folder.iterdir()):
                    event.set()
            time.sleep(POLL_SECONDS)


def eks_task(folder_root: Path) -> Callable[[httpx.Client, Generation], int]:
    """Submit an EKS text-to-image task and wait for its `.out` file under `folder_root/bench/<id>/`."""
    watcher = OutWatcher()

    def call(client: httpx.Client, g: Generation) -> int:
        task_id = uuid.uuid4().hex[:24]
        content = {"alwayson_scripts": {}, "prompt": g.prompt, "seed": g.seed, "width": g.width, "height": g.height,
                   "steps": g.steps, "cfg_scale": g.cfg_scale, "sampler_name": "Euler"}
        body = {"task": {"metadata": {"id": task_id, "runtime": "sdruntime", "tasktype": "text-to-image",
                                      "prefix": "bench", "context": ""}, "content": content}}
        r = client.post("/v1alpha2", json=body)
        if r.status_code != 200:
            raise RequestFailed(f"eks {r.status_code}: {r.text[:300]}")
        folder = folder_root / "bench" / task_id
        if not watcher.wait(folder, timeout=900):
            raise RequestFailed(f"eks task {task_id}: no .out file")
        if not any(p.suffix == ".png" for p in folder.iterdir()):
            raise RequestFailed(f"eks task {task_id} failed: {next(folder.glob('*.out')).read_text()[:300]}")
        return 1

    return call


def calls(server: BenchServer, model: BenchModel) -> dict[str, Callable[[httpx.Client, Any], int]]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": server.key}) as c:
        tenant = c.get("/v1/user/account").json()["id"]
    root = server.home / "blobs" / "outputs" / tenant / "eks"
    return {"stability": lambda client, g: stability_txt2img(client, model.engine_id, g),
            "a1111": a1111_txt2img, "eks": eks_task(root)}


def measure(model: BenchModel, cfg: DialectConfig, work: Path, server_env: Mapping[str, str]) -> DialectResult:
    home = work / "dialects-home"
    prepare_home(home, model)
    result = DialectResult()
    env = {"DIFFUSIOND_DEFAULT_MODEL": model.engine_id, **server_env}
    with BenchServer(home, model, env=env) as server:
        fns = calls(server, model)
        for name, fn in fns.items():  # load the model, warm every path
            warm = run_load(server.url, server.key, fn, items(cfg, cfg.warmup, seed=1), 1)
            if warm.errors:
                raise RuntimeError(f"warm-up {name} failed: {warm.errors[0]}\n{server.log_tail()}")
        for c in cfg.concurrencies:
            for r in range(cfg.rounds):
                for name in CLIENTS:
                    load = run_load(server.url, server.key, fns[name], items(cfg, cfg.count(c), 1000 + 100_000 * r), c)
                    result.loads.setdefault((name, c), []).append(load)
                    print(f"  {name} c={c} round {r + 1}: {load.images_per_second:.3f} images/s, "
                          f"{len(load.errors)} errors", flush=True)
    return result


def items(cfg: DialectConfig, n: int, seed: int) -> list[Generation]:
    return generations(n, cfg.size, cfg.steps, first_seed=seed, sampler="Euler")


def table(cfg: DialectConfig, res: DialectResult) -> Table:
    t = Table(COLUMNS)
    for c in cfg.concurrencies:
        reference = res.merged("stability", c)
        for name in CLIENTS:
            load = res.merged(name, c)
            t.add(LABELS[name], c, load.requests, len(load.errors), fmt(load.wall_s), fmt(load.images_per_second, 3),
                  ratio(load.images_per_second, reference.images_per_second), fmt(load.latency_ms(50), 1),
                  fmt(load.latency_ms(99), 1))
    return t


def target_notes(cfg: DialectConfig, res: DialectResult) -> list[str]:
    notes = []
    for c in cfg.concurrencies:
        reference = res.merged("stability", c).images_per_second
        for name in ("a1111", "eks"):
            load = res.merged(name, c)
            r = load.images_per_second / reference if reference else float("nan")
            verdict = "met" if r >= TARGET_RATIO else "NOT met"
            notes.append(f"target at most 5% slower than Stability v1, {LABELS[name]}, concurrency {c}: "
                         f"{fmt(r)}x, {verdict}")
            if load.errors:
                notes.append(f"{name} c={c}: {len(load.errors)} failed requests, first: {load.errors[0][:200]}")
    return notes


def run(model: BenchModel, work: Path, *, config: DialectConfig | None = None,
        server_env: Mapping[str, str] | None = None, label: str = "") -> Section:
    cfg = config or DialectConfig()
    print(f"dialects: {model.label}", flush=True)
    res = measure(model, cfg, work, {"DIFFUSIOND_DEVICE": "cpu", **(server_env or {})})
    section = Section(title="A1111 and EKS vs Stability v1", command=command_line(), model=model.label, label=label)
    section.facts += [
        ("settings", f"txt2img {cfg.size}x{cfg.size}, {cfg.steps} steps, Euler, CFG 7, one image per request, "
                     "the same prompts and seeds for every client"),
        ("requests", f"{cfg.count(1)} at concurrency 1 and {cfg.count(max(cfg.concurrencies))} at "
                     f"{max(cfg.concurrencies)} per client and round, {cfg.rounds} rounds taking turns "
                     f"(Stability, A1111, EKS), {cfg.warmup} warm-up requests per client, untimed"),
        ("EKS", "submit, then wait until the `.out` file is in the task folder on disk (one watcher thread looks "
                "into every waiting folder each 5 ms)"),
    ]
    section.tables.append(("", table(cfg, res)))
    section.notes += target_notes(cfg, res)
    return section


QUICK = DialectConfig(requests=8, rounds=1, warmup=1)
