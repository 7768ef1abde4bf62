"""Credit prices. Amounts are integer millicredits (1 credit = 1000) so sums are exact.

The rule (documented in the README, "Credits"):
- a diffusion pass costs 200 millicredits per image for 512x512 at 30 steps, scaled linearly by
  pixel count and step count, at least 10 millicredits per image;
- an upscale costs 200 millicredits per output image of 2048x2048, scaled by output pixels, at
  least 10; its optional hires pass is priced as a diffusion pass at the output size;
- an adetailer pass costs a diffusion pass at its padded crop size (512x512 assumed) per region kind;
- a diffusion pass with composed LoRAs runs one UNet pass per LoRA plus one (`params.unet_passes`)
  and costs that many diffusion passes;
- every diffusion pass encodes its prompts: the first FREE_PROMPTS (positive and negative together)
  are in the price above, each further one adds PROMPT_SURCHARGE per image;
- a training step costs 2 millicredits per image of the batch at 512x512, scaled by pixel count;
  1.5x when the text encoder trains too, 3x for a full fine-tune; at least 100 per training;
- a merge costs 500 millicredits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffusiond.domain.merge import MergeSpec
from diffusiond.domain.params import (
    Adetailer,
    Diffusion,
    GenerateSpec,
    Img2Img,
    Inpaint,
    Txt2Img,
    Upscale,
    unet_passes,
)
from diffusiond.domain.training import TrainMethod, TrainSpec

if TYPE_CHECKING:
    from diffusiond.domain.spec_codec import WorkSpec

MILLI = 1000
BASE_PIXELS = 512 * 512
BASE_STEPS = 30
UPSCALE_BASE_PIXELS = 2048 * 2048
MIN_PER_IMAGE = 10
# A prompt costs one text-encoder pass per 75 tokens: for SD 1.5 about a fortieth of a 512x512 UNet
# step, most of a step on the tiny models. One millicredit per prompt covers both; the first four are
# free, so ordinary requests (a prompt, a negative prompt, a style) keep their price.
FREE_PROMPTS = 4
PROMPT_SURCHARGE = 1
TRAIN_STEP_IMAGE = 2  # one image of a batch, one step, at 512x512
MIN_PER_TRAINING = 100
MERGE_PRICE = 500


def price(spec: WorkSpec) -> int:
    """Millicredits a job of any kind costs; reserved at submit, captured on success."""
    if isinstance(spec, GenerateSpec):
        return job_cost(spec)
    if isinstance(spec, TrainSpec):
        return training_cost(spec)
    if isinstance(spec, MergeSpec):
        return MERGE_PRICE
    raise TypeError(f"no price rule for {type(spec).__name__}")


def training_cost(spec: TrainSpec) -> int:
    s = spec.settings
    factor = 3.0 if spec.method is TrainMethod.FULL else 1.5 if s.train_text_encoder else 1.0
    image_steps = s.steps * s.batch_size * s.resolution**2 / BASE_PIXELS
    return max(MIN_PER_TRAINING, round(TRAIN_STEP_IMAGE * image_steps * factor))


def diffusion_cost(d: Diffusion, width: int | None = None, height: int | None = None,
                   strength: float = 1.0) -> int:
    pixels = (width or d.width) * (height or d.height)
    steps = max(1, round(d.steps * min(max(strength, 0.0), 1.0)))
    one_pass = max(MIN_PER_IMAGE, round(200 * pixels / BASE_PIXELS * steps / BASE_STEPS))
    return one_pass * unet_passes(d) + prompt_surcharge(d)


def prompt_surcharge(d: Diffusion) -> int:
    """Millicredits per image for the prompts of a pass beyond the first FREE_PROMPTS."""
    return max(0, len(d.prompts) + len(d.negative_prompts) - FREE_PROMPTS) * PROMPT_SURCHARGE


def stage_cost(stage: object, size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """Cost of one image through `stage`, and the image size after it."""
    if isinstance(stage, Txt2Img):
        d = stage.diffusion
        return diffusion_cost(d), (d.width, d.height)
    if isinstance(stage, Img2Img | Inpaint):
        size = (stage.init.size if stage.init else None) or size
        d = stage.diffusion
        return diffusion_cost(d, *size, strength=stage.strength), size
    if isinstance(stage, Upscale):
        size = (stage.init.size if stage.init else None) or size
        out = upscale_size(size, stage)
        cost = max(MIN_PER_IMAGE, round(200 * out[0] * out[1] / UPSCALE_BASE_PIXELS))
        if stage.hires is not None:
            cost += diffusion_cost(stage.hires, *out, strength=stage.hires_strength)
        return cost, out
    if isinstance(stage, Adetailer):
        return sum(diffusion_cost(r.diffusion, 512, 512, r.strength) for r in stage.regions), size
    raise TypeError(f"unknown stage {type(stage).__name__}")


def upscale_size(size: tuple[int, int], stage: Upscale) -> tuple[int, int]:
    """Output size of an upscale: explicit width/height (aspect kept when one is given) or scale."""
    w, h = size
    if stage.width and stage.height:
        return stage.width, stage.height
    if stage.width:
        return stage.width, max(1, round(h * stage.width / w))
    if stage.height:
        return max(1, round(w * stage.height / h)), stage.height
    scale = stage.scale or 2.0
    return max(1, round(w * scale)), max(1, round(h * scale))


def job_cost(spec: GenerateSpec, init_size: tuple[int, int] | None = None) -> int:
    """Millicredits for a generation: every stage for every image.

    A stage that starts from an uploaded image is priced at that image's size (known from its
    reference); `init_size` overrides the job's starting size where the reference has none.
    """
    size = init_size or (spec.init.size if spec.init else None) or (512, 512)
    per_image = 0
    for stage in spec.stages:
        cost, size = stage_cost(stage, size)
        per_image += cost
    return per_image * spec.count


def to_credits(millicredits: int) -> float:
    return millicredits / MILLI


def from_credits(credits: float) -> int:
    return round(credits * MILLI)
