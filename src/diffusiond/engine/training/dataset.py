"""Training pictures as a trainer sees them: captioned with the trigger word, sized, grouped, batched.

- Every caption gets the trigger word (`caption_with_trigger`); a picture without a caption is
  captioned with the trigger word alone.
- Each picture is resized to cover its target size and centre-cropped: the square `resolution`, or
  with aspect buckets the bucket nearest its aspect ratio (about `resolution`**2 pixels, sides a
  multiple of `multiple`). SDXL conditions on the original size and the crop, so both are kept.
- Batches are drawn epoch by epoch, within one bucket, in an order that is a pure function of the
  seed and the step: a resumed training draws exactly what an uninterrupted one would have.

PIL and the standard library only; torch is not imported here.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.training import caption_with_trigger

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_BUCKET_ASPECT = 2.0  # buckets range from 1:2 to 2:1


@dataclass(frozen=True)
class TrainingExample:
    """One picture ready for the VAE: RGB at its bucket's size, with the caption a step sees."""

    image: Image.Image
    caption: str  # with the trigger word
    plain_caption: str  # as given, without it (what prior preservation keeps the base model's answer to)
    original_size: tuple[int, int]  # (height, width) before resizing, as SDXL's time ids take it
    crop_top_left: tuple[int, int]  # (top, left) of the crop, in resized pixels

    @property
    def bucket(self) -> tuple[int, int]:
        return self.image.size


def square_bucket(resolution: int) -> list[tuple[int, int]]:
    return [(resolution, resolution)]


def aspect_buckets(resolution: int, multiple: int) -> list[tuple[int, int]]:
    """(width, height) pairs of at most `resolution`**2 pixels, sides a multiple of `multiple`."""
    buckets = set()
    area = resolution * resolution
    width = multiple
    while width <= resolution * MAX_BUCKET_ASPECT:
        height = min(area // width // multiple * multiple, int(resolution * MAX_BUCKET_ASPECT) // multiple * multiple)
        if height >= multiple and max(width / height, height / width) <= MAX_BUCKET_ASPECT:
            buckets.add((width, height))
        width += multiple
    return sorted(buckets) or square_bucket(resolution)


def nearest_bucket(size: tuple[int, int], buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log space) to the picture's; larger on ties."""
    aspect = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))


def fit(image: Image.Image, target: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Resize to cover `target` (width, height) and centre-crop; returns the crop and its (top, left)."""
    image = image.convert("RGB")
    scale = max(target[0] / image.width, target[1] / image.height)
    resized = (max(target[0], round(image.width * scale)), max(target[1], round(image.height * scale)))
    if resized != image.size:
        image = image.resize(resized, Image.Resampling.LANCZOS)
    left, top = (resized[0] - target[0]) // 2, (resized[1] - target[1]) // 2
    return image.crop((left, top, left + target[0], top + target[1])), (top, left)


def build_examples(
    pictures: Sequence[tuple[Image.Image, str]], trigger: str, resolution: int, *,
    buckets: bool = False, multiple: int = 64,
) -> list[TrainingExample]:
    """Pictures with their captions as training examples (see the module docstring)."""
    if not pictures:
        raise InvalidParams("a training needs pictures", code="invalid_training_data", field="images")
    sizes = aspect_buckets(resolution, multiple) if buckets else square_bucket(resolution)
    examples = []
    for image, caption in pictures:
        target = nearest_bucket(image.size, sizes)
        fitted, crop = fit(image, target)
        examples.append(TrainingExample(fitted, caption_with_trigger(caption, trigger),
                                        " ".join(w for w in caption.split() if w != trigger),
                                        (image.height, image.width), crop))
    return examples


def fingerprint(examples: Sequence[TrainingExample]) -> str:
    """A digest of the pixels and captions: a checkpoint is only resumed on the same data."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(f"{example.caption}\0{example.plain_caption}\0{example.image.size}\0".encode())
        digest.update(example.image.tobytes())
    return digest.hexdigest()


@dataclass
class BatchPlan:
    """Which examples each step trains on: shuffled epochs, every batch from one bucket.

    Within an epoch each bucket is shuffled and cut into batches of `batch_size` (a bucket's last,
    short batch is dropped unless the bucket is smaller than one batch), and the batches are shuffled.
    `batch(step)` depends only on the seed and the step.
    """

    buckets: list[list[int]]  # example indices per bucket
    batch_size: int
    seed: int
    _epoch: int = -1
    _batches: list[list[int]] = field(default_factory=list)

    @classmethod
    def of(cls, examples: Sequence[TrainingExample], batch_size: int, seed: int) -> BatchPlan:
        groups: dict[tuple[int, int], list[int]] = {}
        for index, example in enumerate(examples):
            groups.setdefault(example.bucket, []).append(index)
        return cls([groups[key] for key in sorted(groups)], batch_size, seed)

    @property
    def batches_per_epoch(self) -> int:
        return sum(max(1, len(b) // self.batch_size) for b in self.buckets)

    def batch(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._epoch_batches(epoch)
        return self._batches[index]

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"batches-{self.seed}-{epoch}")
        batches: list[list[int]] = []
        for bucket in self.buckets:
            order = rng.sample(bucket, len(bucket))
            size = min(self.batch_size, len(order))
            batches += [order[i:i + size] for i in range(0, len(order) - size + 1, size)]
        rng.shuffle(batches)
        return batches


def folder_pictures(folder: Path) -> list[tuple[Path, str]]:
    """The pictures of a folder (sorted by name) with their captions: `name.txt` beside `name.png`."""
    if not folder.is_dir():
        raise InvalidParams(f"{folder} is not a folder", code="invalid_training_data", field="images")
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            caption_file = path.with_suffix(".txt")
            caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else ""
            found.append((path, caption))
    return found
