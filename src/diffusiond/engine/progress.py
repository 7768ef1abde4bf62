"""The per-step callback every denoising task passes to diffusers: progress, cancel, early stop."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from diffusiond.engine.context import Canceled, WorkContext

log = logging.getLogger(__name__)


@dataclass
class StepCallback:
    """`callback_on_step_end` for a diffusers pipeline running images `indices` of a job.

    Progress is the job's overall fraction: stage `stage` of `stages`, scaled by steps done.
    `stop_at` (0..1] ends the schedule early (Stability's `step_schedule_end`): the pipeline's
    `_interrupt` flag makes diffusers skip the remaining steps and decode the current latents.
    With `preview_seconds`, the first image's current latents are decoded and handed to the context
    at most that often, the first time that long after the callback was made (short jobs pay nothing),
    and never when the stage's remaining steps will take less than half that: the final image would
    replace such a preview before a client polling at that rate saw it.
    """

    ctx: WorkContext
    indices: Sequence[int]
    stage: int = 0
    stages: int = 1
    stop_at: float | None = None
    preview_seconds: float = 0.0
    _last_preview: float = field(default_factory=time.monotonic)
    _started: float = field(default_factory=time.monotonic)

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
        now = time.monotonic()
        if self.preview_seconds and now - self._last_preview >= self.preview_seconds:
            remaining = (now - self._started) / (step + 1) * (total - step - 1)
            if remaining >= self.preview_seconds / 2:
                self._last_preview = now
                self.preview(pipe, kwargs.get("latents"))
        return kwargs

    def preview(self, pipe: Any, latents: Any) -> None:
        """Decode the first image's latents and hand them over; a preview never fails the job."""
        if latents is None:
            return
        try:
            import torch

            with torch.no_grad():
                vae = pipe.vae
                decoded = vae.decode(latents[:1].to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
                image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
            self.ctx.report_preview(image)
        except Exception:
            log.warning("preview failed", exc_info=True)


def cpu_generators(seeds: Sequence[int]) -> list[Any]:
    """One CPU generator per image: the same seed gives the same noise on every device."""
    import torch

    return [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
