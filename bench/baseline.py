"""The baseline: plain diffusers in one process, called sequentially, as a user would without diffusiond.

Nothing from diffusiond runs here: `StableDiffusionPipeline.from_pretrained(folder)`, the folder's own
scheduler (or the one named), one image per call, PIL output kept in memory (no PNG encoding), after a
warm-up. That is the most favourable setting for the baseline.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.clients import Generation
from bench.report import mean, percentile

# The diffusers scheduler (class, extra config) each benchmark sampler name means; the same mapping
# diffusiond's engine uses for these samplers.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
}


@dataclass
class BaselineResult:
    images: int
    wall_s: float
    per_image_s: list[float] = field(default_factory=list)
    peak_memory_bytes: int = 0  # CUDA only

    @property
    def images_per_second(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def mean_s(self) -> float:
        return mean(self.per_image_s)

    def latency_ms(self, q: float) -> float:
        return percentile(self.per_image_s, q) * 1000


class PlainDiffusers:
    """A StableDiffusionPipeline loaded from a folder, on one device."""

    def __init__(self, folder: Path, *, device: str = "cpu", fp16: bool = False, threads: int | None = None) -> None:
        import diffusers
        import torch

        self.torch = torch
        self.device = device
        self._threads_before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        dtype = torch.float16 if fp16 else torch.float32
        loader: Any = diffusers.StableDiffusionPipeline
        self.pipe = loader.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                           dtype=dtype, safety_checker=None, requires_safety_checker=False)
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self._own_scheduler = self.pipe.scheduler

    def _scheduler(self, sampler: str | None) -> Any:
        if sampler is None:
            return self._own_scheduler
        import diffusers

        name, extra = SCHEDULERS[sampler]
        return getattr(diffusers, name).from_config(self._own_scheduler.config, **extra)

    def generate(self, g: Generation) -> Any:
        self.pipe.scheduler = self._scheduler(g.sampler)
        generator = self.torch.Generator("cpu").manual_seed(g.seed)
        out = self.pipe(g.prompt, negative_prompt="", width=g.width, height=g.height,
                        num_inference_steps=g.steps, guidance_scale=g.cfg_scale, generator=generator,
                        output_type="pil")
        return out.images[0]

    def sync(self) -> None:
        """Wait for queued device work (CUDA runs asynchronously)."""
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def time_one(self, warmup: Sequence[Generation]) -> float:
        """Run the warm-up items; seconds the last one took (what the request counts are sized by)."""
        elapsed = float("nan")
        for g in warmup:
            t = time.perf_counter()
            self.generate(g)
            self.sync()
            elapsed = time.perf_counter() - t
        return elapsed

    def run(self, items: Sequence[Generation], warmup: int = 2) -> BaselineResult:
        """Warm up, then generate every item one after the other."""
        for g in items[:warmup]:
            self.generate(g)
        self.sync()
        if self.device.startswith("cuda"):
            self.torch.cuda.reset_peak_memory_stats()
        result = BaselineResult(images=0, wall_s=0.0)
        t0 = time.perf_counter()
        for g in items:
            t = time.perf_counter()
            self.generate(g)
            self.sync()
            result.per_image_s.append(time.perf_counter() - t)
            result.images += 1
        result.wall_s = time.perf_counter() - t0
        if self.device.startswith("cuda"):
            result.peak_memory_bytes = int(self.torch.cuda.max_memory_allocated())
        return result

    def close(self) -> None:
        """Free the pipeline before the server starts, so both do not hold memory at once."""
        del self.pipe, self._own_scheduler
        self.torch.set_num_threads(self._threads_before)
        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
