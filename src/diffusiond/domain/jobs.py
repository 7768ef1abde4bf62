"""Jobs: their kinds, the state machine (which transitions are legal) and what they produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class JobKind(str, Enum):
    """What a job does; each kind has one spec type, one price rule and one handler."""

    GENERATE = "generate"  # images from stages (domain.params.GenerateSpec)
    TRAIN = "train"  # a LoRA or fine-tune from images (domain.training.TrainSpec)
    MERGE = "merge"  # a checkpoint from checkpoints (domain.merge.MergeSpec)


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


class ArtifactKind(str, Enum):
    IMAGE = "image"
    MODEL = "model"  # a model file: a LoRA, a merged checkpoint
    DOCUMENT = "document"  # JSON: metrics, a loss curve, parameters


@dataclass(frozen=True)
class ImageArtifact:
    """One output image of a job."""

    id: str
    job_id: str
    index: int
    blob_key: str
    mime: str
    width: int
    height: int
    seed: int
    finish_reason: str = "SUCCESS"
    kind: ArtifactKind = field(default=ArtifactKind.IMAGE, init=False)


@dataclass(frozen=True)
class ModelFileArtifact:
    """A model file a job made."""

    id: str
    job_id: str
    index: int
    blob_key: str
    name: str
    format: str  # safetensors | diffusers
    size: int
    sha256: str
    mime: str = "application/octet-stream"
    kind: ArtifactKind = field(default=ArtifactKind.MODEL, init=False)


@dataclass(frozen=True)
class DocumentArtifact:
    """A JSON document a job wrote (a training's loss curve, a job's parameters)."""

    id: str
    job_id: str
    index: int
    blob_key: str
    name: str
    mime: str = "application/json"
    kind: ArtifactKind = field(default=ArtifactKind.DOCUMENT, init=False)


Artifact = ImageArtifact | ModelFileArtifact | DocumentArtifact


@dataclass(frozen=True)
class Job:
    """A job as every dialect sees it; derived from rows, never mutated in place."""

    id: str
    tenant_id: str
    kind: JobKind
    dialect: str  # the API that submitted it; it renders the job's webhooks
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
    endpoint: str = "default"
    metrics: dict[str, float] = field(default_factory=dict)  # the latest figures a long job reported
    parent_id: str | None = None  # what the job belongs to in its dialect (a custom model, an endpoint)
    dialect_data: dict[str, Any] = field(default_factory=dict)  # what its dialect kept with it (core: opaque)

    @property
    def images(self) -> tuple[ImageArtifact, ...]:
        return tuple(a for a in self.artifacts if isinstance(a, ImageArtifact))

    @property
    def model_files(self) -> tuple[ModelFileArtifact, ...]:
        return tuple(a for a in self.artifacts if isinstance(a, ModelFileArtifact))

    @property
    def documents(self) -> tuple[DocumentArtifact, ...]:
        return tuple(a for a in self.artifacts if isinstance(a, DocumentArtifact))

    @property
    def overall_progress(self) -> float:
        if self.status is JobStatus.SUCCEEDED:
            return 1.0
        if not self.progress:
            return 0.0
        return sum(self.progress.values()) / max(len(self.progress), 1)
