"""Text to image: denoise pure noise under a prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import Diffusion
from diffusiond.engine.progress import StepCallback, cpu_generators
from diffusiond.engine.prompts import Conditioning

if TYPE_CHECKING:
    from PIL import Image


def check_inputs(diffusion: Diffusion, seeds: Sequence[int]) -> None:
    if diffusion.width % 8 or diffusion.height % 8 or diffusion.width < 8 or diffusion.height < 8:
        raise InvalidParams("width and height must be positive multiples of 8", code="invalid_height_or_width")
    if diffusion.steps < 1:
        raise InvalidParams("steps must be at least 1", field="steps")
    if not seeds:
        raise InvalidParams("at least one image is required", field="count")
    if not 0.0 <= diffusion.subseed_strength <= 1.0:
        raise InvalidParams("subseed_strength must be between 0 and 1", field="subseed_strength")


def run(
    pipe: Any,
    diffusion: Diffusion,
    conditioning: Conditioning,
    seeds: Sequence[int],
    callback: StepCallback,
) -> list[Image.Image]:
    """Generate one image per seed with a txt2img pipeline (its scheduler already set)."""
    # 1. Check inputs
    check_inputs(diffusion, seeds)
    # 2. Noise: image i draws its initial latents from its own seed. With variation seeds (A1111's
    #    subseed) they are slerped towards the noise of subseed + i. With eta_noise_seed_delta
    #    (A1111's ENSD) the noise that stochastic samplers add at each step comes from seed + delta,
    #    while the initial latents still come from the seed.
    latents = None
    if diffusion.subseed_strength or diffusion.eta_noise_seed_delta:
        latents = initial_latents(pipe, diffusion, seeds)
    if diffusion.subseed_strength:
        subseeds = [diffusion.subseed + i for i in range(len(seeds))]
        latents = slerp(diffusion.subseed_strength, latents, initial_latents(pipe, diffusion, subseeds))
    if diffusion.eta_noise_seed_delta:
        seeds = [seed + diffusion.eta_noise_seed_delta for seed in seeds]
    # 3. Denoise and decode; the callback reports progress and raises Canceled
    output = pipe(
        **conditioning.as_kwargs(),
        width=diffusion.width,
        height=diffusion.height,
        num_inference_steps=diffusion.steps,
        guidance_scale=diffusion.cfg_scale,
        num_images_per_prompt=len(seeds),
        generator=cpu_generators(seeds),
        latents=latents,
        callback_on_step_end=callback,
        output_type="pil",
    )
    images: list[Image.Image] = list(output.images)
    return images


def initial_latents(pipe: Any, diffusion: Diffusion, seeds: Sequence[int]) -> Any:
    """The latents the pipeline would draw itself: one (1, C, H/f, W/f) draw per CPU generator."""
    import torch

    factor = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, diffusion.height // factor, diffusion.width // factor)
    draws = [torch.randn(shape, generator=g, dtype=pipe.unet.dtype) for g in cpu_generators(seeds)]
    return torch.cat(draws).to(pipe.unet.device)


def slerp(t: float, low: Any, high: Any) -> Any:
    """Spherical interpolation from `low` (t=0) to `high` (t=1), per image of a (N, ...) batch.

    Noise interpolated this way keeps the norm of Gaussian noise, which a straight blend would shrink.
    Nearly parallel rows fall back to the straight blend (the sine ratio is unstable there).
    """
    import torch

    flat_low, flat_high = low.reshape(low.shape[0], -1), high.reshape(high.shape[0], -1)
    dot = (flat_low / flat_low.norm(dim=1, keepdim=True) * flat_high / flat_high.norm(dim=1, keepdim=True)).sum(1)
    omega = torch.acos(dot.clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    straight = sin.abs() < 1e-4
    safe = torch.where(straight, torch.ones_like(sin), sin)
    w_low = torch.where(straight, torch.full_like(sin, 1.0 - t), torch.sin((1.0 - t) * omega) / safe)
    w_high = torch.where(straight, torch.full_like(sin, t), torch.sin(t * omega) / safe)
    shape = (-1,) + (1,) * (low.dim() - 1)
    return w_low.view(shape) * low + w_high.view(shape) * high
