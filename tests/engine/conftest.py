"""Engine fixtures: tiny models built once per session, a resolver over them, a recording context."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from diffusiond.domain.errors import NotFound
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import Diffusion, ImageRef, WeightedPrompt
from diffusiond.engine.runner import Engine


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    # On this 2-core CI box a second intra-op thread makes tiny models ~50x slower (the cores are
    # shared with other processes); one thread keeps the engine suite well under its time budget.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Resolver:
    records: dict[str, ModelRecord] = field(default_factory=dict)

    def add(self, record: ModelRecord) -> ModelRecord:
        self.records[record.id] = record
        return record

    def resolve(self, model_id: str, kind: ModelKind) -> ModelRecord:
        record = self.records.get(model_id)
        if record is None or record.kind != kind:
            raise NotFound(f"no {kind.value} {model_id!r}")
        return record


@dataclass
class Context:
    """A WorkContext that records progress and cancels after `cancel_after` progress reports."""

    images: dict[str, Image.Image] = field(default_factory=dict)
    progress: list[tuple[int, float]] = field(default_factory=list)
    cancel_after: int | None = None
    previews: list[Image.Image] = field(default_factory=list)

    def load_image(self, ref: ImageRef) -> Image.Image:
        return self.images[ref.blob_key].copy()

    def report_progress(self, image_index: int, fraction: float) -> None:
        self.progress.append((image_index, fraction))

    def report_preview(self, image: Image.Image) -> None:
        self.previews.append(image)

    def is_canceled(self) -> bool:
        return self.cancel_after is not None and len(self.progress) >= self.cancel_after

    def put(self, key: str, image: Image.Image) -> ImageRef:
        self.images[key] = image
        return ImageRef(blob_key=key)


@dataclass
class TinyModels:
    root: Path
    sd: Path
    inpaint: Path
    lora: Path
    lora_kohya: Path
    embedding: Path
    esrgan_safetensors: Path
    esrgan_pth: Path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> TinyModels:
    from diffusiond.testing import tiny_models

    root = tmp_path_factory.mktemp("engine-models")
    return TinyModels(
        root=root,
        sd=tiny_sd_dir,
        inpaint=tiny_models.save_tiny_sd_inpaint(root / "inpaint"),
        lora=tiny_models.save_tiny_lora(root / "lora" / "tiny_lora.safetensors"),
        lora_kohya=tiny_models.save_tiny_lora(root / "lora" / "tiny_lora_kohya.safetensors", kohya=True),
        embedding=tiny_models.save_tiny_embedding(root / "emb" / "tiny_emb.safetensors"),
        esrgan_safetensors=tiny_models.save_tiny_esrgan(root / "esrgan" / "x2.safetensors"),
        esrgan_pth=tiny_models.save_tiny_esrgan(root / "esrgan" / "x2.pth"),
    )


@pytest.fixture(scope="session")
def resolver(tiny: TinyModels) -> Resolver:
    r = Resolver()
    r.add(ModelRecord("tiny", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(tiny.sd), family="tiny"))
    r.add(ModelRecord("tiny-inpaint", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(tiny.inpaint), family="tiny"))
    r.add(ModelRecord("tiny-lora", ModelKind.LORA, ModelFormat.SAFETENSORS, str(tiny.lora), family="tiny"))
    r.add(ModelRecord("tiny-kohya", ModelKind.LORA, ModelFormat.SAFETENSORS, str(tiny.lora_kohya), family="tiny"))
    r.add(ModelRecord("tiny-emb", ModelKind.EMBEDDING, ModelFormat.SAFETENSORS, str(tiny.embedding), family="tiny"))
    r.add(ModelRecord("x2", ModelKind.UPSCALER, ModelFormat.SAFETENSORS, str(tiny.esrgan_safetensors), "esrgan"))
    r.add(ModelRecord("x2-pth", ModelKind.UPSCALER, ModelFormat.PTH, str(tiny.esrgan_pth), family="esrgan"))
    return r


@pytest.fixture(scope="session")
def engine(resolver: Resolver, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """One engine for the suite, so the tiny pipelines stay warm between tests (as on a worker)."""
    return Engine(resolver=resolver, cache_dir=tmp_path_factory.mktemp("engine-cache"), device="cpu")


def diffusion(model: str = "tiny", prompt: str = "a red circle on a blue square", **kwargs: object) -> Diffusion:
    """A short tiny-model run: 64x64, few steps."""
    defaults: dict[str, object] = {"width": 64, "height": 64, "steps": 4, "cfg_scale": 5.0}
    defaults["prompts"] = (WeightedPrompt(prompt),)
    return Diffusion(model=model, **{**defaults, **kwargs})  # type: ignore[arg-type]


def pixels(image: Image.Image) -> list[int]:
    return list(image.convert("RGB").tobytes())


def max_abs_diff(a: Image.Image, b: Image.Image) -> int:
    import numpy as np

    x = np.asarray(a.convert("RGB"), dtype=np.int16)
    y = np.asarray(b.convert("RGB"), dtype=np.int16)
    return int(np.abs(x - y).max())


@pytest.fixture
def ctx() -> Context:
    return Context()
