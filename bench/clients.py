"""HTTP clients of the two dialects, and a closed-loop load generator at a fixed concurrency.

Each of `concurrency` threads holds one keep-alive httpx client and sends its next request as soon as
the previous one returned, so exactly `concurrency` requests are in flight until the work runs out.
Every thread opens its connection before the clock starts.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.report import percentile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROMPTS = (
    "a red circle on a blue background",
    "a small yellow triangle on the left",
    "a green square in the middle of a white background",
    "a large purple circle on an orange background",
)
TIMEOUT = httpx.Timeout(900.0, connect=10.0)


@dataclass(frozen=True)
class Generation:
    """One text-to-image request; the baseline runs the very same ones."""

    prompt: str
    seed: int
    width: int
    height: int
    steps: int
    cfg_scale: float = 7.0
    sampler: str | None = None  # None: the model's own scheduler on both sides


def generations(n: int, size: int, steps: int, *, first_seed: int = 1000, cfg_scale: float = 7.0,
                sampler: str | None = None) -> list[Generation]:
    return [Generation(PROMPTS[i % len(PROMPTS)], first_seed + i, size, size, steps, cfg_scale, sampler)
            for i in range(n)]


class RequestFailed(RuntimeError):
    pass


# ---- the two dialects ------------------------------------------------------------------------------

# Stability v1 sampler names, by the /v1/jobs (A1111) name the benchmarks use.
STABILITY_SAMPLERS = {"DPM++ 2M": "K_DPMPP_2M", "Euler": "K_EULER", "DDIM": "DDIM"}


def stability_txt2img(client: httpx.Client, engine_id: str, g: Generation) -> int:
    """POST text-to-image with Accept: image/png; returns the number of images received (1)."""
    body: dict[str, Any] = {"text_prompts": [{"text": g.prompt}], "width": g.width, "height": g.height,
                            "steps": g.steps, "cfg_scale": g.cfg_scale, "seed": g.seed, "samples": 1}
    if g.sampler:
        body["sampler"] = STABILITY_SAMPLERS[g.sampler]
    r = client.post(f"/v1/generation/{engine_id}/text-to-image", json=body, headers={"Accept": "image/png"})
    if r.status_code != 200 or not r.content.startswith(PNG_MAGIC):
        raise RequestFailed(f"stability {r.status_code}: {r.text[:300]}")
    return 1


def job_body(engine_id: str, g: Generation) -> dict[str, Any]:
    """A /v1/jobs request with one diffusion stage (text to image)."""
    diffusion: dict[str, Any] = {"width": g.width, "height": g.height, "prompts": [{"text": g.prompt}],
                                 "sdModel": engine_id, "steps": g.steps, "cfgScale": g.cfg_scale}
    if g.sampler:
        diffusion["sampler"] = g.sampler
    return {"requestId": uuid.uuid4().hex, "stages": [
        {"type": "INPUT_INITIALIZE", "inputInitialize": {"seed": g.seed, "count": 1}},
        {"type": "DIFFUSION", "diffusion": diffusion},
    ]}


def submit_job(client: httpx.Client, engine_id: str, g: Generation) -> str:
    r = client.post("/v1/jobs", json=job_body(engine_id, g))
    if r.status_code != 200:
        raise RequestFailed(f"POST /v1/jobs {r.status_code}: {r.text[:300]}")
    return str(r.json()["job"]["id"])


def wait_job_sse(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """Follow GET /v1/jobs/{id}/events until the stream ends; the last job object."""
    last: dict[str, Any] | None = None
    event = ""
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        if r.status_code != 200:
            raise RequestFailed(f"GET /v1/jobs/{job_id}/events {r.status_code}")
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "job":
                last = json.loads(line[5:])
            elif line.startswith("data:") and event == "end":
                break
    if last is None:
        raise RequestFailed(f"job {job_id}: the event stream ended without a job event")
    return last


def jobs_txt2img(client: httpx.Client, engine_id: str, g: Generation) -> int:
    """Submit, follow the job's events to the end, download its images; returns the image count."""
    job = wait_job_sse(client, submit_job(client, engine_id, g))
    if job.get("status") != "SUCCESS":
        raise RequestFailed(f"job {job.get('id')} ended {job.get('status')}: {job.get('failedInfo')}")
    images = job["successInfo"]["images"]
    for image in images:
        data = client.get(image["url"]).content
        if not data.startswith(PNG_MAGIC):
            raise RequestFailed(f"job {job['id']}: the image URL did not return a PNG")
    return len(images)


# ---- load generation ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What a closed-loop run measured."""

    concurrency: int
    wall_s: float
    latencies_s: list[float] = field(default_factory=list)  # of successful requests
    images: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_s) + len(self.errors)

    @property
    def per_second(self) -> float:
        """Successful requests per second of wall time."""
        return len(self.latencies_s) / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def images_per_second(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else float("nan")

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies_s, q) * 1000


Call = Callable[[httpx.Client, Any], int]  # (client, work item) -> images made
_DONE = object()


def run_load(base_url: str, key: str, call: Call, items: Sequence[Any], concurrency: int) -> LoadResult:
    """Closed loop: `call` on every item with `concurrency` requests in flight; wall time covers them all."""
    lock = threading.Lock()
    indexed: Iterator[Any] = iter(items)
    result = LoadResult(concurrency=concurrency, wall_s=0.0)
    start = [0.0]

    def set_start() -> None:
        # Runs once every thread has its connection open, before any is released.
        start[0] = time.perf_counter()

    start_gate = threading.Barrier(concurrency + 1, action=set_start)

    def worker() -> None:
        headers = {"Authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        with httpx.Client(base_url=base_url, headers=headers, timeout=TIMEOUT, limits=limits) as client:
            # The connection is open before the clock starts: clients keep theirs alive. If this
            # fails, the timed requests fail too and say why.
            with suppress(httpx.HTTPError):
                client.get("/healthz")
            start_gate.wait()
            while True:
                with lock:
                    item = next(indexed, _DONE)
                if item is _DONE:
                    return
                t0 = time.perf_counter()
                try:
                    made = call(client, item)
                except (RequestFailed, httpx.HTTPError, KeyError, ValueError) as e:
                    with lock:
                        result.errors.append(f"{type(e).__name__}: {e}")
                    continue
                elapsed = time.perf_counter() - t0
                with lock:
                    result.latencies_s.append(elapsed)
                    result.images += made

    with cycle_collector_paused(), ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(worker) for _ in range(concurrency)]
        start_gate.wait()
        for f in futures:
            f.result()
        result.wall_s = time.perf_counter() - start[0]
    return result


@contextmanager
def cycle_collector_paused() -> Iterator[None]:
    """No cyclic garbage collection in the load generator while it measures.

    This process has torch and diffusers imported (the baseline runs here), so one full collection
    stops every client thread for 0.1 to 0.3 s, and that pause would be counted as server latency.
    A timed run allocates a few megabytes of cyclic garbage at most; it is collected afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()
