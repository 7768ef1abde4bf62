"""Kinds of work beyond generation, through the real job service, worker and blob store.

The handler here is a small real one (it writes files through the worker's context), so these
tests pin the worker's contract: typed artifacts, the kind's success effect in the success
transaction, metrics, checkpoints that a later attempt gets back, and cancel.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from diffusiond.auth.keys import KeyService
from diffusiond.auth.tenants import TenantService
from diffusiond.blobs.local import LocalBlobStore
from diffusiond.domain.errors import NotFound
from diffusiond.domain.jobs import JobKind, JobStatus, ModelFileArtifact
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import ImageRef
from diffusiond.domain.training import TrainingImage, TrainMethod, TrainSettings, TrainSpec
from diffusiond.engine.context import Canceled, WorkContext
from diffusiond.models.files import LocalModelFiles
from diffusiond.models.registry import ModelRegistry
from diffusiond.queue.events import JobEvents
from diffusiond.queue.job_service import JobService
from diffusiond.queue.worker import Worker
from diffusiond.store.database import Database


class CountingTrainer:
    """Counts to `settings.steps`, one checkpoint per step; the 'model' is the count it reached."""

    def __init__(self) -> None:
        self.resumed_from: list[int] = []
        self.stop_after: int | None = None  # raise as if the worker died after this step
        self.step_event = threading.Event()
        self.proceed = threading.Event()
        self.proceed.set()

    def run(self, spec: TrainSpec, ctx: WorkContext) -> None:
        folder = Path(ctx_tmp(ctx))
        start = 0
        if ctx.load_checkpoint(folder):
            start = json.loads((folder / "state.json").read_text())["step"]
        self.resumed_from.append(start)
        for step in range(start + 1, spec.settings.steps + 1):
            self.proceed.wait(10)
            if ctx.is_canceled():
                raise Canceled("canceled")
            ctx.report_progress(0, step / spec.settings.steps)
            ctx.report_metrics({"step": step, "total_steps": spec.settings.steps, "loss": 1.0 / step})
            (folder / "state.json").write_text(json.dumps({"step": step}))
            ctx.save_checkpoint(folder)
            self.step_event.set()
            if self.stop_after == step:
                raise SystemExit("worker died")  # not an Exception: nothing records an outcome
        model = folder / "out.safetensors"
        model.write_bytes(b"weights after %d steps" % spec.settings.steps)
        ctx.save_model_file(model, name="Pink things (FJA90AB).safetensors", format="safetensors")
        ctx.save_document("loss.json", {"loss": [1.0 / s for s in range(1, spec.settings.steps + 1)]})


def ctx_tmp(ctx: Any) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=f"trainer-{ctx.claim.job.id}-")


@pytest.fixture
def world(tmp_path: Path) -> Any:
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    db.migrate()
    registry = ModelRegistry(db)
    registry.register_builtins()
    jobs = JobService(db, JobEvents(), lease_seconds=60,
                      success_effects={JobKind.TRAIN: registry.register_job_output})
    blobs = LocalBlobStore(tmp_path / "blobs")
    keys = KeyService(db)
    yield db, registry, jobs, blobs, keys
    db.dispose()


def train_spec(steps: int = 3, output: str = "my-lora") -> TrainSpec:
    images = tuple(TrainingImage(ImageRef(f"inputs/t/{i}.png", 64, 64), "a pink circle") for i in range(4))
    return TrainSpec(base_model="shapes", images=images, trigger_word="FJA90AB", output_model=output,
                     settings=TrainSettings(steps=steps, learning_rate=1e-3, resolution=64))


def test_a_training_succeeds_with_typed_artifacts_and_registers_its_model_for_its_tenant(world: Any) -> None:
    db, registry, jobs, blobs, keys = world
    tenant, other = keys.create("a", credits_milli=10_000).tenant_id, keys.create("b").tenant_id
    trainer = CountingTrainer()
    worker = Worker(jobs, blobs, {JobKind.TRAIN: trainer}, "w")
    job = jobs.submit(tenant, train_spec(), dialect="custom", parent_id="model-1")
    assert job.kind is JobKind.TRAIN and job.dialect == "custom" and job.parent_id == "model-1"
    assert job.credits_reserved == 100  # the per-training floor of the documented rule
    assert worker.run_once()
    worker.drain()
    done = jobs.get(tenant, job.id)
    assert done.status is JobStatus.SUCCEEDED and done.credits_charged == 100
    (model_file,) = done.model_files
    assert isinstance(model_file, ModelFileArtifact)
    assert blobs.get(model_file.blob_key) == b"weights after 3 steps"
    assert model_file.size == 21 and len(model_file.sha256) == 64 and model_file.format == "safetensors"
    # a display name keeps its spaces as the file's name, never in the blob key
    assert model_file.name == "Pink things (FJA90AB).safetensors"
    assert model_file.blob_key.endswith("-Pink_things_FJA90AB_.safetensors"), model_file.blob_key
    (loss,) = done.documents
    assert json.loads(blobs.get(loss.blob_key))["loss"][0] == 1.0
    assert done.images == ()
    # registered in the success transaction, as a LoRA of the base's family, owned by the tenant
    record = registry.resolve_for(tenant, "my-lora", ModelKind.LORA)
    assert record.family == "shapes" and record.trigger_words == ("FJA90AB",) and record.tenant_id == tenant
    with pytest.raises(NotFound):
        registry.resolve_for(other, "my-lora", ModelKind.LORA)
    assert "my-lora" not in [r.id for r, _ in registry.list(ModelKind.LORA, tenant_id=other)]
    local = LocalModelFiles(registry, blobs, Path("/nonexistent")).resolve("my-lora", ModelKind.LORA)
    assert Path(local.path).read_bytes() == b"weights after 3 steps"
    assert not blobs.exists(f"work/{tenant}/{job.id}/checkpoint.tar")  # resumable state is dropped
    assert TenantService(db).get(tenant).balance == 9_900


def test_a_lost_attempt_resumes_from_its_last_checkpoint_and_one_model_comes_out(world: Any) -> None:
    db, registry, _, blobs, keys = world
    jobs = JobService(db, JobEvents(), lease_seconds=-1, success_effects={JobKind.TRAIN: registry.register_job_output})
    tenant = keys.create("a", credits_milli=10_000).tenant_id
    trainer = CountingTrainer()
    trainer.stop_after = 2
    job = jobs.submit(tenant, train_spec(steps=5), dialect="custom")
    with pytest.raises(SystemExit):
        Worker(jobs, blobs, {JobKind.TRAIN: trainer}, "w1").run_once()
    assert jobs.requeue_expired() == 1
    trainer.stop_after = None
    jobs.lease = type(jobs.lease)(seconds=60)
    second = Worker(jobs, blobs, {JobKind.TRAIN: trainer}, "w2")
    assert second.run_once()
    second.drain()
    done = jobs.get(tenant, job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempt == 2
    assert trainer.resumed_from == [0, 2]
    assert len(done.model_files) == 1 and len([r for r, _ in registry.list(ModelKind.LORA, tenant_id=tenant)]) == 1
    assert TenantService(db).ledger_sum(tenant) == TenantService(db).get(tenant).balance == 9_900


def test_metrics_are_visible_while_it_runs_and_cancel_registers_nothing(world: Any) -> None:
    db, registry, jobs, blobs, keys = world
    tenant = keys.create("a", credits_milli=10_000).tenant_id
    trainer = CountingTrainer()
    trainer.proceed.clear()
    worker = Worker(jobs, blobs, {JobKind.TRAIN: trainer}, "w", progress_interval=0.02)
    job = jobs.submit(tenant, train_spec(steps=50), dialect="custom")
    run = threading.Thread(target=worker.run_once)
    run.start()
    trainer.proceed.set()
    trainer.step_event.wait(10)
    trainer.proceed.clear()  # hold it mid-training
    deadline = threading.Event()
    for _ in range(200):
        if jobs.get(tenant, job.id).metrics.get("step", 0) >= 1:
            break
        deadline.wait(0.02)
    running = jobs.get(tenant, job.id)
    assert running.status is JobStatus.RUNNING and running.metrics["total_steps"] == 50
    assert 0 < running.metrics["loss"] <= 1 and running.progress["0"] > 0
    jobs.cancel(tenant, job.id)  # flagged; the next lease renewal tells the running job
    trainer.proceed.set()
    run.join(30)
    worker.drain()
    final = jobs.get(tenant, job.id)
    assert final.status is JobStatus.CANCELED and final.artifacts == ()
    assert trainer.resumed_from == [0] and final.metrics["step"] < 50  # it stopped between steps
    assert registry.list(ModelKind.LORA, tenant_id=tenant) == []
    assert TenantService(db).get(tenant).balance == 10_000


def test_a_worker_claims_only_kinds_it_has_handlers_for(world: Any) -> None:
    _, _, jobs, blobs, keys = world
    tenant = keys.create("a", credits_milli=10_000).tenant_id
    job = jobs.submit(tenant, train_spec(), dialect="custom")
    assert not Worker(jobs, blobs, {}, "generate-only", kinds=[JobKind.GENERATE]).run_once()
    assert jobs.get(tenant, job.id).status is JobStatus.QUEUED


def test_soft_deleted_jobs_leave_lists_and_lookups(world: Any) -> None:
    _, _, jobs, _, keys = world
    tenant = keys.create("a", credits_milli=10_000).tenant_id
    a = jobs.submit(tenant, train_spec(), dialect="custom", parent_id="m1")
    jobs.submit(tenant, train_spec(), dialect="custom", parent_id="m2")
    assert [j.id for j in jobs.list(tenant, parent_id="m1")[0]] == [a.id]
    jobs.hide(tenant, a.id)
    assert jobs.list(tenant, parent_id="m1") == ([], 0)
    with pytest.raises(NotFound):
        jobs.get(tenant, a.id)
    assert jobs.get(None, a.id).status is JobStatus.QUEUED  # still there, and still queued


class FolderTrainer:
    """Saves what a full fine-tune saves, a diffusers folder, and a LoRA named without its suffix."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def run(self, spec: TrainSpec, ctx: WorkContext) -> None:
        import shutil

        work = Path(ctx_tmp(ctx))
        if spec.method is TrainMethod.FULL:
            shutil.copytree(self.source, work / "tuned")
            ctx.save_model_file(work / "tuned", name=spec.output_name, format="diffusers")
        else:
            (work / "x.safetensors").write_bytes(b"lora")
            ctx.save_model_file(work / "x.safetensors", name=spec.output_name, format="safetensors")


def test_a_folder_model_is_kept_as_one_self_describing_file(world: Any, tiny_sd_dir: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from diffusiond.engine.loader import load_checkpoint

    _, registry, jobs, blobs, keys = world
    registry.add(tiny_sd_dir, "tiny-base", family="tiny")
    tenant = keys.create("a", credits_milli=10_000).tenant_id
    worker = Worker(jobs, blobs, {JobKind.TRAIN: FolderTrainer(tiny_sd_dir)}, "w")
    base = replace(train_spec(output="tuned"), base_model="tiny-base", output_name="tuned")
    full = jobs.submit(tenant, replace(base, method=TrainMethod.FULL), dialect="esd")
    lora = jobs.submit(tenant, replace(base, output_model="named", output_name="named"), dialect="esd")
    assert worker.run_once() and worker.run_once()
    worker.drain()
    (made,) = jobs.get(tenant, full.id).model_files
    assert made.format == "safetensors" and made.blob_key.endswith("-tuned.safetensors")
    record = LocalModelFiles(registry, blobs, tmp_path / "cache").resolve("tuned", ModelKind.CHECKPOINT)
    assert record.family == "tiny" and record.path.endswith(".safetensors")
    assert load_checkpoint(record, tmp_path / "cache").pipe.unet is not None  # loads on its own
    (named,) = jobs.get(tenant, lora.id).model_files
    assert named.blob_key.endswith("-named.safetensors")  # loaders tell the format by the name
