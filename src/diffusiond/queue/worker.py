"""A worker: claims jobs, runs them on the engine, stores outputs, reports the outcome.

The engine only executes; everything it does reaches the job row through `JobService`, fenced by
the attempt number, so a worker whose lease was taken over cannot write.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.images import encode_png, open_image
from diffusiond.domain.errors import DomainError
from diffusiond.domain.params import ImageRef, JobSpec
from diffusiond.domain.spec_codec import spec_from_json
from diffusiond.engine.context import Canceled, GeneratedImage, WorkContext
from diffusiond.queue.job_service import Claim, JobService, NewArtifact, Renewal, batch_key_for

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)
# Seconds between progress writes. A batch's progress goes in one transaction, written by the
# worker's lease thread, so the denoising loop never waits on the database.
PROGRESS_INTERVAL = 0.5


class Runner(Protocol):
    """What a worker needs of the engine."""

    def run(self, spec: JobSpec, ctx: WorkContext) -> list[GeneratedImage]: ...

    def run_batch(
        self, items: Sequence[tuple[JobSpec, WorkContext]]
    ) -> list[list[GeneratedImage] | BaseException]:
        """Run jobs that may share a forward pass; each entry is that job's images or error."""
        ...


class JobContext:
    """The narrow `WorkContext` a running job gets: inputs, progress, cancel.

    Progress is only noted here; the worker's lease thread writes it (see `Worker._renew`).
    """

    def __init__(self, jobs: JobService, blobs: BlobStore, claim: Claim) -> None:
        self.jobs = jobs
        self.blobs = blobs
        self.claim = claim
        self._canceled = threading.Event()
        self._lost = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}

    def load_image(self, ref: ImageRef) -> Image.Image:
        return open_image(self.blobs.get(ref.blob_key))

    def report_progress(self, image_index: int, fraction: float) -> None:
        with self._lock:
            self._pending[str(image_index)] = round(min(max(fraction, 0.0), 1.0), 4)

    def renewal(self) -> Renewal:
        """The lease renewal to write next, carrying the progress noted since the last one."""
        with self._lock:
            pending, self._pending = self._pending, {}
        return Renewal(self.claim.job.id, self.claim.attempt, pending)

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
    """Claims and runs jobs one at a time (or a batch of compatible ones) until stopped."""

    def __init__(self, jobs: JobService, blobs: BlobStore, runner: Runner, worker_id: str, *,
                 endpoint: str = "default", poll_interval: float = 0.2,
                 heartbeat_interval: float | None = None, batch_size: int = 1,
                 batch_window: float = 0.005, progress_interval: float = PROGRESS_INTERVAL) -> None:
        self.jobs = jobs
        self.blobs = blobs
        self.runner = runner
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
        # PNG encoding, the blob write and the success record run here, off the critical path:
        # the worker claims its next job while the last one's outputs are stored.
        self._storer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"diffusiond-store-{worker_id}")

    def run_forever(self, stop: threading.Event) -> None:
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
        claims = self.jobs.claim(self.worker_id, endpoint=self.endpoint, max_jobs=self.batch_size)
        if not claims:
            return False
        key = batch_key_for(spec_from_json(claims[0].job.spec_json))
        if len(claims) > 1:
            self._company = True
        elif key and self.batch_size > 1 and self.batch_window > 0 and self._worth_waiting():
            time.sleep(self.batch_window)  # let near-simultaneous requests join the batch
            claims += self.jobs.claim(self.worker_id, endpoint=self.endpoint,
                                      max_jobs=self.batch_size - len(claims), batch_key=key)
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
        specs = [spec_from_json(claim.job.spec_json) for claim in claims]
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._lease, args=(ctxs, stop_beat), daemon=True)
        beat.start()
        try:
            if len(claims) == 1:
                outcomes: list[list[GeneratedImage] | BaseException] = [self._run_one(specs[0], ctxs[0])]
            else:
                outcomes = self.runner.run_batch(list(zip(specs, ctxs, strict=True)))  # type: ignore[arg-type]
            for claim, ctx, outcome in zip(claims, ctxs, outcomes, strict=True):
                self._finish(claim, ctx, outcome)
        finally:
            stop_beat.set()

    def _run_one(self, spec: JobSpec, ctx: JobContext) -> list[GeneratedImage] | BaseException:
        try:
            return self.runner.run(spec, ctx)  # type: ignore[arg-type]  # WorkContext grew at f4dbb2f
        except Exception as e:
            return e

    def _finish(self, claim: Claim, ctx: JobContext, outcome: list[GeneratedImage] | BaseException) -> None:
        """Record one job's outcome: its outputs, a cancel, or a failure with a code."""
        if isinstance(outcome, Canceled):
            self.jobs.mark_canceled(claim.job.id, claim.attempt)
        elif isinstance(outcome, DomainError):
            self.jobs.fail(claim.job.id, claim.attempt, outcome.code, outcome.message)
        elif isinstance(outcome, BaseException):
            log.error("job %s failed: %s", claim.job.id,
                      "".join(traceback.format_exception(outcome)))
            self.jobs.fail(claim.job.id, claim.attempt, "engine_error", f"{type(outcome).__name__}: {outcome}")
        else:
            self._storer.submit(self._store_logged, claim, outcome)

    def _store_logged(self, claim: Claim, images: Sequence[GeneratedImage]) -> None:
        try:
            self._store(claim, images)
        except Exception:  # the job stays running; its lease lapses and another attempt runs it
            log.exception("worker %s: storing the outputs of job %s failed", self.worker_id, claim.job.id)

    def _lease(self, ctxs: list[JobContext], stop: threading.Event) -> None:
        """While a batch runs: write its progress and renew its leases, one transaction at a time."""
        last = time.monotonic()
        while not stop.wait(min(self.progress_interval, self.heartbeat_interval)):
            live = [ctx for ctx in ctxs if not ctx.is_canceled()]
            renewals = [ctx.renewal() for ctx in live]
            if time.monotonic() - last < self.heartbeat_interval and not any(r.progress for r in renewals):
                continue
            last = time.monotonic()
            try:
                stop_ids = self.jobs.renew(renewals)
                for ctx in live:
                    if ctx.claim.job.id in stop_ids:
                        ctx.stop()
            except Exception:  # the next beat tries again; the lease outlasts several misses
                log.exception("worker %s: renewing leases failed", self.worker_id)

    def _store(self, claim: Claim, images: Sequence[GeneratedImage]) -> None:
        job = claim.job
        written: list[NewArtifact] = []
        try:
            for i, g in enumerate(images):
                key = f"outputs/{job.tenant_id}/{job.id}/{claim.attempt}-{i}.png"
                self.blobs.put(key, encode_png(g.image), "image/png")
                written.append(NewArtifact(key, "image/png", g.image.width, g.image.height, g.seed,
                                           g.finish_reason))
            committed = self.jobs.succeed(job.id, claim.attempt, written)
        except BaseException:
            committed = False
            raise
        finally:
            if not committed:  # fenced out or failed: leave no orphan files behind
                for a in written:
                    self.blobs.delete(a.blob_key)
