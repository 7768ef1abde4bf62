"""Merging checkpoints tensor by tensor: weighted sum, add difference, one family, loadable results."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.merge import MergeMethod, MergeSpec
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import GenerateSpec, ImageRef, Txt2Img
from diffusiond.engine.context import Canceled
from diffusiond.engine.merge import MergeHandler
from diffusiond.engine.runner import Engine
from diffusiond.engine.single_file import EMBEDDED_CONFIG
from diffusiond.testing.tiny_models import save_tiny_single_file
from tests.engine.conftest import Resolver, TinyModels, diffusion

UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"


class MergeContext:
    """Records what the handler saves; cancels when asked to."""

    def __init__(self, keep: Path | None = None, cancel: bool = False) -> None:
        self.keep = keep
        self.cancel = cancel
        self.saved: list[tuple[Path, str]] = []
        self.progress: list[float] = []

    def load_image(self, ref: ImageRef) -> Any:
        raise AssertionError("a merge reads no images")

    def report_progress(self, image_index: int, fraction: float) -> None:
        self.progress.append(fraction)

    def report_metrics(self, metrics: Mapping[str, float]) -> None:
        pass

    def is_canceled(self) -> bool:
        return self.cancel

    def save_model_file(self, path: Path, *, name: str, format: str) -> None:
        assert self.keep is not None
        self.keep.mkdir(parents=True, exist_ok=True)
        kept = self.keep / f"kept-{len(self.saved)}.safetensors"  # the handler's folder goes when it ends
        shutil.move(path, kept)
        self.saved.append((kept, name))


@pytest.fixture(scope="module")
def models(tiny: TinyModels, resolver: Resolver, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model as a folder and as a file, and two perturbed copies of the file."""
    root = tmp_path_factory.mktemp("merge-models")
    base = save_tiny_single_file(tiny.sd, root / "a.safetensors")
    paths = {"m-folder": tiny.sd, "m-a": base}
    for name, scale in (("m-b", 0.1), ("m-c", 0.05)):
        tensors = load_file(str(base))
        generator = torch.Generator().manual_seed(len(name) + int(scale * 100))
        tensors = {k: v + torch.randn(v.shape, generator=generator) * scale if v.is_floating_point() else v
                   for k, v in tensors.items()}
        with safe_open(str(base), framework="pt") as handle:
            metadata = handle.metadata()
        save_file(tensors, str(root / f"{name}.safetensors"), metadata=metadata)
        paths[name] = root / f"{name}.safetensors"
    for model_id, path in paths.items():
        fmt = ModelFormat.DIFFUSERS if path.is_dir() else ModelFormat.SAFETENSORS
        resolver.add(ModelRecord(model_id, ModelKind.CHECKPOINT, fmt, str(path), family="tiny"))
    resolver.add(ModelRecord("m-other", ModelKind.CHECKPOINT, ModelFormat.SAFETENSORS, str(paths["m-b"]),
                             family="sd15"))
    return paths


def merge(resolver: Resolver, tmp_path: Path, **kwargs: Any) -> Path:
    ctx = MergeContext(tmp_path / "kept")
    spec = MergeSpec(**{"primary": "m-a", "secondary": "m-b", "output_model": "merged", **kwargs})
    MergeHandler(resolver, tmp_path / "work").run(spec, ctx)
    (path, name), = ctx.saved
    assert name == "merged.safetensors" and ctx.progress[-1] == 1.0
    return path


def test_weighted_sum(resolver: Resolver, models: dict[str, Path], tmp_path: Path) -> None:
    a, b = load_file(str(models["m-a"])), load_file(str(models["m-b"]))
    out = load_file(str(merge(resolver, tmp_path, multiplier=0.25)))
    assert out.keys() == a.keys()
    assert torch.allclose(out[UNET_KEY], 0.75 * a[UNET_KEY] + 0.25 * b[UNET_KEY], atol=1e-6)
    assert not torch.allclose(out[UNET_KEY], a[UNET_KEY])
    ends = [load_file(str(merge(resolver, tmp_path, multiplier=m)))[UNET_KEY] for m in (0.0, 1.0)]
    assert torch.equal(ends[0], a[UNET_KEY]) and torch.allclose(ends[1], b[UNET_KEY])


def test_add_difference(resolver: Resolver, models: dict[str, Path], tmp_path: Path) -> None:
    a, b, c = (load_file(str(models[m])) for m in ("m-a", "m-b", "m-c"))
    out = load_file(str(merge(resolver, tmp_path, tertiary="m-c", multiplier=0.5,
                              method=MergeMethod.ADD_DIFFERENCE)))
    assert torch.allclose(out[UNET_KEY], a[UNET_KEY] + 0.5 * (b[UNET_KEY] - c[UNET_KEY]), atol=1e-6)


def test_a_folder_merges_with_a_file_and_the_result_loads(resolver: Resolver, models: dict[str, Path],
                                                          engine: Engine, tmp_path: Path) -> None:
    path = merge(resolver, tmp_path, primary="m-folder", multiplier=0.5)
    with safe_open(str(path), framework="pt") as handle:
        assert EMBEDDED_CONFIG in (handle.metadata() or {})  # it loads on its own, with no sibling folder
    resolver.add(ModelRecord("merged", ModelKind.CHECKPOINT, ModelFormat.SAFETENSORS, str(path), family="tiny"))
    from tests.engine.conftest import Context

    images = [engine.run(GenerateSpec(stages=(Txt2Img(diffusion(m)),), seed=3), Context())[0].image.tobytes()
              for m in ("m-a", "merged")]
    assert images[0] != images[1]


def test_families_must_match_and_cancel_stops(resolver: Resolver, models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidParams) as e:
        merge(resolver, tmp_path, secondary="m-other")
    assert e.value.code == "incompatible_models" and "sd15" in e.value.message
    with pytest.raises(Canceled):
        MergeHandler(resolver, tmp_path).run(MergeSpec("m-a", "m-b", "x"), MergeContext(cancel=True))
