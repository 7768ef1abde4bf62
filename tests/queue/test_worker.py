"""The worker with a real engine on a tiny model: outputs stored, batching, failures, cancel."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from diffusiond.auth.keys import KeyService
from diffusiond.blobs.local import LocalBlobStore
from diffusiond.domain.jobs import JobKind, JobStatus
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import Diffusion, GenerateSpec, Txt2Img, WeightedPrompt
from diffusiond.engine.runner import Engine, GenerateHandler
from diffusiond.models.registry import ModelRegistry
from diffusiond.queue.events import JobEvents
from diffusiond.queue.job_service import JobService
from diffusiond.queue.worker import Worker
from diffusiond.store.database import Database


@pytest.fixture
def setup(tmp_path: Path, tiny_sd_dir: Path) -> tuple[JobService, Worker, LocalBlobStore, str]:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    db.migrate()
    registry = ModelRegistry(db)
    registry.add(tiny_sd_dir, "tiny", ModelKind.CHECKPOINT, family="tiny")
    jobs = JobService(db, JobEvents())
    blobs = LocalBlobStore(tmp_path / "blobs")
    engine = Engine(resolver=registry, cache_dir=tmp_path / "cache", device="cpu")
    worker = Worker(jobs, blobs, {JobKind.GENERATE: GenerateHandler(engine)}, "w1", batch_size=4, batch_window=0.0)
    tenant = KeyService(db).create("t", credits_milli=100_000).tenant_id
    return jobs, worker, blobs, tenant


def spec(prompt: str, seed: int, model: str = "tiny", steps: int = 4, **kwargs: object) -> GenerateSpec:
    d = Diffusion(model=model, prompts=(WeightedPrompt(prompt),), width=64, height=64, steps=steps,
                  **kwargs)  # type: ignore[arg-type]
    return GenerateSpec(stages=(Txt2Img(d),), seed=seed)


def test_compatible_jobs_run_as_one_batch(setup: tuple[JobService, Worker, LocalBlobStore, str]) -> None:
    jobs, worker, blobs, tenant = setup
    ids = [jobs.submit(tenant, spec(p, i + 1, cfg_scale=3.0 + i), dialect="jobs").id
           for i, p in enumerate(["a red circle", "a blue square", "a green triangle"])]
    assert worker.run_once()  # one claim took all three
    assert not worker.run_once()
    worker.drain()
    for job_id in ids:
        job = jobs.get(tenant, job_id)
        assert job.status is JobStatus.SUCCEEDED and job.attempt == 1
        assert blobs.get(job.images[0].blob_key).startswith(b"\x89PNG")


def test_a_failing_job_fails_alone(setup: tuple[JobService, Worker, LocalBlobStore, str]) -> None:
    jobs, worker, _, tenant = setup
    bad = jobs.submit(tenant, spec("x", 1, model="missing"), dialect="jobs")
    good = jobs.submit(tenant, spec("a red circle", 2), dialect="jobs")
    while worker.run_once():
        pass
    worker.drain()
    failed = jobs.get(tenant, bad.id)
    assert failed.status is JobStatus.FAILED and failed.error_code == "not_found"
    assert jobs.get(tenant, good.id).status is JobStatus.SUCCEEDED


def test_batch_progress_is_written_while_it_runs_and_cancel_stops_one_job(
        setup: tuple[JobService, Worker, LocalBlobStore, str]) -> None:
    jobs, worker, _, tenant = setup
    worker.progress_interval = 0.02
    keep, drop = (jobs.submit(tenant, spec("a red circle", i + 1, steps=100), dialect="jobs").id
                  for i in range(2))
    run = threading.Thread(target=worker.run_once)
    run.start()
    deadline = time.monotonic() + 60
    while not all(jobs.get(tenant, j).progress.get("0", 0.0) > 0 for j in (keep, drop)):
        assert time.monotonic() < deadline and run.is_alive(), "no progress was written while the batch ran"
        time.sleep(0.02)
    jobs.cancel(tenant, drop)
    run.join(120)
    worker.drain()
    assert jobs.get(tenant, drop).status is JobStatus.CANCELED
    done = jobs.get(tenant, keep)
    assert done.status is JobStatus.SUCCEEDED and done.progress == {"0": 1.0}
