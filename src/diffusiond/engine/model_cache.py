"""Warm pipelines, least-recently-used first out, with components shared across tasks.

One UNet, VAE and text encoder serve txt2img, img2img and inpaint: the task pipelines are built
from the loaded one with `from_pipe`, which reuses the same modules (no copy, no extra memory).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusiond.domain.models import ModelKind
from diffusiond.engine.context import ModelResolver
from diffusiond.engine.loader import LoadedModel, load_checkpoint

if TYPE_CHECKING:
    import torch


class Task(str, Enum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"


_PIPELINE_CLASSES = {
    (False, Task.TXT2IMG): "StableDiffusionPipeline",
    (False, Task.IMG2IMG): "StableDiffusionImg2ImgPipeline",
    (False, Task.INPAINT): "StableDiffusionInpaintPipeline",
    (True, Task.TXT2IMG): "StableDiffusionXLPipeline",
    (True, Task.IMG2IMG): "StableDiffusionXLImg2ImgPipeline",
    (True, Task.INPAINT): "StableDiffusionXLInpaintPipeline",
}


@dataclass
class CachedModel:
    """A loaded checkpoint and its task pipelines; hold `lock` while running a job on it.

    The lock serialises jobs per model because LoRA adapters, textual-inversion tokens and the
    scheduler are state on shared modules.
    """

    model_id: str
    loaded: LoadedModel
    scheduler_config: dict[str, Any]
    scheduler_class: type[Any]  # the model's own, kept because jobs replace `pipe.scheduler`
    device: torch.device
    lock: threading.Lock = field(default_factory=threading.Lock)
    _pipes: dict[Task, Any] = field(default_factory=dict)
    _vaes: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    loras: OrderedDict[str, None] = field(default_factory=OrderedDict)  # warm LoRA adapters, LRU

    @property
    def base(self) -> Any:
        return self.loaded.pipe

    def pipeline(self, task: Task) -> Any:
        if task not in self._pipes:
            import diffusers

            cls = getattr(diffusers, _PIPELINE_CLASSES[(self.loaded.is_sdxl, task)])
            pipe = self.base if isinstance(self.base, cls) else cls.from_pipe(self.base)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[task] = pipe
        return self._pipes[task]

    def pipelines(self) -> list[Any]:
        """The base pipeline and every task pipeline built from it so far."""
        pipes = [self.base, *self._pipes.values()]
        return [pipe for i, pipe in enumerate(pipes) if all(pipe is not p for p in pipes[:i])]

    def vae(self, vae_id: str, resolver: ModelResolver) -> Any:
        """A VAE override for this model, loaded once and kept (the last two used)."""
        from diffusiond.engine.vae import load_vae

        if vae_id not in self._vaes:
            self._vaes[vae_id] = fast_vae(load_vae(resolver.resolve(vae_id, ModelKind.VAE), self.base.vae))
            while len(self._vaes) > 2:
                self._vaes.popitem(last=False)
        self._vaes.move_to_end(vae_id)
        return self._vaes[vae_id]


class ModelCache:
    """Keeps up to `capacity` checkpoints loaded on `device`."""

    def __init__(
        self,
        resolver: ModelResolver,
        cache_dir: Path,
        device: torch.device,
        dtype: torch.dtype,
        capacity: int = 2,
    ) -> None:
        self._resolver = resolver
        self._cache_dir = cache_dir
        self._device = device
        self._dtype = dtype
        self._capacity = max(1, capacity)
        self._models: OrderedDict[str, CachedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str) -> CachedModel:
        """The cached model, loading it (and evicting the least recently used) when needed."""
        with self._lock:
            if model_id in self._models:
                self._models.move_to_end(model_id)
                return self._models[model_id]
            cached = self._load(model_id)
            self._models[model_id] = cached
            while len(self._models) > self._capacity:
                self._evict(next(iter(self._models)))
            return cached

    def loaded_ids(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def _evict(self, model_id: str) -> None:
        # Not waiting for a job still running on it (that would stall every other load): its
        # modules are freed when that job drops its last reference.
        self._models.pop(model_id)
        if self._device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _load(self, model_id: str) -> CachedModel:
        import torch

        from diffusiond.engine.attention import fast_attention

        record = self._resolver.resolve(model_id, ModelKind.CHECKPOINT)
        loaded = load_checkpoint(record, self._cache_dir, dtype=self._dtype)
        pipe = loaded.pipe
        pipe.to(self._device)
        pipe.unet.to(memory_format=torch.channels_last)
        fast_vae(pipe.vae)
        # Attention runs through torch's scaled_dot_product_attention (diffusers' default processor,
        # AttnProcessor2_0), minus the signature lookup diffusers does on every call.
        fast_attention(pipe.unet, pipe.vae)
        pipe.set_progress_bar_config(disable=True)
        return CachedModel(
            model_id=model_id,
            loaded=loaded,
            scheduler_config=dict(pipe.scheduler.config),
            scheduler_class=type(pipe.scheduler),
            device=self._device,
        )


def fast_vae(vae: Any) -> Any:
    """The VAE in channels-last layout, decoding a batch one image at a time; outputs stay equal.

    Measured on the 2-core CPU with the bundled model at 256x256 (64x64 latents): a batch of 4
    decoded at once took 253 ms per image against 170 ms one by one, since the batched decode is
    memory-bound; channels-last took the UNet and VAE a few per cent further (and more on GPUs).
    """
    import torch

    vae.to(memory_format=torch.channels_last)
    vae.enable_slicing()
    return vae
