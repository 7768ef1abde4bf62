"""The engine's one entry point: run a GenerateSpec's stages and return its images.

This module imports no torch or diffusers at import time (the API process imports it to build the
worker without paying for torch); everything heavy is imported inside methods.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.infotext import infotext
from diffusiond.domain.limits import MAX_IMAGES_PER_JOB
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import (
    Adetailer,
    Diffusion,
    GenerateSpec,
    ImageRef,
    Img2Img,
    Inpaint,
    Sampler,
    Stage,
    Txt2Img,
    Upscale,
)
from diffusiond.engine.context import GeneratedImage, ModelResolver, WorkContext

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from diffusiond.engine.lora import ActiveLora
    from diffusiond.engine.model_cache import CachedModel, ModelCache, Task
    from diffusiond.engine.progress import StepCallback
    from diffusiond.engine.prompts import Conditioning
    from diffusiond.engine.upscalers import Upscaler

# The sampler used when a request names none, per model family; other families keep the scheduler
# their own folder ships (e.g. the bundled `shapes` model).
DEFAULT_SAMPLERS: dict[str, Sampler] = {
    "sd15": Sampler.K_DPMPP_2M,
    "sd15_inpaint": Sampler.K_DPMPP_2M,
    "sd2_v": Sampler.K_DPMPP_2M,
    "sd2_base": Sampler.K_DPMPP_2M,
    "sd2_inpaint": Sampler.K_DPMPP_2M,
    "sdxl": Sampler.K_EULER,
    "sdxl_inpaint": Sampler.K_EULER,
}
# A task run on a prepared pipeline: (pipeline, conditioning) -> images
TaskBody = Callable[[Any, "Conditioning"], "list[Image.Image]"]


def pick_device(device: str | None) -> torch.device:
    """`None`: the first CUDA device when there is one, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Engine:
    """Runs jobs on one device; keeps up to `max_models` checkpoints warm."""

    def __init__(
        self, resolver: ModelResolver, cache_dir: Path, device: str | None = None, max_models: int = 2,
        precision: str = "auto",
    ) -> None:
        self._resolver = resolver
        self._cache_dir = cache_dir
        self._device_name = device
        self._precision = precision  # auto | fp32 | fp16 | bf16 (an endpoint's device profile)
        self._max_models = max_models
        self._cache: ModelCache | None = None
        self._lock = threading.Lock()
        self._upscalers: OrderedDict[str, Upscaler] = OrderedDict()

    @property
    def cache(self) -> ModelCache:
        with self._lock:
            return self._cache or self._make_cache()

    def _make_cache(self) -> ModelCache:
        if self._cache is None:
            import torch

            from diffusiond.engine.model_cache import ModelCache

            device = pick_device(self._device_name)
            dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
            auto = torch.float16 if device.type == "cuda" else torch.float32
            dtype = dtypes.get(self._precision, auto)
            self._cache = ModelCache(self._resolver, self._cache_dir, device, dtype, self._max_models)
        return self._cache

    def warm(self, model_id: str) -> None:
        """Load a checkpoint ahead of the first job that needs it."""
        self.cache.get(model_id)

    def run(self, spec: GenerateSpec, ctx: WorkContext) -> list[GeneratedImage]:
        """Run every stage in order; stage k transforms every image of stage k-1."""
        # 1. Check the spec
        if not spec.stages:
            raise InvalidParams("a job needs at least one stage")
        if not 1 <= spec.count <= MAX_IMAGES_PER_JOB:
            raise InvalidParams(f"count must be between 1 and {MAX_IMAGES_PER_JOB}", field="samples")
        seeds = spec.image_seeds()
        images: list[Image.Image] | None = None
        # 2. Run the stages, each on the previous stage's images
        for index, stage in enumerate(spec.stages):
            from diffusiond.engine.progress import StepCallback

            callback = StepCallback(ctx, list(range(spec.count)), index, len(spec.stages),
                                    preview_seconds=spec.preview_seconds)
            callback.check_canceled()
            inputs = self._inputs(stage, images, spec.init if index == 0 else None, ctx, spec.count)
            images = self._run_stage(stage, inputs, seeds, callback)
        # 3. Wrap the results
        assert images is not None
        return [GeneratedImage(image=image, seed=seed) for image, seed in zip(images, seeds, strict=True)]

    def run_batch(
        self, items: Sequence[tuple[GenerateSpec, WorkContext]]
    ) -> list[list[GeneratedImage] | BaseException]:
        """Run several jobs, sharing forward passes where they can (see engine/batching.py)."""
        from diffusiond.engine.batching import run_batch

        return run_batch(self, items)

    def _inputs(
        self,
        stage: Stage,
        previous: list[Image.Image] | None,
        job_init: ImageRef | None,
        ctx: WorkContext,
        count: int,
    ) -> list[Image.Image] | None:
        """The images a stage starts from: its own init, else the previous stage's, else the job's."""
        if isinstance(stage, Txt2Img | Adetailer):
            return previous
        ref = stage.init or (job_init if previous is None else None)
        if ref is not None:
            image = ctx.load_image(ref)
            return [image.copy() for _ in range(count)]
        if previous is None:
            raise InvalidParams(f"the {stage.kind} stage needs an init image", field="init_image")
        return previous

    def _run_stage(
        self, stage: Stage, inputs: list[Image.Image] | None, seeds: list[int], callback: StepCallback
    ) -> list[Image.Image]:
        from diffusiond.engine.model_cache import Task

        if isinstance(stage, Txt2Img):
            diffusion = stage.diffusion

            def body(pipe: Any, cond: Conditioning) -> list[Image.Image]:
                from diffusiond.engine import txt2img

                return txt2img.run(pipe, diffusion, cond, seeds, callback)

            return self._diffuse(diffusion, Task.TXT2IMG, seeds, callback, body)
        assert inputs is not None
        if isinstance(stage, Img2Img):
            return self._img2img(stage.diffusion, inputs, seeds, stage.strength, callback, stage.step_schedule_end)
        if isinstance(stage, Inpaint):
            return self._inpaint(stage, inputs, seeds, callback)
        if isinstance(stage, Upscale):
            return self._upscale(stage, inputs, seeds, callback)
        from diffusiond.engine import adetailer

        return adetailer.run(stage, inputs, seeds, callback, self._resolver, self._diffuse)

    # -- stages -------------------------------------------------------------------------------

    def _img2img(
        self,
        diffusion: Diffusion,
        inits: list[Image.Image],
        seeds: list[int],
        strength: float,
        callback: StepCallback,
        end: float | None = None,
    ) -> list[Image.Image]:
        from diffusiond.engine import img2img
        from diffusiond.engine.model_cache import Task

        if strength == 0.0:  # no model needed (or loaded) to keep the images as they are
            img2img.check_inputs(inits, seeds, strength, end)
            return [image.copy() for image in inits]

        if self.cache.get(diffusion.model).loaded.is_inpaint_unet:
            return self._img2img_with_inpaint_unet(diffusion, inits, seeds, strength, callback)

        def body(pipe: Any, cond: Conditioning) -> list[Image.Image]:
            return img2img.run(pipe, diffusion, cond, inits, seeds, strength, callback, end)

        return self._diffuse(diffusion, Task.IMG2IMG, seeds, callback, body)

    def _img2img_with_inpaint_unet(
        self, diffusion: Diffusion, inits: list[Image.Image], seeds: list[int], strength: float, callback: StepCallback
    ) -> list[Image.Image]:
        """A 9-channel UNet runs img2img as inpainting under a full mask (as A1111 does)."""
        from PIL import Image as PILImage

        from diffusiond.engine import inpaint
        from diffusiond.engine.model_cache import Task

        masks = [PILImage.new("L", image.size, 255) for image in inits]

        def body(pipe: Any, cond: Conditioning) -> list[Image.Image]:
            return inpaint.run(pipe, diffusion, cond, inits, masks, seeds, callback, strength=strength)

        return self._diffuse(diffusion, Task.INPAINT, seeds, callback, body)

    def _inpaint(
        self, stage: Inpaint, inits: list[Image.Image], seeds: list[int], callback: StepCallback
    ) -> list[Image.Image]:
        from diffusiond.engine import inpaint
        from diffusiond.engine.model_cache import Task

        mask_image = None
        if stage.mask is not None:
            mask_image = callback.ctx.load_image(stage.mask)
        masks = []
        for init in inits:
            inpaint.check_inputs(init, mask_image, stage.mask_source, stage.strength)
            mask = inpaint.build_mask(init, mask_image, stage.mask_source, invert=stage.invert, blur=stage.mask_blur)
            masks.append(mask)

        def body(pipe: Any, cond: Conditioning) -> list[Image.Image]:
            return inpaint.run(
                pipe, stage.diffusion, cond, inits, masks, seeds, callback, strength=stage.strength,
                fill=stage.fill, only_masked=stage.only_masked, only_masked_padding=stage.only_masked_padding,
            )

        return self._diffuse(stage.diffusion, Task.INPAINT, seeds, callback, body)

    def _upscale(
        self, stage: Upscale, images: list[Image.Image], seeds: list[int], callback: StepCallback
    ) -> list[Image.Image]:
        from diffusiond.engine import upscale

        if stage.hires is None:
            return upscale.run(self._upscaler(stage.upscaler), images, stage, callback)
        # Hires fix: re-diffuse at the new size so the model adds detail the resize could not.
        # The stage's progress is split in two halves so it keeps rising.
        first = replace(callback, stage=2 * callback.stage, stages=2 * callback.stages)
        second = replace(callback, stage=2 * callback.stage + 1, stages=2 * callback.stages)
        images = upscale.run(self._upscaler(stage.upscaler), images, stage, first)
        return self._img2img(stage.hires, images, seeds, stage.hires_strength, second)

    def _upscaler(self, name: str) -> Upscaler:
        """A loaded upscaler; the last two used stay in memory."""
        from diffusiond.engine.upscalers import LANCZOS, load_upscaler

        with self._lock:
            if name not in self._upscalers:
                record = None if name == LANCZOS else self._resolver.resolve(name, ModelKind.UPSCALER)
                self._upscalers[name] = load_upscaler(record, pick_device(self._device_name))
                while len(self._upscalers) > 2:
                    self._upscalers.popitem(last=False)
            self._upscalers.move_to_end(name)
            return self._upscalers[name]

    # -- shared diffusion set-up ----------------------------------------------------------------

    def _diffuse(
        self, diffusion: Diffusion, task: Task, seeds: list[int], callback: StepCallback, body: TaskBody
    ) -> list[Image.Image]:
        """Run `body(pipe, conditioning)` on the model's task pipeline with the job's adapters applied."""
        from diffusiond.engine.lora_mix import branches, composed, composes
        from diffusiond.engine.model_cache import Task
        from diffusiond.engine.prompts import encode_prompts

        cached = self.cache.get(diffusion.model)
        with cached.lock:
            if task == Task.TXT2IMG and cached.loaded.is_inpaint_unet:
                task, body = Task.INPAINT, self._blank_canvas_inpaint(diffusion, seeds, callback)
            # Built before the job's state is applied, so a VAE swap reaches this pipeline too
            pipe = cached.pipeline(task)
            with self._job_state(cached, diffusion) as loras:
                pipe.scheduler = self._scheduler(cached, diffusion)

                def encode(d: Diffusion) -> Conditioning:
                    return encode_prompts(cached.base, d, cached.device, is_sdxl=cached.loaded.is_sdxl)

                if composes(diffusion):
                    with composed(cached.base, pipe, branches(diffusion, loras), encode) as cond:
                        return body(pipe, cond)
                return body(pipe, encode(diffusion))

    def _blank_canvas_inpaint(self, diffusion: Diffusion, seeds: list[int], callback: StepCallback) -> TaskBody:
        """A 9-channel inpainting UNet cannot run plain txt2img: inpaint a blank canvas instead."""
        from PIL import Image as PILImage

        from diffusiond.engine import inpaint

        size = (diffusion.width, diffusion.height)
        canvas = [PILImage.new("RGB", size, (127, 127, 127)) for _ in seeds]
        masks = [PILImage.new("L", size, 255) for _ in seeds]

        def body(pipe: Any, cond: Conditioning) -> list[Image.Image]:
            return inpaint.run(pipe, diffusion, cond, canvas, masks, seeds, callback)

        return body

    def _scheduler(self, cached: CachedModel, diffusion: Diffusion) -> Any:
        from diffusiond.engine.schedulers import build_scheduler

        sampler = diffusion.sampler or DEFAULT_SAMPLERS.get(cached.loaded.family)
        if sampler is None:  # the model's own scheduler, rebuilt fresh (schedulers hold state)
            return cached.scheduler_class.from_config(cached.scheduler_config)
        return build_scheduler(cached.scheduler_config, sampler, diffusion.schedule)

    @contextmanager
    def _job_state(self, cached: CachedModel, diffusion: Diffusion) -> Iterator[list[ActiveLora]]:
        """LoRAs, embeddings, hypernetworks and the VAE override on the shared modules, for this job only;
        yields the LoRAs switched on."""
        from diffusiond.engine.embeddings import applied_embeddings
        from diffusiond.engine.hypernetwork import applied_hypernetworks
        from diffusiond.engine.lora import applied_loras
        from diffusiond.engine.tiling import circular_padding
        from diffusiond.engine.vae import swapped_vae

        vae = cached.vae(diffusion.vae, self._resolver) if diffusion.vae is not None else None
        with ExitStack() as stack:
            loras = stack.enter_context(applied_loras(cached.base, diffusion.loras, self._resolver, cached.loras))
            stack.enter_context(applied_embeddings(cached.base, diffusion.embeddings, self._resolver))
            stack.enter_context(applied_hypernetworks(cached.base.unet, diffusion.hypernetworks, self._resolver))
            stack.enter_context(swapped_vae(cached.pipelines(), vae))
            modules = [cached.base.unet, *(pipe.vae for pipe in cached.pipelines())]
            stack.enter_context(circular_padding(modules, diffusion.tiling))
            yield loras


class GenerateHandler:
    """The `generate` kind's handler: the engine's images, saved through the job's context."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self, spec: GenerateSpec, ctx: WorkContext) -> None:
        for i, generated in enumerate(self.engine.run(spec, ctx)):
            ctx.save_image(generated.image, generated.seed, generated.finish_reason, spec.output_format,
                           parameters=infotext(spec, i))

    def run_batch(self, items: Sequence[tuple[GenerateSpec, WorkContext]]) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        for (spec, ctx), outcome in zip(items, self.engine.run_batch(items), strict=True):
            if isinstance(outcome, BaseException):
                outcomes.append(outcome)
                continue
            for i, generated in enumerate(outcome):
                ctx.save_image(generated.image, generated.seed, generated.finish_reason, spec.output_format,
                               parameters=infotext(spec, i))
            outcomes.append(None)
        return outcomes
