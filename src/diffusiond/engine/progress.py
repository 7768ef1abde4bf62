"""The per-step callback every denoising task passes to diffusers: progress, cancel, early stop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from diffusiond.engine.context import Canceled, WorkContext


@dataclass
class StepCallback:
    """`callback_on_step_end` for a diffusers pipeline running images `indices` of a job.

    Progress is the job's overall fraction: stage `stage` of `stages`, scaled by steps done.
    `stop_at` (0..1] ends the schedule early (Stability's `step_schedule_end`): the pipeline's
    `_interrupt` flag makes diffusers skip the remaining steps and decode the current latents.
    """

    ctx: WorkContext
    indices: Sequence[int]
    stage: int = 0
    stages: int = 1
    stop_at: float | None = None

    def check_canceled(self) -> None:
        if self.ctx.is_canceled():
            raise Canceled("job canceled")

    def __call__(self, pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.check_canceled()
        total = max(int(getattr(pipe, "num_timesteps", 0) or 0), 1)
        done = min((step + 1) / total, 1.0)
        if self.stop_at is not None and done >= self.stop_at:
            pipe._interrupt = True
            done = 1.0
        fraction = (self.stage + done) / self.stages
        for index in self.indices:
            self.ctx.report_progress(index, fraction)
        return kwargs


def cpu_generators(seeds: Sequence[int]) -> list[Any]:
    """One CPU generator per image: the same seed gives the same noise on every device."""
    import torch

    return [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
