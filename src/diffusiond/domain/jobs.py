"""The job state machine: statuses and which transitions are legal."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

# queued -> running -> succeeded | failed | canceled; running -> queued is a retry after a lost worker.
ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.QUEUED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


def can_transition(src: JobStatus, dst: JobStatus) -> bool:
    return dst in ALLOWED[src]


@dataclass(frozen=True)
class Artifact:
    """One output file of a job."""

    id: str
    job_id: str
    index: int
    blob_key: str
    mime: str
    width: int
    height: int
    seed: int
    finish_reason: str = "SUCCESS"


@dataclass(frozen=True)
class Job:
    """A job as every dialect sees it; derived from rows, never mutated in place."""

    id: str
    tenant_id: str
    kind: str
    status: JobStatus
    spec_json: str
    request_id: str | None
    attempt: int
    progress: dict[str, float]
    credits_reserved: int  # millicredits
    credits_charged: int  # millicredits
    error_code: str | None
    error_message: str | None
    notify_url: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    artifacts: tuple[Artifact, ...] = field(default=())
    # (rank, length) of the queue, read together with the row when asked for; rank 1 is next.
    queue_position: tuple[int, int] | None = None

    @property
    def overall_progress(self) -> float:
        if self.status is JobStatus.SUCCEEDED:
            return 1.0
        if not self.progress:
            return 0.0
        return sum(self.progress.values()) / max(len(self.progress), 1)
