"""Benchmark 1: diffusiond vs plain diffusers on the CPU, the bundled model at 64x64 and 256x256, 20 steps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bench.report import Section, command_line
from bench.server import BenchModel
from bench.throughput import ThroughputConfig, measure, table, target_notes

FULL = ThroughputConfig(sizes=(64, 256), steps=20, concurrencies=(1, 4, 16), cell_seconds=20.0)
QUICK = ThroughputConfig(sizes=(64, 256), steps=20, concurrencies=(1, 4, 16), cell_seconds=4.0, min_images=2,
                         max_images=16, warmup=1)
TARGET_RATIO = 1.0
TARGET_OVERHEAD_MS = 20.0


def run(model: BenchModel, work: Path, *, config: ThroughputConfig = FULL,
        server_env: Mapping[str, str] | None = None, label: str = "", threads: int | None = None) -> Section:
    """Measure and return the section (the caller writes it)."""
    import torch

    env = {"DIFFUSIOND_DEVICE": "cpu", **(server_env or {})}
    print(f"cpu throughput: {model.label}", flush=True)
    res = measure(model, config, work, server_env=env, device="cpu", threads=threads)
    section = Section(title="Server vs plain diffusers, CPU", command=command_line(), model=model.label,
                      label=label)
    section.facts += [
        ("settings", f"txt2img, {config.steps} steps, CFG {config.cfg_scale:g}, scheduler "
                     f"{config.sampler or model.scheduler} on both sides, one image per request, distinct seeds"),
        ("baseline", "`StableDiffusionPipeline.from_pretrained(folder)` in the benchmark process, called "
                     "sequentially, PIL output in memory (no PNG encoding), after a warm-up; "
                     f"torch threads {threads or torch.get_num_threads()}"
                     + (" (--torch-threads; the server gets OMP_NUM_THREADS too)" if threads else " (default)")),
        ("diffusiond", "`diffusiond serve` child process on loopback, fresh DIFFUSIOND_HOME (SQLite), "
                       f"server env {_env_text(env)}; clients: httpx threads on the same machine, closed loop"),
        ("requests", config.describe()),
        ("images/s", "successful images / wall time; overhead = mean latency at concurrency 1 minus the "
                     "baseline's mean time per image; paired overhead = mean (median) of (request latency - "
                     "baseline time) over items run once on each side back to back, the baseline pipeline "
                     "loaded again beside the idle server (robust to the machine's drift in speed)"),
    ]
    section.tables.append(("", table(config, res)))
    section.notes += target_notes(config, res, min_ratio=TARGET_RATIO, max_overhead_ms=TARGET_OVERHEAD_MS)
    return section


def _env_text(env: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(env.items())) or "defaults"
