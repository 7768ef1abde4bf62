"""Detectors for the adetailer stage: find regions of an image to repaint.

Pluggable: a detector is anything with `detect(image) -> list[Detection]`. Shipped:
- `shapes` (alias `shapes_bbox`): offline, no weights. Connected components of pixels that differ
  from the background colour (the median of the border), for the bundled shapes model's pictures
  (flat-coloured shapes on a flat background). Each component is one region; its confidence is its
  mean colour distance from the background over the largest possible distance (0..1).
- user weights: a `.safetensors` file registered as a `detector` model
  (`diffusiond models add det.safetensors my-det --kind detector`). It holds a small fully
  convolutional heat-map detector, see `ConvHeatmapDetector`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from diffusiond.domain.errors import InvalidParams

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

BUILTIN_DETECTORS = frozenset({"shapes", "shapes_bbox"})
MIN_AREA_FRACTION = 0.001  # components smaller than this share of the image are noise
MAX_DISTANCE = 441.673  # the largest RGB distance, sqrt(3) * 255


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # left, top, right, bottom (exclusive)
    score: float
    mask: Image.Image  # mode "L", image-sized, 255 inside the region


class Detector(Protocol):
    """Finds regions; returns them best first."""

    def detect(self, image: Image.Image) -> list[Detection]: ...


def components(binary: np.ndarray[Any, Any], min_area: int) -> list[np.ndarray[Any, Any]]:
    """4-connected components of a boolean array with at least `min_area` pixels, as boolean
    masks, largest first. One pass over the pixels: noise specks cost no image-sized arrays."""
    import numpy as np

    h, w = binary.shape
    seen = np.zeros((h, w), dtype=bool)
    found: list[np.ndarray[Any, Any]] = []
    ys, xs = np.nonzero(binary)
    for y0, x0 in zip(ys.tolist(), xs.tolist(), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue = deque([(y0, x0)])
        pixels: list[tuple[int, int]] = []
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and binary[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(pixels) >= min_area:
            mask = np.zeros((h, w), dtype=bool)
            rows, cols = zip(*pixels, strict=True)
            mask[list(rows), list(cols)] = True
            found.append(mask)
    return sorted(found, key=lambda m: -int(m.sum()))


def detection_of(mask: np.ndarray[Any, Any], score: float) -> Detection:
    import numpy as np
    from PIL import Image as PILImage

    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Detection(box=box, score=score, mask=PILImage.fromarray(mask.astype(np.uint8) * 255, "L"))


class ShapesDetector:
    """Regions that differ from the background colour (see the module docstring)."""

    def __init__(self, threshold: float = 48.0) -> None:
        self.threshold = threshold  # colour distance (0..441) that counts as "not background"

    def detect(self, image: Image.Image) -> list[Detection]:
        import numpy as np

        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        background = np.median(border, axis=0)
        distance = np.sqrt(((rgb - background) ** 2).sum(axis=-1))
        min_area = max(4, int(MIN_AREA_FRACTION * distance.size))
        out = []
        for mask in components(distance > self.threshold, min_area):
            score = float(min(distance[mask].mean() / MAX_DISTANCE, 1.0))
            out.append(detection_of(mask, score))
        return sorted(out, key=lambda d: -d.score)


class ConvHeatmapDetector:
    """A user's small convolutional detector, from a `.safetensors` file.

    File format: tensors `layers.{i}.weight` ([out, in, k, k]) and `layers.{i}.bias` ([out]) for
    i = 0..n-1, applied in order with `padding = k // 2` and ReLU between layers; the first layer
    takes RGB in [0, 1], the last has one output channel, passed through a sigmoid: a per-pixel
    probability of "inside an object". Optional metadata: `threshold` (default 0.5) and
    `input_size` (the side images are resized to first; default: no resize). Regions are the
    connected components of pixels above the threshold; a region's score is its mean probability.
    """

    def __init__(self, layers: Sequence[tuple[Any, Any]], threshold: float = 0.5,
                 input_size: int | None = None) -> None:
        self.layers = list(layers)
        self.threshold = threshold
        self.input_size = input_size

    @classmethod
    def load(cls, path: Path) -> ConvHeatmapDetector:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            layers = []
            i = 0
            while f"layers.{i}.weight" in keys:
                weight, bias = f.get_tensor(f"layers.{i}.weight"), f.get_tensor(f"layers.{i}.bias")
                if weight.ndim != 4 or bias.shape != (weight.shape[0],):
                    raise InvalidParams(f"{path.name}: layers.{i} is not a conv layer", code="invalid_model_file")
                layers.append((weight.float(), bias.float()))
                i += 1
        if not layers or layers[0][0].shape[1] != 3 or layers[-1][0].shape[0] != 1:
            raise InvalidParams(f"{path.name}: not a heat-map detector (need layers.0 with 3 input channels "
                                "and a last layer with 1 output channel)", code="invalid_model_file")
        if len(keys) != 2 * len(layers):
            raise InvalidParams(f"{path.name}: unexpected tensors besides layers.*", code="invalid_model_file")
        size = int(meta["input_size"]) if "input_size" in meta else None
        return cls(layers, float(meta.get("threshold", 0.5)), size)

    def heatmap(self, image: Image.Image) -> np.ndarray[Any, Any]:
        import numpy as np
        import torch
        import torch.nn.functional as F
        from PIL import Image as PILImage

        work = image.convert("RGB")
        if self.input_size:
            work = work.resize((self.input_size, self.input_size), PILImage.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(work, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            for n, (weight, bias) in enumerate(self.layers):
                x = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)
                x = torch.relu(x) if n < len(self.layers) - 1 else torch.sigmoid(x)
        prob = x[0, 0].numpy()
        if self.input_size:
            resized = PILImage.fromarray((prob * 255).astype(np.uint8), "L").resize(image.size)
            prob = np.asarray(resized, dtype=np.float32) / 255.0
        return prob

    def detect(self, image: Image.Image) -> list[Detection]:
        prob = self.heatmap(image)
        min_area = max(4, int(MIN_AREA_FRACTION * prob.size))
        out = [detection_of(m, float(prob[m].mean())) for m in components(prob > self.threshold, min_area)]
        return sorted(out, key=lambda d: -d.score)


class ModelLookup(Protocol):
    def resolve(self, model_id: str, kind: Any) -> Any: ...


def load_detector(name: str, resolver: ModelLookup | None) -> Detector:
    """A built-in detector by name, or a registered `detector` model's weights."""
    if name in BUILTIN_DETECTORS:
        return ShapesDetector()
    from diffusiond.domain.models import ModelKind

    if resolver is None:
        raise InvalidParams(f"detector {name!r} is not installed", code="invalid_model")
    record = resolver.resolve(name, ModelKind.DETECTOR)
    return ConvHeatmapDetector.load(Path(record.path))
