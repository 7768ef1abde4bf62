"""Which generation jobs may share a forward pass: the one rule the queue and the engine both use."""

from __future__ import annotations

from diffusiond.domain.params import Diffusion, GenerateSpec, Txt2Img


def batch_diffusion(spec: GenerateSpec) -> Diffusion | None:
    """The diffusion settings of a plain txt2img job without adapters; None when it cannot batch."""
    if len(spec.stages) != 1 or not isinstance(spec.stages[0], Txt2Img):
        return None
    d = spec.stages[0].diffusion
    return None if d.loras or d.embeddings or d.hypernetworks or d.subseed_strength or d.tiling else d


def batch_key(spec: GenerateSpec) -> str:
    """Jobs with equal non-empty keys may share a batch: same model, size, steps and sampler."""
    d = batch_diffusion(spec)
    if d is None:
        return ""
    return f"txt2img|{d.model}|{d.width}x{d.height}|{d.steps}|{d.sampler}|{d.schedule}|{d.clip_skip}|{d.vae}"
