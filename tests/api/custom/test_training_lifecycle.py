"""A real training stopped mid-way, through the custom-model API on a live server with the real trainer:

- canceled between steps: it ends `canceled`, registers no model and releases its credits;
- the server killed with SIGKILL: the restarted server resumes the training from its last checkpoint
  (not from step 0), and one model and one charge come out.

Skipped only where this build wires no handler for training jobs (as the end-to-end test is).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from diffusiond.domain.jobs import Job, JobStatus
from diffusiond.domain.models import ModelKind
from diffusiond.domain.spec_codec import spec_from_json
from diffusiond.domain.training import TrainSpec
from diffusiond.services import Services
from diffusiond.testing.concepts import pictures
from tests.api.custom.conftest import Api, key_factory
from tests.api.custom.test_training_e2e import png, trainer_wired
from tests.conftest import LiveServer, free_port

# Checkpoints this often, so that a kill can land after one without a long training
ENV = {"DIFFUSIOND_WORKERS": "1", "DIFFUSIOND_TRAINING_WORKERS": "1", "DIFFUSIOND_TRAINING_CHECKPOINT_EVERY": "10"}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    if not trainer_wired(tmp_path):
        pytest.skip("no handler for training jobs is wired into this build (services.build_handlers)")
    server = LiveServer(home=tmp_path, port=free_port(), env=ENV)
    server.start()
    yield server
    server.stop()


def start_training(live: LiveServer, credits: float) -> tuple[Api, str, str, str]:
    """A key with `credits`, a model of 6 pictures and its training (strength 0, fast); their ids."""
    make = next(key_factory(live))
    key = make(credits=credits)
    api = Api(live.client(key))
    model_id = api.create_model("Huge shapes")
    for image in pictures("huge", 6):
        api.upload(model_id, png(image))
    training = api.train(model_id, trainingStrength=0, trainingSpeed="fast")
    return api, key, model_id, str(training["trainingId"])


def wait_for(api: Api, model_id: str, training_id: str, done: Any, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = api.training(model_id, training_id)
        if done(status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def job_of(view: Services, training_id: str) -> Job:
    return view.jobs.get(None, training_id)


def balance(view: Services, job: Job) -> int:
    return view.tenants.get(job.tenant_id).balance


def models_of(view: Services, job: Job) -> list[str]:
    return [m.id for m, _ in view.models.list(ModelKind.LORA, tenant_id=job.tenant_id) if m.tenant_id]


@pytest.mark.timeout(600)
def test_cancel_mid_training_registers_nothing_and_releases_credits(live: LiveServer) -> None:
    api, _key, model_id, training_id = start_training(live, credits=50.0)
    view = live.services()
    try:
        wait_for(api, model_id, training_id, lambda s: (s.get("step") or 0) >= 3)
        r = api.c.post(f"/v1/custom/models/{model_id}/trainings/{training_id}/cancel")
        assert r.status_code == 200, r.text
        status = wait_for(api, model_id, training_id, lambda s: s["status"] in ("canceled", "succeeded", "failed"))
        assert status["status"] == "canceled", status
        job = job_of(view, training_id)
        assert not job.model_files and models_of(view, job) == []
        assert balance(view, job) == 50_000  # the reservation was released, nothing charged
        assert view.tenants.ledger_sum(job.tenant_id) == balance(view, job)
    finally:
        view.db.dispose()


@pytest.mark.timeout(900)
def test_a_killed_training_resumes_from_its_checkpoint(live: LiveServer) -> None:
    api, key, model_id, training_id = start_training(live, credits=50.0)
    view = live.services()
    try:
        job = job_of(view, training_id)
        total = spec_from_json(job.spec_json, job.kind)
        assert isinstance(total, TrainSpec)
        steps = total.settings.steps
        assert steps > 20, "the preset is too short to kill after a checkpoint"
        # past the checkpoint at step 10 (and not yet at 20): the kill loses some steps, not all
        wait_for(api, model_id, training_id, lambda s: (s.get("step") or 0) >= 13)
        live.stop(signal.SIGKILL)
        killed = job_of(view, training_id)
        assert killed.status is JobStatus.RUNNING
        killed_step = int(killed.metrics["step"])
        live.start()
        api = Api(live.client(key))
        # the new attempt's first reported step continues from the checkpoint, not from the start
        resumed = wait_for(api, model_id, training_id,
                           lambda s: job_of(view, training_id).attempt > killed.attempt and s.get("step") is not None)
        first_step = int(resumed["step"])
        assert first_step >= 10, f"the retry started again at step {first_step} (killed at {killed_step})"
        done = wait_for(api, model_id, training_id, lambda s: s["status"] in ("canceled", "succeeded", "failed"),
                        timeout=600)
        assert done["status"] == "succeeded", done.get("error")
        job = job_of(view, training_id)
        assert len(job.model_files) == 1
        assert models_of(view, job) == [job.model_files and spec_output(job)]
        charged = job.credits_charged
        assert charged > 0 and balance(view, job) == 50_000 - charged  # one charge
        assert view.tenants.ledger_sum(job.tenant_id) == balance(view, job)
        # no checkpoint is left behind once the job has its model
        assert not list((live.home / "blobs" / "work").rglob("checkpoint.tar"))
    finally:
        view.db.dispose()


def spec_output(job: Job) -> str:
    spec = spec_from_json(job.spec_json, job.kind)
    assert isinstance(spec, TrainSpec)
    return spec.output_model
