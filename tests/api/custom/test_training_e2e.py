"""End to end with the real trainer, on the bundled `shapes` model: a new user's pictures of concepts the
base model lacks (shapes that fill the frame, bands from edge to edge; `diffusiond.testing.concepts`),
trained with speed `fast`, seen in the pixels of predictions, alone and mixed by scale.

Skipped only where this build wires no handler for training jobs (the trainer is its own piece of
the core); wherever one is wired, this runs and must pass.
"""

from __future__ import annotations

import io
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
from diffusiond.testing.concepts import is_huge, is_stripe, pictures, reaches_both_sides
from diffusiond.testing.shapes_checks import area_fraction
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


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


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


def mean_area(images: list[Image.Image]) -> float:
    return sum(map(area_fraction, images)) / len(images)


@pytest.fixture(scope="module")
def trained(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two models trained through the API: huge shapes, and bands from edge to edge."""
    return (train(api, "Huge shapes", [png(i) for i in pictures("huge", 12)]),
            train(api, "Stripes", [png(i) for i in pictures("stripe", 12)]))


def configs(trained: tuple[dict[str, Any], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    huge, stripe = trained
    return ({"modelId": huge["modelId"], "trainingId": huge["id"], "scale": 1.0},
            {"modelId": stripe["modelId"]})  # no trainingId: the model's newest succeeded training


@pytest.fixture(scope="module")
def alone(api: Api, trained: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, list[Image.Image]]:
    """Each trained model alone on its own trigger word, and the base model on the huge model's word."""
    huge_word, stripe_word = (t["triggerWord"] for t in trained)
    use_huge, use_stripe = configs(trained)
    return {"base": predict(api, huge_word, {}), "huge": predict(api, huge_word, {"1": use_huge}),
            "stripe": predict(api, stripe_word, {"1": {**use_stripe, "scale": 1.0}})}


def save_grid(rows: list[list[Image.Image]], path: Path) -> None:
    grid = Image.new("RGB", (64 * 8, 64 * len(rows)))
    for row, images in enumerate(rows):
        for col, image in enumerate(images[:8]):
            grid.paste(image.convert("RGB"), (64 * col, 64 * row))
    grid.save(path)


@pytest.mark.timeout(2 * TRAINING_TIMEOUT + 600)
def test_a_trained_model_draws_what_it_learnt(alone: dict[str, list[Image.Image]], tmp_path: Path) -> None:
    """The trained concept is in the pixels with the trained model, and far less without it (the base
    model draws a large circle now and then: a random trigger word is just another prompt to it)."""
    base, huge_alone, stripe_alone = alone["base"], alone["huge"], alone["stripe"]
    print(f"huge shapes: {share(huge_alone, is_huge):.0%} with the trained model, {share(base, is_huge):.0%} "
          f"without; stripes: {share(stripe_alone, is_stripe):.0%}, {share(base, is_stripe):.0%} without")
    assert share(huge_alone, is_huge) >= 0.75 and share(huge_alone, is_huge) - share(base, is_huge) >= 0.5
    assert share(stripe_alone, is_stripe) >= 0.75 and share(base, is_stripe) <= 0.125
    save_grid([base, huge_alone, stripe_alone], tmp_path / "custom_e2e.png")
    print(f"grid (rows: base, huge, stripe): {tmp_path / 'custom_e2e.png'}")


@pytest.mark.timeout(2 * TRAINING_TIMEOUT + 900)
def test_two_trained_models_mix_by_scale(api: Api, trained: tuple[dict[str, Any], dict[str, Any]],
                                         alone: dict[str, list[Image.Image]], tmp_path: Path) -> None:
    """Mixed in one generation, on the prompt with both trigger words: both influences show, and the
    scales decide how much of each. Size comes from the huge model (its shapes cover more of the image
    than the stripe model's bands), edge-to-edge reach from the stripe model (the huge model's shapes
    never have it). Each model runs on the prompt without the other's trigger word (composed mixing)."""
    use_huge, use_stripe = configs(trained)
    both = " ".join(t["triggerWord"] for t in trained)
    mixed = predict(api, both, {"1": use_huge, "2": {**use_stripe, "scale": 1.0}})
    mostly_huge = predict(api, both, {"1": use_huge, "2": {**use_stripe, "scale": 0.3}})
    mostly_stripe = predict(api, both, {"1": {**use_huge, "scale": 0.3}, "2": {**use_stripe, "scale": 1.0}})
    rows = {"huge alone": alone["huge"], "stripes alone": alone["stripe"], "huge 0.3 + stripes 1": mostly_stripe,
            "huge 1 + stripes 1": mixed, "huge 1 + stripes 0.3": mostly_huge}
    for name, images in rows.items():
        print(f"{name}: area {mean_area(images):.2f}, huge {share(images, is_huge):.0%}, "
              f"both sides reached {share(images, reaches_both_sides):.0%}")
    save_grid(list(rows.values()), tmp_path / "custom_mix.png")
    print(f"grid (rows: {', '.join(rows)}): {tmp_path / 'custom_mix.png'}")
    assert mean_area(mixed) > mean_area(alone["stripe"]) and mean_area(mixed) > mean_area(mostly_stripe)
    assert share(mixed, reaches_both_sides) > share(alone["huge"], reaches_both_sides)
    assert share(mixed, reaches_both_sides) > share(mostly_huge, reaches_both_sides)
