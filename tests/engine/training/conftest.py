"""Training fixtures: a recording WorkContext that keeps checkpoints in memory, and the `shapes` record."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import diffusiond
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import ImageFormat, ImageRef

SHAPES = Path(diffusiond.__file__).parent / "bundled" / "shapes"
SHAPES_RECORD = ModelRecord("shapes", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(SHAPES), family="shapes")


@dataclass
class TrainContext:
    """Records metrics, documents and model files; keeps the last checkpoint in a folder; cancels
    once `cancel_at_step` steps are done."""

    root: Path
    images: dict[str, Image.Image] = field(default_factory=dict)
    metrics: list[dict[str, float]] = field(default_factory=list)
    progress: list[float] = field(default_factory=list)
    documents: dict[str, Any] = field(default_factory=dict)
    models: list[tuple[Path, str]] = field(default_factory=list)
    checkpoints: int = 0
    cancel_at_step: int | None = None

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    def load_image(self, ref: ImageRef) -> Image.Image:
        return self.images[ref.blob_key].copy()

    def report_progress(self, image_index: int, fraction: float) -> None:
        self.progress.append(fraction)

    def report_metrics(self, metrics: Mapping[str, float]) -> None:
        self.metrics.append(dict(metrics))

    def report_preview(self, image: Image.Image) -> None:
        pass

    def is_canceled(self) -> bool:
        done = self.metrics[-1]["step"] if self.metrics else 0
        return self.cancel_at_step is not None and done >= self.cancel_at_step

    def save_image(self, image: Image.Image, seed: int, finish_reason: str = "SUCCESS",
                   format: ImageFormat = ImageFormat.PNG, *, parameters: str | None = None) -> None:
        raise AssertionError("a training saves no images")

    def save_model_file(self, path: Path, *, name: str, format: str) -> None:
        kept = self.root / (f"model-{len(self.models)}" + ("" if path.is_dir() else ".safetensors"))
        shutil.move(path, kept)
        self.models.append((kept, name))

    def save_document(self, name: str, data: Any) -> None:
        self.documents[name] = data

    def save_checkpoint(self, folder: Path) -> None:
        shutil.rmtree(self.checkpoint, ignore_errors=True)
        shutil.copytree(folder, self.checkpoint)
        self.checkpoints += 1

    def load_checkpoint(self, dest: Path) -> bool:
        if not self.checkpoint.is_dir():
            return False
        shutil.copytree(self.checkpoint, dest, dirs_exist_ok=True)
        return True


@pytest.fixture
def train_ctx(tmp_path: Path) -> TrainContext:
    return TrainContext(tmp_path)
