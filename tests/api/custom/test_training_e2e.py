"""End to end with the real trainer, on the bundled `shapes` model: a new user's pictures of concepts the
base model lacks (a pink shape colour, a brown background: neither is in its palette), trained with
speed `fast`, seen in the pixels of predictions, alone and mixed.

Skipped only where this build wires no handler for training jobs (the trainer is its own piece of
the core); wherever one is wired, this runs and must pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from diffusiond.config import Settings
from diffusiond.domain.jobs import JobKind
from diffusiond.services import build_handlers, build_services
from diffusiond.testing.concepts import brown_backgrounds, has_brown_background, has_pink_shape, pink_shapes, png
from tests.api.custom.conftest import Api, key_factory
from tests.conftest import LiveServer, free_port

TRAINING_TIMEOUT = 1200.0


def trainer_wired(home: Path) -> bool:
    services = build_services(Settings(home=home, executor="none"), with_workers=False)
    try:
        return JobKind.TRAIN in build_handlers(services.settings, services.models, services.blobs)
    finally:
        services.db.dispose()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("custom-e2e")
    if not trainer_wired(home):
        pytest.skip("no handler for training jobs is wired into this build (services.build_handlers)")
    server = LiveServer(home=home, port=free_port(),
                        env={"DIFFUSIOND_WORKERS": "1", "DIFFUSIOND_TRAINING_WORKERS": "1",
                             "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(live: LiveServer) -> Iterator[Api]:
    for make in key_factory(live):
        with live.client(make(credits=1000.0)) as c:
            yield Api(c)


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def train(api: Api, name: str, pictures: list[bytes]) -> dict[str, Any]:
    """Create a model, upload the pictures, train with speed `fast`, wait; the finished training."""
    model_id = api.create_model(name)
    for data in pictures:
        api.upload(model_id, data)
    created = api.train(model_id, trainingStrength=7, trainingSpeed="fast")
    deadline = time.monotonic() + TRAINING_TIMEOUT
    seen_loss = False
    while True:
        status = api.training(model_id, created["trainingId"])
        seen_loss |= status["status"] == "processing" and status.get("loss") is not None
        if status["status"] in ("succeeded", "failed", "canceled"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(1.0)
    assert status["status"] == "succeeded", status
    assert status["progress"] == 1 and isinstance(status.get("loss"), float)
    print(f"\n{name}: trained on {len(pictures)} pictures in {seconds(status['startedAt'], status['finishedAt']):.0f} s"
          f" ({status['settings']['steps']} steps), loss {status['loss']:.4f}, loss seen while processing: {seen_loss}")
    return {"modelId": model_id, **status}


def predict(api: Api, prompt: str, configs: dict[str, dict[str, Any]], seeds: tuple[int, ...] = (11, 23)
            ) -> list[Image.Image]:
    images: list[Image.Image] = []
    for seed in seeds:
        started = time.monotonic()
        images += api.predict_images(prompt=prompt, seed=seed, num_images=4, num_inference_steps=20,
                                     guidance_scale=5.0, scaleConfigs=configs)
        print(f"prediction {prompt!r} x4 with {len(configs)} trained model(s): {time.monotonic() - started:.1f} s")
    return images


def share(images: list[Image.Image], check: Callable[[Image.Image], bool]) -> float:
    return sum(map(check, images)) / len(images)


@pytest.mark.timeout(2 * TRAINING_TIMEOUT + 600)
def test_train_on_new_pictures_then_predict_and_mix(api: Api, tmp_path: Path) -> None:
    pink = train(api, "Pink shapes", [png(i) for i in pink_shapes(12)])
    brown = train(api, "Brown backgrounds", [png(i) for i in brown_backgrounds(12)])
    pink_word, brown_word = pink["triggerWord"], brown["triggerWord"]
    use_pink = {"modelId": pink["modelId"], "trainingId": pink["id"], "scale": 1.0}
    use_brown = {"modelId": brown["modelId"], "trainingId": brown["id"], "scale": 1.0}

    # 1. the trained concept is in the pixels with the trained model, and not without it
    base = predict(api, pink_word, {})
    pink_alone = predict(api, pink_word, {"1": use_pink})
    brown_alone = predict(api, brown_word, {"1": use_brown})
    print(f"pink shapes: {share(pink_alone, has_pink_shape):.0%} with the trained model, "
          f"{share(base, has_pink_shape):.0%} without; brown: {share(brown_alone, has_brown_background):.0%}")
    assert share(pink_alone, has_pink_shape) >= 0.75 and share(base, has_pink_shape) <= 0.125
    assert share(brown_alone, has_brown_background) >= 0.75 and share(base, has_brown_background) <= 0.125

    # 2. two trained models mixed by scale in one generation: both influences show
    mixed = predict(api, f"{pink_word} {brown_word}", {"1": use_pink, "2": use_brown})
    pink_mixed, brown_mixed = share(mixed, has_pink_shape), share(mixed, has_brown_background)
    print(f"mixed: pink shapes in {pink_mixed:.0%}, brown backgrounds in {brown_mixed:.0%}")
    assert pink_mixed >= 0.25 and pink_mixed > share(brown_alone, has_pink_shape)
    assert brown_mixed >= 0.25 and brown_mixed > share(pink_alone, has_brown_background)

    grid = Image.new("RGB", (64 * 8, 64 * 4))
    for row, images in enumerate((base, pink_alone, brown_alone, mixed)):
        for col, image in enumerate(images[:8]):
            grid.paste(image.convert("RGB"), (64 * col, 64 * row))
    grid.save(tmp_path / "custom_e2e.png")
    print(f"grid (rows: base, pink, brown, mixed): {tmp_path / 'custom_e2e.png'}")
