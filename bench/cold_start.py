"""Benchmark 3: cold start. Seconds from `diffusiond serve` to the first image returned.

The baseline measured in the same run: a fresh Python process that imports torch and diffusers,
loads the same folder with `StableDiffusionPipeline.from_pretrained` and makes one image (PIL, in
memory). Both start with a warm OS file cache (the model was read before), which is what a restart
of a running machine sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.clients import TIMEOUT, generations, stability_txt2img
from bench.report import Section, Table, command_line, fmt, ratio
from bench.server import BenchModel, BenchServer, prepare_home, threads_env

BASELINE_SCRIPT = """
import sys
import torch, diffusers
folder, prompt, size, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pipe = diffusers.StableDiffusionPipeline.from_pretrained(
    folder, local_files_only=True, use_safetensors=True, safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
image = pipe(prompt, negative_prompt="", width=size, height=size, num_inference_steps=steps, guidance_scale=7.0,
             generator=torch.Generator("cpu").manual_seed(1), output_type="pil").images[0]
print("first-image", image.size, flush=True)
"""
COLUMNS = ("what", "runs", "median s", "min s", "max s", "time vs baseline")


@dataclass(frozen=True)
class ColdConfig:
    repeats: int = 3
    size: int = 64
    steps: int = 20


QUICK = ColdConfig(repeats=1)


def baseline_once(model: BenchModel, cfg: ColdConfig, threads: int | None = None) -> float:
    """Seconds from spawning the plain-diffusers process to its first image."""
    g = generations(1, cfg.size, cfg.steps)[0]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **threads_env(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", BASELINE_SCRIPT, str(model.path), g.prompt, str(cfg.size),
                             str(cfg.steps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("first-image"):
            elapsed = time.perf_counter() - t0
            proc.wait()
            return elapsed
    err = proc.stderr.read() if proc.stderr is not None else ""
    proc.wait()
    raise RuntimeError(f"the plain diffusers process made no image (exit {proc.returncode}):\n{err[-3000:]}")


def diffusiond_once(model: BenchModel, cfg: ColdConfig, home: Path,
                    server_env: Mapping[str, str]) -> tuple[float, float]:
    """(seconds to /healthz 200, seconds to the first image) from spawning `diffusiond serve`."""
    if not model.registered_by_server:
        prepare_home(home, model)  # `diffusiond models add` happens before a restart, untimed
    server = BenchServer(home, model, env=server_env)
    try:
        server.spawn()
        healthy = server.wait_healthy(poll=0.01)
        g = generations(1, cfg.size, cfg.steps)[0]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"},
                          timeout=TIMEOUT) as client:
            stability_txt2img(client, model.engine_id, g)
        first = time.perf_counter() - server.started_at
    finally:
        server.stop()
    return healthy, first


def run(model: BenchModel, work: Path, *, config: ColdConfig = ColdConfig(),
        server_env: Mapping[str, str] | None = None, label: str = "", threads: int | None = None) -> Section:
    base: list[float] = []
    health: list[float] = []
    first: list[float] = []
    for i in range(config.repeats):
        print(f"cold start {i + 1}/{config.repeats}", flush=True)
        base.append(baseline_once(model, config, threads))
        with tempfile.TemporaryDirectory(dir=work, prefix="cold-home-") as home:
            h, f = diffusiond_once(model, config, Path(home), {**threads_env(threads), **(server_env or {})})
        health.append(h)
        first.append(f)
    t = Table(COLUMNS)
    med = _median(base)
    t.add("plain diffusers: new process -> first image (baseline)", len(base), fmt(med), fmt(min(base)),
          fmt(max(base)), "1.00x")
    t.add("diffusiond: `diffusiond serve` -> /healthz 200", len(health), fmt(_median(health)), fmt(min(health)),
          fmt(max(health)), ratio(_median(health), med))
    t.add("diffusiond: `diffusiond serve` -> first image returned (Stability v1, PNG)", len(first),
          fmt(_median(first)), fmt(min(first)), fmt(max(first)), ratio(_median(first), med))
    section = Section(title="Cold start", command=command_line(), model=model.label, label=label)
    section.facts += [
        ("settings", f"one {config.size}x{config.size} txt2img image, {config.steps} steps, CFG 7; "
                     f"{config.repeats} run(s) each, alternating baseline and diffusiond; torch threads "
                     f"{threads or 'default'} on both sides"),
        ("diffusiond", "`python -m diffusiond.cli serve` with a fresh DIFFUSIOND_HOME (SQLite, migrations at start"
                       + ("" if model.registered_by_server else "; the model registered beforehand, untimed")
                       + "); /healthz polled every 10 ms, then the first request is sent at once"),
        ("baseline", "`python -c` importing torch + diffusers, `from_pretrained`, one image, PIL in memory"),
        ("file cache", "warm: the model files were read before the timed runs"),
    ]
    section.tables.append(("", t))
    return section


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
