"""Training specs: what a `train` job learns from, and the presets that map user knobs to settings.

A training job teaches a base checkpoint a concept from a handful of captioned images. The result is
a LoRA (the default) or a full UNet fine-tune, registered as a model of the submitting tenant with
its trigger word. The user-level knobs of the custom-model API (strength 0-10, speed `fast` or
`high_quality`) map to concrete settings through `preset()`, the one documented table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import ImageRef

MIN_TRAINING_IMAGES = 4
MAX_TRAINING_IMAGES = 200
MAX_TRAINING_STEPS = 20_000
MAX_CAPTION_CHARS = 1000


class TrainMethod(str, Enum):
    LORA = "lora"  # low-rank adapters on the UNet's attention layers (and optionally the text encoder)
    FULL = "full"  # every UNet weight: a new checkpoint


class TrainingSpeed(str, Enum):
    FAST = "fast"
    HIGH_QUALITY = "high_quality"


class MixedPrecision(str, Enum):
    AUTO = "auto"  # fp32 on the CPU; bf16 on CUDA devices that have it, else fp16
    NO = "no"
    FP16 = "fp16"
    BF16 = "bf16"


@dataclass(frozen=True)
class TrainingImage:
    """One picture of the concept and what it shows (the trigger word is added to the caption)."""

    image: ImageRef
    caption: str = ""


@dataclass(frozen=True)
class TrainSettings:
    """Every knob of one training run."""

    steps: int
    learning_rate: float
    rank: int = 8
    alpha: float = 8.0  # LoRA scale is alpha / rank
    batch_size: int = 4
    resolution: int = 512  # square side; images are resized and centre-cropped unless bucketed
    aspect_buckets: bool = False
    train_text_encoder: bool = False
    text_encoder_lr: float | None = None  # None: the UNet's rate
    gradient_checkpointing: bool = False
    mixed_precision: MixedPrecision = MixedPrecision.AUTO
    warmup_steps: int = 0
    checkpoint_every: int = 50  # a resumable checkpoint every N steps (0: none)


@dataclass(frozen=True)
class TrainSpec:
    """Train `method` on `base_model` from `images`; register the result as `output_model`.

    `seed` 0 means random; the service replaces it with a concrete seed before the job is stored,
    so a retried attempt learns exactly what the first would have.
    """

    base_model: str
    images: tuple[TrainingImage, ...]
    trigger_word: str
    settings: TrainSettings
    method: TrainMethod = TrainMethod.LORA
    output_model: str = ""  # the model id registered on success; "" registers nothing
    output_name: str = ""  # a display name for it
    seed: int = 0


def caption_with_trigger(caption: str, trigger: str) -> str:
    """The caption a training step sees: the trigger word first, then what the picture shows."""
    caption = caption.strip()
    if not trigger or trigger in caption.split():
        return caption or trigger
    return f"{trigger} {caption}".strip()


# The preset table (README, "Training presets"). Strength 0-10 scales the learning rate and the
# number of steps: stronger means closer to the pictures. Tuned on the bundled `shapes` model at
# 64x64 on a 2-core CPU (bench/training.py): `fast` at strength 5 is 300 steps of batch 8, about
# 75 s of training, and teaches a new concept (a shape filling the frame) in 20 of 20 seeds while
# prompts without the trigger word keep the base model's colours. `high_quality` takes three times
# the steps at half the rate, with twice the rank, and trains the text encoder too.
# speed -> (base steps, extra steps per strength point, learning rate at strength 5, rank, text encoder)
PRESETS: dict[TrainingSpeed, tuple[int, int, float, int, bool]] = {
    TrainingSpeed.FAST: (150, 30, 1e-3, 8, False),
    TrainingSpeed.HIGH_QUALITY: (450, 90, 5e-4, 16, True),
}
PRESET_BATCH_SIZE = 8  # pictures per step, both speeds


def preset(strength: int, speed: TrainingSpeed, resolution: int) -> TrainSettings:
    """Concrete settings for a strength (0-10) and a speed, at the base model's native resolution.

    | speed          | steps              | learning rate                | rank | text encoder | batch |
    |----------------|--------------------|------------------------------|------|--------------|-------|
    | `fast`         | 150 + 30 x strength | 1e-3 x (0.5 + strength / 10) | 8    | no           | 8     |
    | `high_quality` | 450 + 90 x strength | 5e-4 x (0.5 + strength / 10) | 16   | yes          | 8     |

    alpha = rank (LoRA scale 1); no warm-up; a checkpoint every 50 steps.
    """
    if not 0 <= strength <= 10:
        raise InvalidParams("trainingStrength must be between 0 and 10", code="invalid_training_strength",
                            field="trainingStrength")
    base_steps, per_point, rate, rank, text_encoder = PRESETS[speed]
    factor = 0.5 + strength / 10  # 0.5x the rate at strength 0, 1.5x at 10
    return TrainSettings(
        steps=base_steps + per_point * strength, learning_rate=rate * factor, rank=rank, alpha=float(rank),
        batch_size=PRESET_BATCH_SIZE, resolution=resolution, train_text_encoder=text_encoder,
    )


def check_train_spec(spec: TrainSpec) -> None:
    """Counts and ranges every dialect's training request must respect."""
    s = spec.settings
    if not MIN_TRAINING_IMAGES <= len(spec.images) <= MAX_TRAINING_IMAGES:
        raise InvalidParams(f"a training needs between {MIN_TRAINING_IMAGES} and {MAX_TRAINING_IMAGES} images, "
                            f"got {len(spec.images)}", code="invalid_training_data", field="images")
    if any(len(i.caption) > MAX_CAPTION_CHARS for i in spec.images):
        raise InvalidParams(f"captions are limited to {MAX_CAPTION_CHARS} characters",
                            code="invalid_training_data", field="caption")
    if not 1 <= s.steps <= MAX_TRAINING_STEPS:
        raise InvalidParams(f"steps must be between 1 and {MAX_TRAINING_STEPS}", code="invalid_params",
                            field="steps")
    if not 1 <= s.rank <= 256 or not 0 < s.alpha <= 1024:
        raise InvalidParams("rank must be 1-256 and alpha in (0, 1024]", code="invalid_params", field="rank")
    if not 0 < s.learning_rate <= 1.0 or not 1 <= s.batch_size <= 64:
        raise InvalidParams("learning rate must be in (0, 1] and batch size 1-64", code="invalid_params",
                            field="learning_rate")
    if not 32 <= s.resolution <= 2048 or s.resolution % 8:
        raise InvalidParams("resolution must be a multiple of 8 from 32 to 2048", code="invalid_params",
                            field="resolution")
