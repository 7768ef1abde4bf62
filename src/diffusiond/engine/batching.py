"""Dynamic batching: several queued txt2img jobs that share a forward pass run as one batch.

Jobs batch together when their model, size, steps, sampler, schedule, clip skip and VAE match
(`domain.batching.batch_key`, which the queue claims by). Each row keeps its own prompt, negative
prompt, seed and guidance scale; each job keeps its own progress and cancel (a canceled job's rows
leave the batch at the next step).

The loop below is the one `StableDiffusionPipeline.__call__` runs, with guidance applied per row;
noise comes from one CPU generator per row exactly as the pipeline draws it, so a job's images
match the ones it gets when it runs alone, within float tolerance.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diffusiond.domain.batching import batch_key
from diffusiond.domain.params import GenerateSpec
from diffusiond.engine.context import Canceled, GeneratedImage, WorkContext
from diffusiond.engine.progress import cpu_generators

if TYPE_CHECKING:
    import torch

    from diffusiond.engine.runner import Engine


@dataclass
class _Job:
    spec: GenerateSpec
    ctx: WorkContext
    rows: list[int] = field(default_factory=list)  # row indices in the batch
    canceled: bool = False


def batchable(specs: Sequence[GenerateSpec]) -> bool:
    """True when every spec may share a batch with the first one (`domain.batching.batch_key`)."""
    key = batch_key(specs[0]) if specs else ""
    return bool(key) and all(batch_key(spec) == key for spec in specs)


def run_batch(
    engine: Engine, items: Sequence[tuple[GenerateSpec, WorkContext]]
) -> list[list[GeneratedImage] | BaseException]:
    """Run compatible txt2img jobs as one batch; the result list holds each job's images or error."""
    import torch

    from diffusiond.engine.prompts import encode_prompts

    # 1. Check inputs: anything not batchable runs job by job
    specs = [spec for spec, _ in items]
    if len(items) == 1 or not batchable(specs):
        return [_run_alone(engine, spec, ctx) for spec, ctx in items]
    first = specs[0].stages[0].diffusion  # type: ignore[union-attr]
    cached = engine.cache.get(first.model)
    if cached.loaded.is_sdxl or cached.loaded.is_inpaint_unet:
        return [_run_alone(engine, spec, ctx) for spec, ctx in items]
    with cached.lock:
        pipe = cached.base
        # 2. Encode each job's prompts once (a job's rows share them) and lay out the rows
        jobs: list[_Job] = []
        cond: list[torch.Tensor] = []
        uncond: list[torch.Tensor] = []
        scales: list[float] = []
        seeds: list[int] = []
        for spec, ctx in items:
            d = spec.stages[0].diffusion  # type: ignore[union-attr]
            c = encode_prompts(pipe, d, cached.device, is_sdxl=False)
            job = _Job(spec, ctx)
            for seed in spec.image_seeds():
                job.rows.append(len(seeds))
                cond.append(c.prompt_embeds)
                uncond.append(c.negative_prompt_embeds)
                scales.append(d.cfg_scale)
                seeds.append(seed)
            jobs.append(job)
        if len({t.shape for t in cond + uncond}) != 1:  # e.g. long prompts chunked to other lengths
            return [_run_alone(engine, spec, ctx) for spec, ctx in items]
        # 3. Scheduler, timesteps and per-row noise, as the pipeline prepares them
        scheduler = engine._scheduler(cached, first)
        scheduler.set_timesteps(first.steps, device=cached.device)
        generators = cpu_generators(seeds)
        latents = _initial_latents(pipe, first.width, first.height, generators, cached.device, scheduler)
        step_kwargs = _step_kwargs(scheduler, generators)
        embeds = torch.cat([torch.cat(uncond), torch.cat(cond)])
        guidance = torch.tensor(scales, device=cached.device, dtype=latents.dtype).view(-1, 1, 1, 1)
        alive = list(range(len(seeds)))
        # 4. Denoising loop with classifier-free guidance per row
        timesteps = scheduler.timesteps
        with torch.inference_mode():
            for step, t in enumerate(timesteps):
                model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                noise = pipe.unet(model_in, t, encoder_hidden_states=embeds, return_dict=False)[0]
                noise_uncond, noise_cond = noise.chunk(2)
                noise = noise_uncond + guidance * (noise_cond - noise_uncond)
                latents = scheduler.step(noise, t, latents, **step_kwargs, return_dict=False)[0]
                keep = _report_and_drop_canceled(jobs, alive, (step + 1) / len(timesteps))
                if keep is not None:
                    if not keep:
                        break
                    pos = [alive.index(r) for r in keep]
                    sel = torch.tensor(pos, device=latents.device)
                    latents, guidance = latents.index_select(0, sel), guidance.index_select(0, sel)
                    n = len(alive)
                    embeds = torch.cat([embeds[:n].index_select(0, sel), embeds[n:].index_select(0, sel)])
                    if "generator" in step_kwargs:
                        step_kwargs["generator"] = [step_kwargs["generator"][p] for p in pos]
                    alive = keep
            # 5. Decode the surviving rows together
            images = _decode(pipe, latents) if alive else []
    by_row = dict(zip(alive, images, strict=True))
    results: list[list[GeneratedImage] | BaseException] = []
    for job in jobs:
        if job.canceled:
            results.append(Canceled("job canceled"))
        else:
            results.append([GeneratedImage(by_row[r], seeds[r]) for r in job.rows])
    return results


def _run_alone(engine: Engine, spec: GenerateSpec, ctx: WorkContext) -> list[GeneratedImage] | BaseException:
    try:
        return engine.run(spec, ctx)
    except Exception as e:  # each job's failure is its own
        return e


def _initial_latents(pipe: Any, width: int, height: int, generators: list[Any], device: torch.device,
                     scheduler: Any) -> torch.Tensor:
    import torch

    factor = pipe.vae_scale_factor
    shape = (pipe.unet.config.in_channels, height // factor, width // factor)
    noise = [torch.randn(shape, generator=g, dtype=pipe.unet.dtype) for g in generators]
    latents: torch.Tensor = torch.stack(noise).to(device) * scheduler.init_noise_sigma
    return latents


def _step_kwargs(scheduler: Any, generators: list[Any]) -> dict[str, Any]:
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "generator" in params:
        kwargs["generator"] = generators
    if "eta" in params:
        kwargs["eta"] = 0.0
    return kwargs


def _report_and_drop_canceled(jobs: list[_Job], alive: list[int], fraction: float) -> list[int] | None:
    """Report progress; return the rows to keep when a job was canceled, else None."""
    dropped: set[int] = set()
    for job in jobs:
        if job.canceled:
            continue
        if job.ctx.is_canceled():
            job.canceled = True
            dropped.update(job.rows)
            continue
        for i in range(len(job.rows)):
            job.ctx.report_progress(i, fraction)
    if not dropped:
        return None
    return [r for r in alive if r not in dropped]


def _decode(pipe: Any, latents: torch.Tensor) -> list[Any]:
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return list(pipe.image_processor.postprocess(image, output_type="pil"))
