"""Upscaler models: the built-in `lanczos` resize and ESRGAN-family networks loaded with spandrel.

Weights are read without unpickling: `.safetensors` through safetensors, `.pth` only through
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import enum
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelFormat, ModelRecord

if TYPE_CHECKING:
    import torch
    from PIL import Image

LANCZOS = "lanczos"
_PICKLE_SUFFIXES = {".ckpt", ".pt", ".bin"}


def _torchvision_missing(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise RuntimeError(
        "this spandrel architecture needs torchvision, which is not installed (there is no CPU build "
        "of it for this torch); diffusiond only uses torchvision-free architectures such as ESRGAN"
    )


def ensure_spandrel_importable() -> None:
    """Import spandrel, even when torchvision is absent.

    spandrel imports torchvision at package import time for two architectures (LaMa, RestoreFormer)
    that diffusiond never runs. Without torchvision the whole package fails to import, so for the
    duration of that one import a minimal placeholder module stands in, whose functions raise a
    clear error if one of those two architectures is ever used. The placeholder is removed from
    `sys.modules` right after: other libraries (transformers) probe for torchvision and must keep
    seeing that it is not installed. A real torchvision, when installed, is always used.
    """
    if "spandrel" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return
    placeholders = _torchvision_placeholders()
    sys.modules.update(placeholders)
    try:
        import spandrel  # noqa: F401
    finally:
        for name, module in placeholders.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _torchvision_placeholders() -> dict[str, types.ModuleType]:
    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        NEAREST_EXACT = "nearest-exact"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"
        BOX = "box"
        HAMMING = "hamming"
        LANCZOS = "lanczos"

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = InterpolationMode  # type: ignore[attr-defined]
    functional.rotate = _torchvision_missing  # type: ignore[attr-defined]
    functional.normalize = _torchvision_missing  # type: ignore[attr-defined]
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional  # type: ignore[attr-defined]
    root = types.ModuleType("torchvision")
    root.transforms = transforms  # type: ignore[attr-defined]
    root.__doc__ = "diffusiond placeholder: torchvision is not installed (see engine/upscalers.py)"
    return {"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors from .safetensors or .pth without ever running pickled code."""
    import torch

    if path.suffix in _PICKLE_SUFFIXES:
        raise InvalidParams(f"{path.name}: pickle formats are never loaded; convert it to .safetensors")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler rejects arbitrary objects
        raise InvalidParams(f"{path.name}: not a weights-only torch file ({exc})") from exc
    # Some trainers nest the weights ("params_ema", "params", "state_dict").
    for key in ("params_ema", "params", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise InvalidParams(f"{path.name}: expected a dict of tensors")
    return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


@dataclass
class Upscaler:
    """A loaded upscaler: `scale` is its native factor (None for resize-only upscalers)."""

    name: str
    scale: int | None
    model: Any = None  # spandrel ImageModelDescriptor

    def upscale(self, image: Image.Image, width: int, height: int) -> Image.Image:
        from PIL import Image as PILImage

        if self.model is not None:
            image = self._run_network(image)
        if image.size != (width, height):
            image = image.resize((width, height), PILImage.Resampling.LANCZOS)
        return image

    def _run_network(self, image: Image.Image) -> Image.Image:
        import numpy as np
        import torch
        from PIL import Image as PILImage

        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
        with torch.inference_mode():
            param = next(self.model.model.parameters())
            out = self.model(tensor.to(param.device, param.dtype)).float().clamp(0, 1)
        array = (out[0].permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
        return PILImage.fromarray(array)


def load_upscaler(record: ModelRecord | None, device: torch.device | None = None) -> Upscaler:
    """Load an upscaler record; `None` or a builtin record is the plain lanczos resize."""
    if record is None or record.format == ModelFormat.BUILTIN or record.id == LANCZOS:
        return Upscaler(name=LANCZOS, scale=None)
    ensure_spandrel_importable()
    from spandrel import ImageModelDescriptor, ModelLoader

    state = read_state_dict(Path(record.path))
    try:
        descriptor = ModelLoader().load_from_state_dict(state)
    except Exception as exc:
        raise InvalidParams(f"upscaler {record.id}: unsupported architecture ({exc})") from exc
    if not isinstance(descriptor, ImageModelDescriptor):
        raise InvalidParams(f"upscaler {record.id}: not an image-to-image model")
    descriptor.eval()
    if device is not None:
        descriptor.to(device)
    return Upscaler(name=record.id, scale=int(descriptor.scale), model=descriptor)
