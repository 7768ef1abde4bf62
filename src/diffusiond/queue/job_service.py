"""The job service: submit, read, cancel, and the worker-side transitions, for every kind of work.

Every transition is one transaction that changes the job row and writes its side effects with it:
ledger entries (reserve, release, capture), outbox rows (webhooks) and, on success, what the job's
kind makes of its outputs (a trained LoRA becomes a registered model). Worker-side transitions are
fenced by attempt number: a stale attempt (its lease expired and the job was re-queued) cannot
write anything. Dialects only translate: the service prices a job, picks its random seed and checks
its notify URL.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, case, func, insert, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from diffusiond.domain.batching import batch_key
from diffusiond.domain.clock import now_utc
from diffusiond.domain.errors import Conflict, InsufficientCredits, InvalidParams, NotFound, RateLimited
from diffusiond.domain.jobs import (
    Artifact,
    ArtifactKind,
    DocumentArtifact,
    ImageArtifact,
    Job,
    JobKind,
    JobStatus,
    ModelFileArtifact,
)
from diffusiond.domain.params import Diffusion, GenerateSpec, Txt2Img
from diffusiond.domain.pricing import price
from diffusiond.domain.seeds import random_seed
from diffusiond.domain.spec_codec import WorkSpec, kind_of, spec_to_json
from diffusiond.domain.training import TrainSpec
from diffusiond.domain.webhooks import WebhookEnvelope, WebhookRenderer, core_body
from diffusiond.queue.events import JobEvents
from diffusiond.store.database import Database, as_utc
from diffusiond.store.tables import ArtifactRow, JobRow, LedgerRow, OutboxRow, TenantRow
from diffusiond.webhooks.ssrf import UrlPolicy

# What a kind of work makes of a succeeded job, in the transition's transaction (e.g. register the
# model a training made). Built in services.py.
SuccessEffect = Callable[[Session, Job], None]
QUEUE_FULL_RETRY_SECONDS = 5.0  # a full queue's Retry-After: a guess at when a queued job has started


@dataclass(frozen=True)
class NewArtifact:
    """An output a worker has stored and asks to attach to its job."""

    kind: ArtifactKind
    blob_key: str
    mime: str
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    finish_reason: str = "SUCCESS"
    name: str | None = None
    format: str | None = None
    size: int | None = None
    sha256: str | None = None

    @classmethod
    def image(cls, blob_key: str, width: int, height: int, seed: int, finish_reason: str = "SUCCESS",
              mime: str = "image/png") -> NewArtifact:
        return cls(ArtifactKind.IMAGE, blob_key, mime, width=width, height=height, seed=seed,
                   finish_reason=finish_reason)


@dataclass(frozen=True)
class NotifyTarget:
    """Where a job's webhooks go, and in which envelope (`standard`, or `sns`: webhooks/formats.py)."""

    url: str
    format: str = "standard"


@dataclass(frozen=True)
class Claim:
    job: Job
    attempt: int


@dataclass(frozen=True)
class Renewal:
    """A running attempt's heartbeat, with the progress it made since the last one (may be none)."""

    job_id: str
    attempt: int
    progress: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] | None = None  # the latest figures of a long job, when new


def with_seed(spec: WorkSpec) -> WorkSpec:
    """The spec with a concrete seed where it asked for a random one (0)."""
    if isinstance(spec, GenerateSpec | TrainSpec) and spec.seed == 0:
        return replace(spec, seed=random_seed())
    return spec


class JobService:
    """The one place jobs change state."""

    def __init__(self, db: Database, events: JobEvents, *, lease_seconds: float = 60.0,
                 max_attempts: int = 3, max_queued_per_tenant: int = 0,
                 url_policy: UrlPolicy | None = None,
                 webhook_renderers: Mapping[str, WebhookRenderer] | None = None,
                 success_effects: Mapping[JobKind, SuccessEffect] | None = None) -> None:
        self.db = db
        self.events = events
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.max_queued_per_tenant = max_queued_per_tenant  # 0: no limit
        self.url_policy = url_policy or UrlPolicy()
        # dialect -> its webhook body; a dialect without one gets the core's body
        self.webhook_renderers: dict[str, WebhookRenderer] = dict(webhook_renderers or {})
        self.success_effects: dict[JobKind, SuccessEffect] = dict(success_effects or {})
        self._insert_job = _INSERT_JOB[db.engine.dialect.name]
        # Called after a commit that wrote webhook outbox rows (the dispatcher wakes on it).
        self.on_outbox: Callable[[], None] | None = None

    # ---- client side -------------------------------------------------------------------------

    def price(self, spec: WorkSpec) -> int:
        """What a job of this spec costs, in millicredits (without submitting it)."""
        return price(spec)

    def submit(self, tenant_id: str, spec: WorkSpec, *, dialect: str, request_id: str | None = None,
               request_hash: str | None = None, notify_url: str | None = None,
               endpoint: str = "default", parent_id: str | None = None,
               notify_targets: Sequence[NotifyTarget] = (), dialect_data: Mapping[str, Any] | None = None) -> Job:
        """Create a queued job and reserve its credits, or return the job `request_id` made.

        `notify_targets` are more webhook targets (a tenant's registered callbacks), each with its
        own outbox row per transition; `dialect_data` is kept with the job for its dialect to read.

        Before the transaction: the notify URL is checked, a random seed chosen where the spec asks
        for one, and the job priced. Then one transaction: the row (or, for a `request_id` already
        used, the job it made), the tenant's limit of queued jobs, the outbox entry, the job's place
        in the queue and, last, the reservation. Every submit of a tenant updates the tenant's row,
        so on PostgreSQL the transactions queue on that row's lock from the UPDATE until COMMIT;
        taking it last keeps that window to one statement and the commit.
        """
        if notify_url:
            self.url_policy.check(notify_url)
        for target in notify_targets:
            self.url_policy.check(target.url)
        spec = with_seed(spec)
        cost = price(spec)
        job_id = uuid.uuid4().hex
        with self.db.session() as s:
            now = now_utc()
            values: dict[str, Any] = dict(
                id=job_id, tenant_id=tenant_id, request_id=request_id, request_hash=request_hash,
                kind=kind_of(spec).value, dialect=dialect, spec=spec_to_json(spec),
                batch_key=batch_key(spec) if isinstance(spec, GenerateSpec) else "",
                endpoint=endpoint, status=JobStatus.QUEUED.value, attempt=0, progress={},
                credits_reserved=cost, credits_charged=0, notify_url=notify_url, cancel_requested=False,
                parent_id=parent_id, dialect_data=dict(dialect_data) if dialect_data is not None else None,
                notify_targets=[{"url": t.url, "format": t.format} for t in notify_targets] or None,
                created_at=now, updated_at=now,
            )
            # A plain INSERT (the ORM's unit of work costs more than the rest of the submit) that
            # does nothing when the tenant already used this request_id. On PostgreSQL a concurrent
            # submit with the same request_id waits here until the first commits or rolls back.
            if s.execute(self._insert_job, values).rowcount != 1:  # type: ignore[attr-defined]
                existing = self._by_request(s, tenant_id, request_id, request_hash)
                if existing is None:  # the job that held the request_id was deleted meanwhile
                    raise Conflict(f"requestId {request_id!r} is in use; retry", code="idempotency_conflict")
                return self._to_job(s, existing, with_queue=True)
            self._check_queued(s, tenant_id)
            row = JobRow(**values)  # transient: only read below
            self._outbox(s, row, "job.queued")
            job = self._to_job(s, row, with_queue=True)  # flushes the outbox row first
            self._reserve(s, tenant_id, job_id, cost)
        self.events.publish(job_id)
        return job

    def _by_request(self, s: Session, tenant_id: str, request_id: str | None,
                    request_hash: str | None) -> JobRow | None:
        if request_id is None:
            return None
        row = s.scalar(_BY_REQUEST, {"tenant": tenant_id, "request": request_id})
        if row is not None and request_hash is not None and row.request_hash != request_hash:
            raise Conflict(f"requestId {request_id!r} was already used with a different body",
                           code="idempotency_conflict")
        return row

    def submit_failed(self, tenant_id: str, *, dialect: str, request_id: str, request_hash: str | None,
                      code: str, message: str, notify_targets: Sequence[NotifyTarget] = (),
                      dialect_data: Mapping[str, Any] | None = None, job_id: str | None = None) -> Job:
        """Record a request a dialect accepted but could not run as a job that failed at once.

        For queue APIs that answer every well-formed task with 200 and report what went wrong
        through the task's result and callbacks (the EKS API). Nothing is reserved or charged; the
        terminal webhooks are queued in the same transaction. A `request_id` already used returns
        the job it made.
        """
        for target in notify_targets:
            self.url_policy.check(target.url)
        job_id = job_id or uuid.uuid4().hex
        placeholder = GenerateSpec(stages=(Txt2Img(Diffusion(model="", prompts=())),))
        with self.db.session() as s:
            now = now_utc()
            values: dict[str, Any] = dict(
                id=job_id, tenant_id=tenant_id, request_id=request_id, request_hash=request_hash,
                kind=JobKind.GENERATE.value, dialect=dialect, spec=spec_to_json(placeholder), batch_key="",
                endpoint="default", status=JobStatus.FAILED.value, attempt=0, progress={}, credits_reserved=0,
                credits_charged=0, notify_url=None, cancel_requested=False, error_code=code, error_message=message,
                dialect_data=dict(dialect_data) if dialect_data is not None else None,
                notify_targets=[{"url": t.url, "format": t.format} for t in notify_targets] or None,
                created_at=now, updated_at=now, finished_at=now,
            )
            if s.execute(self._insert_job, values).rowcount != 1:  # type: ignore[attr-defined]
                existing = self._by_request(s, tenant_id, request_id, request_hash)
                if existing is None:
                    raise Conflict(f"requestId {request_id!r} is in use; retry", code="idempotency_conflict")
                return self._to_job(s, existing)
            row = s.get(JobRow, job_id)
            assert row is not None
            self._outbox(s, row, "job.failed", terminal=True)
            job = self._to_job(s, row)
        self.events.publish(job_id)
        return job

    def get_by_request(self, tenant_id: str, request_id: str) -> Job:
        """The tenant's job that `request_id` made (not soft-deleted), or NotFound."""
        with self.db.read() as s:
            row = s.scalar(_BY_REQUEST, {"tenant": tenant_id, "request": request_id})
            if row is None or row.deleted_at is not None:
                raise NotFound(f"request {request_id} not found")
            return self._to_job(s, row, with_queue=True)

    def _check_queued(self, s: Session, tenant_id: str) -> None:
        """Refuse a job beyond the tenant's limit of queued jobs (the new one is counted).

        Counted before the tenant's row is locked (see `submit`): on PostgreSQL, submits of one
        tenant in flight at the same moment do not see each other, so the queue may pass the limit
        by at most that many. On SQLite submits are serialised and the limit is exact.
        """
        limit = self.max_queued_per_tenant
        if limit and (s.scalar(_TENANT_QUEUED, {"tenant": tenant_id}) or 0) > limit:
            raise RateLimited(f"this account's queue is full ({limit} jobs waiting, the most allowed); "
                              "submit more once some have started", code="too_many_queued_jobs",
                              retry_after=QUEUE_FULL_RETRY_SECONDS, policy="queue", quota=limit)

    def _reserve(self, s: Session, tenant_id: str, job_id: str, cost: int) -> None:
        # The ledger entry first and the guarded UPDATE last (see `submit`). The UPDATE is atomic on
        # SQLite and PostgreSQL: two concurrent reservations cannot both pass the balance check, and
        # a failed one raises, which rolls the ledger entry back with the rest.
        s.execute(_INSERT_LEDGER, {"tenant_id": tenant_id, "job_id": job_id, "entry": "reserve", "amount": -cost})
        result = s.execute(_RESERVE, {"tenant": tenant_id, "cost": cost})
        if result.rowcount != 1:  # type: ignore[attr-defined]
            balance = s.scalar(select(TenantRow.balance).where(TenantRow.id == tenant_id)) or 0
            raise InsufficientCredits(
                f"this request costs {cost / 1000:g} credits but the balance is {balance / 1000:g}"
            )

    def get(self, tenant_id: str | None, job_id: str, *, with_queue: bool = False) -> Job:
        """The job, or NotFound when it does not exist or belongs to another tenant.

        `with_queue` also reads a queued job's place in the queue, in the same transaction.
        """
        with self.db.read() as s:
            row = s.get(JobRow, job_id)
            if row is None or (tenant_id is not None and (row.tenant_id != tenant_id or row.deleted_at is not None)):
                raise NotFound(f"job {job_id} not found")
            return self._to_job(s, row, with_queue=with_queue)

    def list(self, tenant_id: str, *, status: JobStatus | None = None, limit: int = 20, offset: int = 0,
             parent_id: str | None = None, dialect: str | None = None,
             kinds: Sequence[JobKind] | None = None) -> tuple[builtins.list[Job], int]:
        """The tenant's jobs (not soft-deleted), newest first, and the total matching; queued jobs carry
        their rank. `parent_id`, `dialect` and `kinds` narrow it to one dialect object's jobs."""
        with self.db.read() as s:
            q = select(JobRow).where(JobRow.tenant_id == tenant_id, JobRow.deleted_at.is_(None))
            if status is not None:
                q = q.where(JobRow.status == status.value)
            if kinds is not None:
                q = q.where(JobRow.kind.in_([k.value for k in kinds]))
            if parent_id is not None:
                q = q.where(JobRow.parent_id == parent_id)
            if dialect is not None:
                q = q.where(JobRow.dialect == dialect)
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset)).all()
            ranks = self._queue_positions(s, [r for r in rows if r.status == JobStatus.QUEUED.value])
            return [replace(self._to_job(s, r), queue_position=ranks.get(r.id)) for r in rows], total

    @staticmethod
    def _queue_positions(s: Session, rows: Sequence[JobRow]) -> dict[str, tuple[int, int]]:
        """(rank, length) of several queued jobs: two queries, however many jobs."""
        if not rows:
            return {}
        queued = _table(JobRow).alias("queued")
        ahead = (select(func.count()).select_from(queued)
                 .where(queued.c.status == JobStatus.QUEUED.value, queued.c.endpoint == JobRow.endpoint,
                        queued.c.created_at < JobRow.created_at)
                 .scalar_subquery())
        ids = [r.id for r in rows]
        earlier = {job_id: int(n) for job_id, n in s.execute(select(JobRow.id, ahead).where(JobRow.id.in_(ids)))}
        lengths = {endpoint: int(n) for endpoint, n in s.execute(
            select(JobRow.endpoint, func.count())
            .where(JobRow.status == JobStatus.QUEUED.value, JobRow.endpoint.in_({r.endpoint for r in rows}))
            .group_by(JobRow.endpoint))}
        return {r.id: (earlier[r.id] + 1, lengths[r.endpoint]) for r in rows}

    def queue_position(self, job: Job, endpoint: str = "default") -> tuple[int, int]:
        """(rank, length) of the queue the job waits in; rank 1 is next, 0 once it left the queue."""
        if job.queue_position is not None:
            return job.queue_position
        with self.db.read() as s:
            return self._queue_position(s, endpoint, job.created_at if job.status is JobStatus.QUEUED else None)

    @staticmethod
    def _queue_position(s: Session, endpoint: str, created_at: datetime | None) -> tuple[int, int]:
        # One scan of the (status, endpoint, created_at) index answers both numbers.
        if created_at is None:
            return 0, s.scalar(_QUEUE_LENGTH, {"endpoint": endpoint}) or 0
        length, ahead = s.execute(_QUEUE_RANK, {"endpoint": endpoint, "created_at": created_at}).one()
        return int(ahead) + 1, int(length)

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        """Queued jobs stop at once; running ones are flagged and stop within a denoising step."""
        with self.db.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"job {job_id} not found")
            status = JobStatus(row.status)
            if status is JobStatus.QUEUED:
                self._finish(s, row, JobStatus.CANCELED, code="canceled", message="canceled by client")
            elif status is JobStatus.RUNNING:
                row.cancel_requested = True
                row.updated_at = now_utc()
            elif status.terminal and status is not JobStatus.CANCELED:
                raise InvalidParams(f"job {job_id} already {status.value}", code="job_finished")
        self.events.publish(job_id)
        return self.get(tenant_id, job_id)

    def fail_queued(self, endpoints: Sequence[str], code: str, message: str) -> int:
        """Fail every job still queued for these endpoints (they were deleted or failed), releasing
        their credits; running jobs are left to finish. Returns how many failed."""
        if not endpoints:
            return 0
        queued = (JobRow.status == JobStatus.QUEUED.value, JobRow.endpoint.in_(list(endpoints)))
        with self.db.read() as s:  # the common answer, none, without taking SQLite's write lock
            if s.scalar(select(JobRow.id).where(*queued).limit(1)) is None:
                return 0
        with self.db.session() as s:
            rows = list(s.scalars(select(JobRow).where(*queued).order_by(JobRow.id)
                                  .with_for_update(skip_locked=True)))
            for row in rows:
                self._finish(s, row, JobStatus.FAILED, code=code, message=message)
        for row in rows:
            self.events.publish(row.id)
        return len(rows)

    def hide(self, tenant_id: str, job_id: str) -> None:
        """Soft delete: gone from lists and lookups, kept in the database; a running job keeps running."""
        with self.db.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.tenant_id != tenant_id or row.deleted_at is not None:
                raise NotFound(f"job {job_id} not found")
            row.deleted_at = now_utc()

    def artifact(self, tenant_id: str, artifact_id: str) -> Artifact:
        """One output of one of the tenant's jobs."""
        with self.db.read() as s:
            row = s.get(ArtifactRow, artifact_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"image {artifact_id} not found")
            return _artifact(row)

    # ---- worker side -------------------------------------------------------------------------

    # The claim query is the queue's contract: oldest queued job of this endpoint first; on
    # PostgreSQL `FOR UPDATE SKIP LOCKED` lets many workers claim without blocking each other,
    # on SQLite BEGIN IMMEDIATE (see store/database.py) serialises claimers instead.
    def claim(self, worker_id: str, *, endpoint: str = "default", max_jobs: int = 1,
              batch_key: str | None = None, kinds: Sequence[JobKind] | None = None) -> builtins.list[Claim]:
        """Claim the oldest queued job and up to `max_jobs - 1` more that can share its batch.

        With `batch_key`, claim only jobs of that batch (a worker topping up a batch it holds);
        with `kinds`, only jobs of those kinds (the kinds the worker has handlers for).
        """
        with self.db.session() as s:
            base = select(JobRow).where(JobRow.status == JobStatus.QUEUED.value,
                                        JobRow.endpoint == endpoint)
            if batch_key is not None:
                base = base.where(JobRow.batch_key == batch_key)
            if kinds is not None:
                base = base.where(JobRow.kind.in_([k.value for k in kinds]))
            first = s.scalar(base.order_by(JobRow.created_at, JobRow.id).limit(1)
                             .with_for_update(skip_locked=True))
            if first is None:
                return []
            rows = [first]
            if max_jobs > 1 and first.batch_key:
                more = s.scalars(base.where(JobRow.batch_key == first.batch_key, JobRow.id != first.id)
                                 .order_by(JobRow.created_at, JobRow.id).limit(max_jobs - 1)
                                 .with_for_update(skip_locked=True))
                rows.extend(more)
            now = now_utc()
            for row in rows:
                row.status = JobStatus.RUNNING.value
                row.attempt += 1
                row.lease_owner = worker_id
                row.lease_expires_at = now + self.lease
                row.started_at = row.started_at or now
                row.updated_at = now
                self._outbox(s, row, "job.running")
            claims = [Claim(self._to_job(s, r), r.attempt) for r in rows]
        for c in claims:
            self.events.publish(c.job.id)
        return claims

    def renew(self, renewals: Sequence[Renewal]) -> set[str]:
        """Extend the leases of running attempts and record their progress, in one transaction.

        A worker renews a whole batch at once. Returns the ids it should stop: attempts that went
        stale, and jobs whose cancel was requested.
        """
        if not renewals:
            return set()
        stop: set[str] = set()
        moved: builtins.list[str] = []
        with self.db.session() as s:
            rows = {row.id: row for row in s.scalars(
                select(JobRow).where(JobRow.id.in_([r.job_id for r in renewals]))
                .order_by(JobRow.id).with_for_update())}
            now = now_utc()
            for r in renewals:
                row = rows.get(r.job_id)
                if row is None or row.attempt != r.attempt or row.status != JobStatus.RUNNING.value:
                    stop.add(r.job_id)
                    continue
                row.lease_expires_at = now + self.lease
                if r.progress or r.metrics:
                    if r.progress:
                        row.progress = {**row.progress, **r.progress}
                    if r.metrics:
                        row.metrics = dict(r.metrics)
                    row.updated_at = now
                    moved.append(r.job_id)
                if row.cancel_requested:
                    stop.add(r.job_id)
        for job_id in moved:
            self.events.publish(job_id, progress=True)
        return stop

    def succeed(self, job_id: str, attempt: int, artifacts: Sequence[NewArtifact]) -> bool:
        """Attach outputs, run the kind's success effect, capture credits, queue the terminal webhook.

        False if fenced out. The effect runs in the same transaction: a model a training made is
        registered exactly when its job turns succeeded, never twice.
        """
        with self.db.session() as s:
            row = self._fenced(s, job_id, attempt)
            if row is None:
                return False
            images = 0
            for i, a in enumerate(artifacts):
                images += a.kind is ArtifactKind.IMAGE
                s.add(ArtifactRow(id=uuid.uuid4().hex, job_id=job_id, tenant_id=row.tenant_id, index=i,
                                  kind=a.kind.value, blob_key=a.blob_key, mime=a.mime, width=a.width,
                                  height=a.height, seed=a.seed, finish_reason=a.finish_reason, name=a.name,
                                  format=a.format, size=a.size, sha256=a.sha256))
            # Every output done, including those finished before their first progress report.
            done = {k: 1.0 for k in [*row.progress, *map(str, range(images))]}
            row.progress = done or {"0": 1.0}
            s.flush()
            effect = self.success_effects.get(JobKind(row.kind))
            if effect is not None:
                effect(s, self._to_job(s, row, artifacts=True))
            self._finish(s, row, JobStatus.SUCCEEDED)
        self.events.publish(job_id)
        return True

    def fail(self, job_id: str, attempt: int, code: str, message: str) -> bool:
        with self.db.session() as s:
            row = self._fenced(s, job_id, attempt)
            if row is None:
                return False
            self._finish(s, row, JobStatus.FAILED, code=code, message=message)
        self.events.publish(job_id)
        return True

    def mark_canceled(self, job_id: str, attempt: int) -> bool:
        with self.db.session() as s:
            row = self._fenced(s, job_id, attempt)
            if row is None:
                return False
            self._finish(s, row, JobStatus.CANCELED, code="canceled", message="canceled by client")
        self.events.publish(job_id)
        return True

    def end_leases(self, owner: str) -> int:
        """End the leases of running jobs held by workers named `owner`/...: they are known dead (a
        restarted process's own, see queue/instance.py), so `requeue_expired` takes them now."""
        with self.db.session() as s:
            result = s.execute(update(JobRow)
                               .where(JobRow.status == JobStatus.RUNNING.value,
                                      JobRow.lease_owner.startswith(owner + "/", autoescape=True))
                               .values(lease_expires_at=now_utc() - timedelta(seconds=1)))
            return int(result.rowcount)  # type: ignore[attr-defined]

    def requeue_expired(self) -> int:
        """Give jobs whose worker stopped renewing its lease another attempt, or fail them."""
        changed: list[str] = []
        with self.db.session() as s:
            rows = s.scalars(select(JobRow).where(JobRow.status == JobStatus.RUNNING.value,
                                                  JobRow.lease_expires_at < now_utc())
                             .with_for_update(skip_locked=True))
            for row in rows:
                changed.append(row.id)
                if row.cancel_requested:
                    self._finish(s, row, JobStatus.CANCELED, code="canceled", message="canceled by client")
                elif row.attempt >= self.max_attempts:
                    self._finish(s, row, JobStatus.FAILED, code="worker_lost",
                                 message=f"the worker was lost {row.attempt} times")
                else:
                    row.status = JobStatus.QUEUED.value
                    row.lease_owner = None
                    row.lease_expires_at = None
                    row.progress = {}
                    row.metrics = None
                    row.updated_at = now_utc()
                    s.flush()
                    self._outbox(s, row, "job.queued")  # back in the queue: a status change too
        for job_id in changed:
            self.events.publish(job_id)
        return len(changed)

    # ---- internals -----------------------------------------------------------------------------

    def _fenced(self, s: Session, job_id: str, attempt: int) -> JobRow | None:
        row = s.get(JobRow, job_id, with_for_update=True)
        if row is None or row.attempt != attempt or row.status != JobStatus.RUNNING.value:
            return None
        return row

    def _finish(self, s: Session, row: JobRow, status: JobStatus, *, code: str | None = None,
                message: str | None = None) -> None:
        """The terminal transition and its side effects: ledger, outbox."""
        now = now_utc()
        reserved = row.credits_reserved
        if status is JobStatus.SUCCEEDED:
            row.credits_charged = reserved
            s.add(LedgerRow(tenant_id=row.tenant_id, job_id=row.id, entry="release", amount=reserved))
            s.add(LedgerRow(tenant_id=row.tenant_id, job_id=row.id, entry="capture", amount=-reserved))
        else:
            s.execute(update(TenantRow).where(TenantRow.id == row.tenant_id)
                      .values(balance=TenantRow.balance + reserved))
            s.add(LedgerRow(tenant_id=row.tenant_id, job_id=row.id, entry="release", amount=reserved))
        row.status = status.value
        row.error_code = code
        row.error_message = message
        row.finished_at = now
        row.updated_at = now
        row.lease_owner = None
        row.lease_expires_at = None
        s.flush()
        self._outbox(s, row, f"job.{status.value}", terminal=True)

    def _outbox(self, s: Session, row: JobRow, event: str, *, terminal: bool = False) -> None:
        """The transition's webhooks: the core's envelope, the body rendered by the job's dialect, one
        outbox row per target (the job's notify URL, then its notify targets)."""
        targets = [NotifyTarget(row.notify_url)] if row.notify_url else []
        targets += [NotifyTarget(t["url"], t.get("format", "standard")) for t in row.notify_targets or []]
        if not targets:
            return
        envelope = WebhookEnvelope(event, self._to_job(s, row, artifacts=terminal), now_utc())
        body = self.webhook_renderers.get(row.dialect, core_body)(envelope)
        if body is None:
            return
        payload = json.dumps(body)
        seen: set[str] = set()
        for target in targets:
            if target.url in seen:  # one row per URL: the terminal row is unique per (job, url)
                continue
            seen.add(target.url)
            s.add(OutboxRow(id=uuid.uuid4().hex, tenant_id=row.tenant_id, job_id=row.id if terminal else None,
                            event=event, url=target.url, format=target.format, terminal=terminal, payload=payload))
        if self.on_outbox is not None:
            notify = self.on_outbox
            sa_event.listen(s, "after_commit", lambda _session: notify(), once=True)

    def _to_job(self, s: Session, row: JobRow, *, with_queue: bool = False, artifacts: bool = False) -> Job:
        """The job a row describes; its artifacts are read once it succeeded (or when asked for)."""
        queue = None
        if with_queue and row.status == JobStatus.QUEUED.value:
            queue = self._queue_position(s, row.endpoint, row.created_at)
        arts: Sequence[ArtifactRow] = []
        if artifacts or row.status == JobStatus.SUCCEEDED.value:
            arts = s.scalars(select(ArtifactRow).where(ArtifactRow.job_id == row.id)
                             .order_by(ArtifactRow.index)).all()
        return Job(
            id=row.id, tenant_id=row.tenant_id, kind=JobKind(row.kind), dialect=row.dialect,
            status=JobStatus(row.status),
            spec_json=row.spec, request_id=row.request_id, attempt=row.attempt,
            progress=dict(row.progress or {}), credits_reserved=row.credits_reserved,
            credits_charged=row.credits_charged, error_code=row.error_code,
            error_message=row.error_message, notify_url=row.notify_url,
            created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at),
            started_at=as_utc(row.started_at) if row.started_at else None,
            finished_at=as_utc(row.finished_at) if row.finished_at else None,
            artifacts=tuple(_artifact(a) for a in arts), queue_position=queue, endpoint=row.endpoint,
            metrics=dict(row.metrics or {}), parent_id=row.parent_id,
            dialect_data=dict(row.dialect_data or {}),
        )


def _table(model: type[Any]) -> Table:
    """A mapped class's Table, for plain Core statements."""
    table: Table = model.__table__
    return table


# The submit path's statements, built once. Building a SQLAlchemy expression and its cache key costs
# more CPU than running it on SQLite (profiled: about a third of a submit).
_BY_REQUEST = select(JobRow).where(JobRow.tenant_id == bindparam("tenant"), JobRow.request_id == bindparam("request"))
_TENANTS = _table(TenantRow)
_JOBS = _table(JobRow)
_RESERVE = (update(_TENANTS).where(_TENANTS.c.id == bindparam("tenant"), _TENANTS.c.balance >= bindparam("cost"))
            .values(balance=_TENANTS.c.balance - bindparam("cost")))
_INSERT_LEDGER = insert(_table(LedgerRow))
# INSERT ... ON CONFLICT (tenant_id, request_id) DO NOTHING, in each dialect's own words; its
# rowcount (kept: SQLAlchemy keeps it only for UPDATE and DELETE by default) says which happened.
_INSERT_JOB = {
    dialect: insert_into(_JOBS).on_conflict_do_nothing(index_elements=["tenant_id", "request_id"])
    .execution_options(preserve_rowcount=True)
    for dialect, insert_into in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
}
_TENANT_QUEUED = (select(func.count()).select_from(_JOBS)
                  .where(_JOBS.c.tenant_id == bindparam("tenant"), _JOBS.c.status == JobStatus.QUEUED.value))
# Core columns, not the mapped class's: a Core SELECT skips the ORM's per-statement set-up.
_QUEUED = (_JOBS.c.status == JobStatus.QUEUED.value, _JOBS.c.endpoint == bindparam("endpoint"))
_QUEUE_LENGTH = select(func.count()).select_from(_JOBS).where(*_QUEUED)
_QUEUE_RANK = select(func.count(), func.coalesce(func.sum(
    case((_JOBS.c.created_at < bindparam("created_at"), 1), else_=0)), 0)).select_from(_JOBS).where(*_QUEUED)


def _artifact(row: ArtifactRow) -> Artifact:
    kind = ArtifactKind(row.kind)
    if kind is ArtifactKind.MODEL:
        return ModelFileArtifact(id=row.id, job_id=row.job_id, index=row.index, blob_key=row.blob_key,
                                 name=row.name or "", format=row.format or "", size=row.size or 0,
                                 sha256=row.sha256 or "", mime=row.mime)
    if kind is ArtifactKind.DOCUMENT:
        return DocumentArtifact(id=row.id, job_id=row.job_id, index=row.index, blob_key=row.blob_key,
                                name=row.name or "", mime=row.mime)
    return ImageArtifact(id=row.id, job_id=row.job_id, index=row.index, blob_key=row.blob_key, mime=row.mime,
                         width=row.width or 0, height=row.height or 0, seed=row.seed or 0,
                         finish_reason=row.finish_reason)
