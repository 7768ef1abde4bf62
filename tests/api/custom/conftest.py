"""The custom-model API's test kit: a client of its operations, pictures, and trainings finished by
hand (for the tests that must not wait for, or cannot have, the real trainer)."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from diffusiond.domain.jobs import ArtifactKind, JobStatus
from diffusiond.queue.job_service import NewArtifact, Renewal
from diffusiond.services import Services
from diffusiond.store.tables import JobRow
from tests.conftest import LiveServer

BASE = "/v1/custom"
TERMINAL = {"succeeded", "failed", "canceled"}
KeyFactory = Callable[..., str]


def picture(colour: tuple[int, int, int] = (250, 140, 190), size: tuple[int, int] = (64, 64),
            fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body


class Api:
    """The operations of the custom-model API, for one key."""

    def __init__(self, client: httpx.Client) -> None:
        self.c = client

    def create_model(self, name: str = "Pink things", **extra: Any) -> str:
        r = self.c.post(f"{BASE}/models", json={"displayName": name, **extra})
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    def upload(self, model_id: str, data: bytes, content_type: str = "image/png") -> str:
        r = self.c.post(f"{BASE}/models/{model_id}/data", content=data, headers={"Content-Type": content_type})
        assert r.status_code == 200, r.text
        return str(r.json()["dataId"])

    def model_with_images(self, count: int = 4, name: str = "Pink things") -> str:
        model_id = self.create_model(name)
        for i in range(count):
            self.upload(model_id, picture((250, 140, 150 + 10 * i)))
        return model_id

    def train(self, model_id: str, **body: Any) -> dict[str, Any]:
        r = self.c.post(f"{BASE}/models/{model_id}/trainings", json=body)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def training(self, model_id: str, training_id: str) -> dict[str, Any]:
        r = self.c.get(f"{BASE}/models/{model_id}/trainings/{training_id}")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def predict(self, **body: Any) -> str:
        r = self.c.post(f"{BASE}/predictions", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["predictionId"])

    def wait(self, prediction_id: str, timeout: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            r = self.c.get(f"{BASE}/predictions/{prediction_id}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["status"] in TERMINAL:
                return body
            assert time.monotonic() < deadline, f"prediction {prediction_id} still {body['status']}"
            time.sleep(0.1)

    def images(self, prediction: dict[str, Any]) -> list[Image.Image]:
        return [decode(self.c.get(url).content) for url in prediction["outputImages"]]

    def predict_images(self, **body: Any) -> list[Image.Image]:
        done = self.wait(self.predict(**body))
        assert done["status"] == "succeeded", done
        return self.images(done)


def key_factory(live: LiveServer) -> Iterator[KeyFactory]:
    services = live.services()

    def make(credits: float = 100.0) -> str:
        return services.keys.create("test", credits_milli=round(credits * 1000)).key

    yield make
    services.db.dispose()


# ---- trainings finished by hand ---------------------------------------------------------------------


class HandTrainer:
    """Moves a training through the real job service from the test process, as a trainer would:
    claimed, progress and loss reported, then succeeded with a given LoRA file or failed."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def start(self, job_id: str, *, progress: float = 0.5, step: int = 40, total: int = 80,
              loss: float = 0.125) -> int:
        with self.services.db.session() as s:
            row = s.get(JobRow, job_id)
            assert row is not None and row.status == JobStatus.QUEUED.value
            now = datetime.now(UTC)
            row.status, row.attempt, row.lease_owner = JobStatus.RUNNING.value, row.attempt + 1, "hand-trainer"
            row.lease_expires_at, row.started_at = now + timedelta(hours=1), now
            attempt = row.attempt
        self.services.jobs.renew([Renewal(job_id, attempt, progress={"0": progress},
                                          metrics={"step": step, "total_steps": total, "loss": loss,
                                                   "eta_seconds": 12.5})])
        return attempt

    def succeed(self, job_id: str, lora: Path) -> None:
        attempt = self.start(job_id, progress=1.0, step=80)
        job = self.services.jobs.get(None, job_id)
        key = f"outputs/{job.tenant_id}/{job_id}/lora.safetensors"
        self.services.blobs.put_file(key, lora, "application/octet-stream")
        data = lora.read_bytes()
        artifact = NewArtifact(ArtifactKind.MODEL, key, "application/octet-stream", name="lora.safetensors",
                               format="safetensors", size=len(data), sha256=hashlib.sha256(data).hexdigest())
        assert self.services.jobs.succeed(job_id, attempt, [artifact])

    def fail(self, job_id: str) -> None:
        attempt = self.start(job_id)
        assert self.services.jobs.fail(job_id, attempt, "training_diverged", "the loss became NaN")


@pytest.fixture(scope="session")
def shapes_loras(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two LoRA files of random weights that fit the bundled `shapes` UNet (they change pixels, they
    teach nothing): what a succeeded training registers, without running one."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from diffusiond.models.registry import BUNDLED_DIR

    folder = tmp_path_factory.mktemp("shapes-loras")
    files = []
    for seed in (1, 2):
        config = UNet2DConditionModel.load_config(str(BUNDLED_DIR / "shapes" / "unet"))
        unet = UNet2DConditionModel.from_config(config)  # type: ignore[no-untyped-call]
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in unet.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        name = f"random-{seed}.safetensors"
        StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=get_peft_model_state_dict(unet),
                                                  weight_name=name, safe_serialization=True)
        files.append(folder / name)
    return files[0], files[1]


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA that fits the tiny test checkpoint (family `tiny`)."""
    from diffusiond.testing.tiny_models import save_tiny_lora

    return save_tiny_lora(tmp_path_factory.mktemp("tiny-lora") / "tiny-lora.safetensors")
