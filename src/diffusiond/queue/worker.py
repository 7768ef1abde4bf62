"""A worker: claims jobs, runs each on the handler of its kind, stores outputs, reports the outcome.

Handlers only execute; everything they do reaches the job row through `JobService`, fenced by the
attempt number, so a worker whose lease was taken over cannot write.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tarfile
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.images import IMAGE_FORMATS, encode_image, open_image
from diffusiond.domain.batching import batch_key
from diffusiond.domain.errors import DomainError, InvalidParams
from diffusiond.domain.jobs import ArtifactKind, Job, JobKind
from diffusiond.domain.params import GenerateSpec, ImageFormat, ImageRef
from diffusiond.domain.spec_codec import WorkSpec, spec_from_json
from diffusiond.engine.context import BatchHandler, Canceled, Handler
from diffusiond.queue.job_service import Claim, JobService, NewArtifact, Renewal

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)
# Seconds between progress writes. A batch's progress goes in one transaction, written by the
# worker's lease thread, so the denoising loop never waits on the database.
PROGRESS_INTERVAL = 0.5
Handlers = Mapping[JobKind, Handler]


class OutputLayout(Protocol):
    """How one dialect lays out its jobs' files (the EKS API's `<prefix>/<id>/` folders).

    `image_key` names where output `index` of an attempt is stored (None: the default key); it must
    differ between attempts, because a stale attempt deletes what it wrote. `finished` writes what the
    dialect keeps beside the outputs (a result file) before the job's terminal transition commits,
    and returns the keys it wrote.
    """

    def image_key(self, job: Job, attempt: int, index: int, extension: str) -> str | None: ...

    def finished(self, job: Job, attempt: int, images: Sequence[NewArtifact], error: DomainError | None) -> list[str]:
        ...


class StopFlag(Protocol):
    """What tells a worker to stop: a threading.Event, or a multiprocessing one in a spawned worker."""

    def is_set(self) -> bool: ...


@dataclass
class Output:
    """An output a running job saved; stored as a blob when the job succeeds."""

    kind: ArtifactKind
    image: Image.Image | None = None
    seed: int = 0
    finish_reason: str = "SUCCESS"
    format: str = ImageFormat.PNG.value  # an image's (png, jpeg, webp) or a model file's (safetensors)
    path: Path | None = None
    name: str = ""
    document: Any = None
    parameters: str | None = None  # an image's A1111 infotext, for its PNG text chunk


class JobContext:
    """The narrow `WorkContext` a running job gets: inputs, progress, cancel, outputs, checkpoints.

    Progress and metrics are only noted here; the worker's lease thread writes them (see
    `Worker._lease`). Outputs are kept until the job succeeds and then stored all together.
    """

    def __init__(self, jobs: JobService, blobs: BlobStore, claim: Claim) -> None:
        self.jobs = jobs
        self.blobs = blobs
        self.claim = claim
        self.outputs: list[Output] = []
        self._canceled = threading.Event()
        self._lost = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._metrics: dict[str, float] | None = None
        self._scratch: Path | None = None
        self._previewed = False

    @property
    def checkpoint_key(self) -> str:
        job = self.claim.job
        return f"work/{job.tenant_id}/{job.id}/checkpoint.tar"

    def load_image(self, ref: ImageRef) -> Image.Image:
        return open_image(self.blobs.get(ref.blob_key))

    def report_progress(self, image_index: int, fraction: float) -> None:
        with self._lock:
            self._pending[str(image_index)] = round(min(max(fraction, 0.0), 1.0), 4)

    def report_metrics(self, metrics: Mapping[str, float]) -> None:
        with self._lock:
            self._metrics = {k: float(v) for k, v in metrics.items()}

    def report_preview(self, image: Image.Image) -> None:
        """Kept as a small PNG blob beside the job's outputs, replaced by each newer preview."""
        self.blobs.put(self.preview_key, encode_image(image, "png"), "image/png")
        self._previewed = True

    @property
    def preview_key(self) -> str:
        return preview_key(self.claim.job.tenant_id, self.claim.job.id)

    def save_image(self, image: Image.Image, seed: int, finish_reason: str = "SUCCESS",
                   format: ImageFormat = ImageFormat.PNG, *, parameters: str | None = None) -> None:
        self.outputs.append(Output(ArtifactKind.IMAGE, image=image, seed=seed, finish_reason=finish_reason,
                                   format=format.value, parameters=parameters))

    def save_model_file(self, path: Path, *, name: str, format: str) -> None:
        # Moved into this job's keeping (a rename on one filesystem): the handler may clean up its own
        # folder before the outputs are stored.
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"diffusiond-{self.claim.job.id}-"))
        kept = self._scratch / f"{len(self.outputs)}-{path.name}"
        if path.is_dir():  # a diffusers folder (a full fine-tune): one self-describing file, as models are kept
            kept, format = single_file(path, kept.with_suffix(".safetensors")), "safetensors"
        else:
            shutil.move(path, kept)
        self.outputs.append(Output(ArtifactKind.MODEL, path=kept, name=name, format=format))

    def release(self) -> None:
        """Drop what the job kept in memory and on disk once its outcome is recorded."""
        self.outputs.clear()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        if self._previewed:
            self.blobs.delete(self.preview_key)

    def save_document(self, name: str, data: Any) -> None:
        self.outputs.append(Output(ArtifactKind.DOCUMENT, name=name, document=data))

    def save_checkpoint(self, folder: Path) -> None:
        """Pack `folder` and store it where the next attempt (on any machine) finds it."""
        with tempfile.TemporaryDirectory(prefix="diffusiond-ckpt-") as tmp:
            archive = Path(tmp) / "checkpoint.tar"
            with tarfile.open(archive, "w") as tar:
                for path in sorted(folder.iterdir()):
                    if path.is_file():  # flat folders of plain files only: nothing to unpack unsafely
                        tar.add(path, arcname=path.name)
            self.blobs.put_file(self.checkpoint_key, archive, "application/x-tar")

    def load_checkpoint(self, dest: Path) -> bool:
        if not self.blobs.exists(self.checkpoint_key):
            return False
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="diffusiond-ckpt-") as tmp:
            archive = Path(tmp) / "checkpoint.tar"
            self.blobs.get_file(self.checkpoint_key, archive)
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    if not member.isfile() or "/" in member.name or member.name.startswith("."):
                        raise InvalidParams(f"checkpoint of job {self.claim.job.id} holds {member.name!r}")
                    source = tar.extractfile(member)
                    assert source is not None
                    with source, (dest / member.name).open("wb") as out:
                        shutil.copyfileobj(source, out)
        return True

    def renewal(self) -> Renewal:
        """The lease renewal to write next, carrying the progress noted since the last one."""
        with self._lock:
            pending, self._pending = self._pending, {}
            metrics, self._metrics = self._metrics, None
        return Renewal(self.claim.job.id, self.claim.attempt, pending, metrics)

    def stop(self) -> None:
        """The service said stop: the job was canceled, or this attempt lost its lease."""
        job = self.jobs.get(None, self.claim.job.id)
        if job.attempt != self.claim.attempt or job.status.terminal:
            self._lost.set()
        self._canceled.set()

    def is_canceled(self) -> bool:
        return self._canceled.is_set()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()


class Worker:
    """Claims and runs jobs one at a time (or a batch of compatible generations) until stopped."""

    def __init__(self, jobs: JobService, blobs: BlobStore, handlers: Handlers, worker_id: str, *,
                 endpoint: str = "default", kinds: Sequence[JobKind] | None = None, poll_interval: float = 0.2,
                 heartbeat_interval: float | None = None, batch_size: int = 1,
                 batch_window: float = 0.005, progress_interval: float = PROGRESS_INTERVAL,
                 layouts: Mapping[str, OutputLayout] | None = None) -> None:
        self.jobs = jobs
        self.layouts = dict(layouts or {})  # by dialect
        self.blobs = blobs
        self.handlers = handlers
        self.kinds = tuple(kinds if kinds is not None else handlers)  # what this worker claims
        self.worker_id = worker_id
        self.endpoint = endpoint
        self.poll_interval = poll_interval
        # Renew well inside the lease: a lease that lapses while the job still runs would hand
        # the job to another attempt.
        self.heartbeat_interval = heartbeat_interval or max(0.2, jobs.lease.total_seconds() / 4)
        self.progress_interval = progress_interval
        self.batch_size = batch_size
        self.batch_window = batch_window  # how long a lone batchable job waits for company
        # The window adapts: once a wait caught no company (a lone client), lone jobs start at once,
        # with one probing wait a second, until a claim shows concurrent jobs again.
        self._company = True
        self._last_wait = 0.0
        self.wake = threading.Event()
        # PNG encoding, the blob writes and the success record run here, off the critical path:
        # the worker claims its next job while the last one's outputs are stored.
        self._storer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"diffusiond-store-{worker_id}")

    def run_forever(self, stop: StopFlag) -> None:
        try:
            while not stop.is_set():
                try:
                    worked = self.run_once()
                except Exception:  # never let one bad job kill the worker thread
                    log.exception("worker %s: unexpected error", self.worker_id)
                    worked = False
                if not worked:
                    self.wake.wait(self.poll_interval)
                    self.wake.clear()
        finally:
            self.drain()

    def drain(self) -> None:
        """Wait until every finished job's outputs are stored and recorded."""
        self._storer.submit(lambda: None).result()

    def run_once(self) -> bool:
        claims = self.jobs.claim(self.worker_id, endpoint=self.endpoint, max_jobs=self.batch_size, kinds=self.kinds)
        if not claims:
            return False
        first = spec_from_json(claims[0].job.spec_json, claims[0].job.kind)
        key = batch_key(first) if isinstance(first, GenerateSpec) else ""
        if len(claims) > 1:
            self._company = True
        elif key and self.batch_size > 1 and self.batch_window > 0 and self._worth_waiting():
            time.sleep(self.batch_window)  # let near-simultaneous requests join the batch
            claims += self.jobs.claim(self.worker_id, endpoint=self.endpoint,
                                      max_jobs=self.batch_size - len(claims), batch_key=key, kinds=self.kinds)
            self._company = len(claims) > 1
        self._run(claims)
        return True

    def _worth_waiting(self) -> bool:
        now = time.monotonic()
        if self._company or now - self._last_wait >= 1.0:
            self._last_wait = now
            return True
        return False

    def _run(self, claims: list[Claim]) -> None:
        ctxs = [JobContext(self.jobs, self.blobs, claim) for claim in claims]
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._lease, args=(ctxs, stop_beat), daemon=True)
        beat.start()
        try:
            outcomes = self._execute(claims, ctxs)
            for ctx, outcome in zip(ctxs, outcomes, strict=True):
                self._finish(ctx, outcome)
        finally:
            stop_beat.set()

    def _execute(self, claims: list[Claim], ctxs: list[JobContext]) -> list[BaseException | None]:
        """Run the claimed jobs on their kind's handler; each outcome is None (done) or an error."""
        kind = claims[0].job.kind
        handler = self.handlers.get(kind)
        if handler is None:
            error = InvalidParams(f"this worker cannot run {kind.value} jobs", code="unsupported_kind")
            return [error for _ in claims]
        try:
            specs: list[WorkSpec] = [spec_from_json(c.job.spec_json, c.job.kind) for c in claims]
        except Exception as e:  # a row this version cannot read fails alone, with a reason
            return [e for _ in claims]
        if len(claims) > 1 and isinstance(handler, BatchHandler):
            return handler.run_batch(list(zip(specs, ctxs, strict=True)))
        return [self._run_one(handler, spec, ctx) for spec, ctx in zip(specs, ctxs, strict=True)]

    @staticmethod
    def _run_one(handler: Handler, spec: WorkSpec, ctx: JobContext) -> BaseException | None:
        try:
            handler.run(spec, ctx)
        except Exception as e:
            return e
        return None

    def _finish(self, ctx: JobContext, outcome: BaseException | None) -> None:
        """Record one job's outcome: its outputs, a cancel, or a failure with a code."""
        claim = ctx.claim
        if outcome is None:
            self._storer.submit(self._store_logged, ctx)
            return
        ctx.release()
        if isinstance(outcome, Canceled):
            self.jobs.mark_canceled(claim.job.id, claim.attempt)
            self._forget_checkpoint(ctx)
            return
        if isinstance(outcome, DomainError):
            error = outcome
        else:
            log.error("job %s failed: %s", claim.job.id, "".join(traceback.format_exception(outcome)))
            error = DomainError(f"{type(outcome).__name__}: {outcome}", code="engine_error")
        layout = self.layouts.get(claim.job.dialect)
        if layout is not None:
            try:
                layout.finished(claim.job, claim.attempt, [], error)
            except Exception:  # the failure itself is what must be recorded
                log.exception("worker %s: writing the result file of job %s failed", self.worker_id, claim.job.id)
        self.jobs.fail(claim.job.id, claim.attempt, error.code, error.message)
        self._forget_checkpoint(ctx)

    def _store_logged(self, ctx: JobContext) -> None:
        try:
            self._store(ctx)
        except Exception:  # the job stays running; its lease lapses and another attempt runs it
            log.exception("worker %s: storing the outputs of job %s failed", self.worker_id, ctx.claim.job.id)

    def _lease(self, ctxs: list[JobContext], stop: threading.Event) -> None:
        """While a batch runs: write its progress and renew its leases, one transaction at a time."""
        last = time.monotonic()
        while not stop.wait(min(self.progress_interval, self.heartbeat_interval)):
            live = [ctx for ctx in ctxs if not ctx.is_canceled()]
            renewals = [ctx.renewal() for ctx in live]
            moved = any(r.progress or r.metrics for r in renewals)
            if time.monotonic() - last < self.heartbeat_interval and not moved:
                continue
            last = time.monotonic()
            try:
                stop_ids = self.jobs.renew(renewals)
                for ctx in live:
                    if ctx.claim.job.id in stop_ids:
                        ctx.stop()
            except Exception:  # the next beat tries again; the lease outlasts several misses
                log.exception("worker %s: renewing leases failed", self.worker_id)

    def _store(self, ctx: JobContext) -> None:
        claim = ctx.claim
        job = claim.job
        written: list[NewArtifact] = []
        committed = False
        extra: list[str] = []
        layout = self.layouts.get(job.dialect)
        try:
            for i, output in enumerate(ctx.outputs):
                written.append(self._put(f"outputs/{job.tenant_id}/{job.id}/{claim.attempt}-{i}", output,
                                         self._image_key(layout, job, claim.attempt, i, output)))
            if layout is not None:
                extra = layout.finished(job, claim.attempt, written, None)
            committed = self.jobs.succeed(job.id, claim.attempt, written)
        finally:
            ctx.release()
            if not committed:  # fenced out or failed: leave no orphan files behind
                for key in [a.blob_key for a in written] + extra:
                    self.blobs.delete(key)
        if committed:
            self._forget_checkpoint(ctx)

    @staticmethod
    def _image_key(layout: OutputLayout | None, job: Job, attempt: int, index: int, output: Output) -> str | None:
        if layout is None or output.kind is not ArtifactKind.IMAGE:
            return None
        return layout.image_key(job, attempt, index, IMAGE_FORMATS[output.format][1])

    def _put(self, stem: str, output: Output, key: str | None = None) -> NewArtifact:
        """Store one output as a blob (at `key`, else under `stem`) and describe it."""
        if output.kind is ArtifactKind.IMAGE:
            assert output.image is not None
            mime, extension = IMAGE_FORMATS[output.format]
            key = key or f"{stem}.{extension}"
            text = {"parameters": output.parameters} if output.parameters else None
            self.blobs.put(key, encode_image(output.image, output.format, text=text), mime)
            return NewArtifact.image(key, output.image.width, output.image.height, output.seed, output.finish_reason,
                                     mime=mime)
        if output.kind is ArtifactKind.MODEL:
            assert output.path is not None
            key = f"{stem}-{key_safe(output.name)}"
            if output.format == "safetensors" and not key.lower().endswith(".safetensors"):
                key += ".safetensors"  # loaders tell a model file's format by its name
            self.blobs.put_file(key, output.path, "application/octet-stream")
            return NewArtifact(ArtifactKind.MODEL, key, "application/octet-stream", name=output.name,
                               format=output.format, size=output.path.stat().st_size, sha256=file_sha256(output.path))
        import json

        data = json.dumps(output.document, sort_keys=True).encode()
        key = f"{stem}-{key_safe(output.name)}"
        self.blobs.put(key, data, "application/json")
        return NewArtifact(ArtifactKind.DOCUMENT, key, "application/json", name=output.name, size=len(data))

    def _forget_checkpoint(self, ctx: JobContext) -> None:
        """A job that ended (not one whose attempt was lost) needs no resumable state any more."""
        if ctx.lost or ctx.claim.job.kind is JobKind.GENERATE:
            return
        try:
            self.blobs.delete(ctx.checkpoint_key)
        except Exception:
            log.exception("worker %s: deleting the checkpoint of job %s failed", self.worker_id, ctx.claim.job.id)


def key_safe(name: str) -> str:
    """A file name a job chose (a model's display name, say) as the last part of a blob key: letters,
    digits, `.`, `_` and `-` only (every blob store takes those), at most 100 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:100] or "file"


def preview_key(tenant_id: str, job_id: str) -> str:
    """Where a running job's latest live preview is kept (see `JobContext.report_preview`)."""
    return f"outputs/{tenant_id}/{job_id}/preview.png"


def single_file(folder: Path, out: Path) -> Path:
    """A diffusers pipeline folder as one .safetensors file with its configs in the metadata (the
    family its model_index names as `diffusiond_family`, else `custom`); the folder is removed."""
    import json

    from diffusiond.engine.single_file import export_single_file

    index = json.loads((folder / "model_index.json").read_text()) if (folder / "model_index.json").is_file() else {}
    export_single_file(folder, out, write_config=False, embed_family=str(index.get("diffusiond_family", "custom")))
    shutil.rmtree(folder, ignore_errors=True)
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
