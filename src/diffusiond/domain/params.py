"""Generation parameters shared by every dialect.

Dialects translate their wire formats into these frozen dataclasses; the engine reads only these.
Sampler names use the Stability v1 vocabulary as the canonical one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Sampler(str, Enum):
    DDIM = "DDIM"
    DDPM = "DDPM"
    K_DPMPP_2M = "K_DPMPP_2M"
    K_DPMPP_2S_ANCESTRAL = "K_DPMPP_2S_ANCESTRAL"
    K_DPMPP_SDE = "K_DPMPP_SDE"
    K_DPM_2 = "K_DPM_2"
    K_DPM_2_ANCESTRAL = "K_DPM_2_ANCESTRAL"
    K_EULER = "K_EULER"
    K_EULER_ANCESTRAL = "K_EULER_ANCESTRAL"
    K_HEUN = "K_HEUN"
    K_LMS = "K_LMS"
    UNIPC = "UNIPC"
    PNDM = "PNDM"


class Schedule(str, Enum):
    """Noise schedule (sigma spacing) applied on top of a sampler."""

    DEFAULT = "default"
    KARRAS = "karras"
    EXPONENTIAL = "exponential"


class ImageFormat(str, Enum):
    """How output images are stored and served."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"


class MaskSource(str, Enum):
    """Where an inpainting mask comes from (Stability v1 vocabulary)."""

    MASK_IMAGE_WHITE = "MASK_IMAGE_WHITE"  # white pixels are repainted
    MASK_IMAGE_BLACK = "MASK_IMAGE_BLACK"  # black pixels are repainted
    INIT_IMAGE_ALPHA = "INIT_IMAGE_ALPHA"  # transparent pixels of the init image are repainted


class InpaintFill(str, Enum):
    """What goes under the mask before denoising (A1111 'inpainting fill')."""

    ORIGINAL = "original"
    FILL = "fill"
    LATENT_NOISE = "latent_noise"
    LATENT_NOTHING = "latent_nothing"


class LoraMix(str, Enum):
    """How a job's LoRAs combine when it names more than one.

    MERGED: their weight changes add up on one model and the whole prompt conditions one pass
    (A1111, ComfyUI and diffusers' `set_adapters`). COMPOSED: each LoRA denoises on its own, on the
    prompt without the other LoRAs' trigger words, and each one's difference to the base model is
    added to the base model's prediction (`engine/lora_mix.py`): LoRAs trained apart, each on its
    trigger word alone, keep what they learnt when mixed. It costs one UNet pass per LoRA, plus one.
    """

    MERGED = "merged"
    COMPOSED = "composed"


@dataclass(frozen=True)
class WeightedPrompt:
    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class LoraRef:
    model_id: str
    weight: float = 1.0


@dataclass(frozen=True)
class EmbeddingRef:
    model_id: str
    token: str | None = None  # the word that triggers it; defaults to the model id


@dataclass(frozen=True)
class HypernetworkRef:
    """An A1111 hypernetwork: small networks on the cross-attention context before keys and values."""

    model_id: str
    strength: float = 1.0


@dataclass(frozen=True)
class ImageRef:
    """An input image stored as a blob (an uploaded resource or an earlier artifact).

    Its size, when known, prices the work done on it without reading the blob.
    """

    blob_key: str
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> tuple[int, int] | None:
        return (self.width, self.height) if self.width and self.height else None


@dataclass(frozen=True)
class Diffusion:
    """One denoising run's settings: what every stage that diffuses shares."""

    model: str
    prompts: tuple[WeightedPrompt, ...]
    negative_prompts: tuple[WeightedPrompt, ...] = ()
    width: int = 512
    height: int = 512
    steps: int = 30
    cfg_scale: float = 7.0
    sampler: Sampler | None = None  # None: the engine picks the model's default
    schedule: Schedule = Schedule.DEFAULT
    clip_skip: int = 1
    eta_noise_seed_delta: int = 0
    loras: tuple[LoraRef, ...] = ()
    lora_mix: LoraMix = LoraMix.MERGED
    embeddings: tuple[EmbeddingRef, ...] = ()
    hypernetworks: tuple[HypernetworkRef, ...] = ()
    vae: str | None = None
    style_preset: str | None = None
    # A1111's variation seeds: the initial noise is the seed's noise slerped towards the subseed's
    # by `subseed_strength` (0 = the seed alone). Image i of a job uses subseed + i.
    subseed: int = 0
    subseed_strength: float = 0.0
    tiling: bool = False  # seamless output: convolutions pad circularly, so the image tiles


def unet_passes(d: Diffusion) -> int:
    """UNet passes per step of `d` (before guidance doubles them): one, or with composed LoRAs one per
    LoRA of non-zero weight plus one, when there are two or more (the same LoRA twice is one)."""
    if d.lora_mix is not LoraMix.COMPOSED:
        return 1
    weights: dict[str, float] = {}
    for ref in d.loras:
        weights[ref.model_id] = weights.get(ref.model_id, 0.0) + ref.weight
    composing = sum(weight != 0 for weight in weights.values())
    return composing + 1 if composing >= 2 else 1


@dataclass(frozen=True)
class Txt2Img:
    diffusion: Diffusion
    kind: str = field(default="txt2img", init=False)


@dataclass(frozen=True)
class Img2Img:
    """Denoise an init image. `strength` 0 keeps it, 1 replaces it.

    Stability's STEP_SCHEDULE mode maps onto strength = 1 - step_schedule_start; the engine also
    honours `step_schedule_end` by stopping the schedule early.
    """

    diffusion: Diffusion
    init: ImageRef | None = None  # None: the previous stage's output
    strength: float = 0.65
    step_schedule_end: float | None = None
    kind: str = field(default="img2img", init=False)


@dataclass(frozen=True)
class Inpaint:
    diffusion: Diffusion
    init: ImageRef | None = None  # None: the previous stage's output
    mask: ImageRef | None = None  # None only with INIT_IMAGE_ALPHA
    mask_source: MaskSource = MaskSource.MASK_IMAGE_WHITE
    strength: float = 1.0
    mask_blur: int = 0
    fill: InpaintFill = InpaintFill.ORIGINAL
    only_masked: bool = False
    only_masked_padding: int = 32
    invert: bool = False
    kind: str = field(default="inpaint", init=False)


@dataclass(frozen=True)
class Upscale:
    """Resize to (width, height) with an upscaler; optionally re-diffuse at the new size (hires fix)."""

    upscaler: str = "lanczos"
    init: ImageRef | None = None  # None: the previous stage's output
    width: int | None = None
    height: int | None = None
    scale: float | None = None
    hires: Diffusion | None = None
    hires_strength: float = 0.35
    kind: str = field(default="upscale", init=False)


@dataclass(frozen=True)
class AdetailerRegion:
    """One detect-and-repaint pass of an adetailer stage."""

    detector: str
    diffusion: Diffusion
    confidence: float = 0.3
    dilation: int = 4
    mask_merge: str = "none"  # none | merge | merge_invert
    strength: float = 0.4
    mask_blur: int = 4
    padding: int = 32
    only_masked: bool = True  # repaint a padded crop around each region at the diffusion size


@dataclass(frozen=True)
class Adetailer:
    regions: tuple[AdetailerRegion, ...]
    kind: str = field(default="adetailer", init=False)


Stage = Txt2Img | Img2Img | Inpaint | Upscale | Adetailer


@dataclass(frozen=True)
class GenerateSpec:
    """What a generation job does: `count` images from `seed`, each run through `stages` in order.

    `seed` 0 means random; the service replaces it with a concrete seed before the job is stored,
    so a retried attempt reproduces the same images. Image i uses seed + i.
    """

    stages: tuple[Stage, ...]
    count: int = 1
    seed: int = 0
    init: ImageRef | None = None  # inputInitialize.imageResourceId
    output_format: ImageFormat = ImageFormat.PNG
    # Store a decoded preview of the running image at most this often (A1111's live previews); 0: never.
    preview_seconds: float = 0.0

    def image_seeds(self) -> list[int]:
        """The seed of each image: seed + i; with variation seeds (A1111) every image shares the seed
        and its subseed steps instead."""
        first = self.stages[0] if self.stages else None
        varied = isinstance(first, Txt2Img) and first.diffusion.subseed_strength > 0
        return [self.seed if varied else self.seed + i for i in range(self.count)]
