"""The `train` kind's handler: pictures in, a kohya LoRA and a loss document out, usable by the engine."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import GenerateSpec, ImageRef, LoraRef, Txt2Img
from diffusiond.domain.training import TrainingImage, TrainMethod, TrainSettings, TrainSpec
from diffusiond.engine.context import Canceled
from diffusiond.engine.runner import Engine
from diffusiond.engine.training.handler import TrainHandler
from diffusiond.testing.concepts import pictures
from tests.engine.conftest import Context, Resolver, diffusion
from tests.engine.training.conftest import SHAPES_RECORD, TrainContext

SETTINGS = TrainSettings(steps=4, learning_rate=2e-2, rank=4, alpha=4.0, batch_size=2, resolution=64,
                         checkpoint_every=0)


def spec_for(ctx: TrainContext, **changes: object) -> TrainSpec:
    images = []
    for i, picture in enumerate(pictures("huge", 4)):
        images.append(TrainingImage(ctx_put(ctx, f"in/{i}.png", picture), caption="" if i % 2 else "a shape"))
    spec = TrainSpec(base_model="shapes", images=tuple(images), trigger_word="hgsz", settings=SETTINGS, seed=5,
                     output_model="huge-lora", output_name="Huge")
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def ctx_put(ctx: TrainContext, key: str, image: object) -> ImageRef:
    ctx.images[key] = image  # type: ignore[assignment]
    return ImageRef(key, 64, 64)


@pytest.fixture
def resolver() -> Resolver:
    return Resolver({"shapes": SHAPES_RECORD})


@pytest.fixture
def handler(resolver: Resolver, tmp_path: Path) -> TrainHandler:
    return TrainHandler(resolver, tmp_path / "cache", tmp_path / "work", device="cpu")


def test_a_training_saves_a_lora_that_generation_loads_and_scale_zero_is_the_base(
        handler: TrainHandler, resolver: Resolver, train_ctx: TrainContext, tmp_path: Path) -> None:
    handler.run(spec_for(train_ctx), train_ctx)
    (path, name), = train_ctx.models
    assert name == "Huge.safetensors"
    loss = train_ctx.documents["loss"]
    assert loss["steps"] == [1, 2, 3, 4] and len(loss["loss"]) == 4
    assert not list((tmp_path / "work").iterdir())  # the file was handed over; nothing left behind
    resolver.add(ModelRecord("huge-lora", ModelKind.LORA, ModelFormat.SAFETENSORS, str(path), family="shapes"))
    engine = Engine(resolver=resolver, cache_dir=tmp_path / "engine", device="cpu")

    def image(weight: float | None) -> bytes:
        loras = () if weight is None else (LoraRef("huge-lora", weight),)
        d = diffusion("shapes", "hgsz", steps=8, loras=loras)
        return engine.run(GenerateSpec(stages=(Txt2Img(d),), seed=9), Context())[0].image.tobytes()

    base = image(None)
    assert image(0.0) == base  # scale 0: exactly the base model's pixels
    assert image(1.0) != base


def test_cancel_between_steps_stops_without_a_model(handler: TrainHandler, train_ctx: TrainContext) -> None:
    train_ctx.cancel_at_step = 2
    with pytest.raises(Canceled):
        handler.run(spec_for(train_ctx), train_ctx)
    assert [m["step"] for m in train_ctx.metrics] == [1, 2]
    assert not train_ctx.models and not train_ctx.documents


def test_a_full_fine_tune_hands_the_job_a_model_folder(handler: TrainHandler, train_ctx: TrainContext) -> None:
    handler.run(spec_for(train_ctx, method=TrainMethod.FULL, settings=dataclasses.replace(SETTINGS, steps=2)),
                train_ctx)
    (folder, name), = train_ctx.models
    assert name == "Huge.safetensors" and (folder / "model_index.json").is_file()
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert len(train_ctx.documents["loss"]["loss"]) == 2
