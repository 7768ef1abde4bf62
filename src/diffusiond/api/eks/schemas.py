"""EKS `v1alpha1` / `v1alpha2` wire types (the solution's front Lambda and its docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class V2Accepted(BaseModel):
    """v1alpha2's 200: the code's `id`, and the `id_task` every docs page shows."""

    id: str
    runtime: str
    output_location: str
    id_task: str


class V1Accepted(BaseModel):
    id_task: str
    sd_model_checkpoint: str
    output_location: str


class TaskError(BaseModel):
    code: str
    message: str


class TaskStatus(BaseModel):
    """`GET /v1alpha2/tasks/{id}`: this server's addition, the status route the solution lacks."""

    id: str
    runtime: str
    tasktype: str
    status: str  # queued | running | completed | failed | canceled
    progress: float
    output_location: str
    images: list[str] = Field(default_factory=list)
    output_url: str | None = None
    error: TaskError | None = None
    context: Any = None
    created_at: str
    finished_at: str | None = None


class OutputFile(BaseModel):
    name: str
    size: int
    url: str


class OutputListing(BaseModel):
    """A task folder's files as signed URLs (the local blob store's `output_location`)."""

    location: str
    files: list[OutputFile]


class EksMessage(BaseModel):
    """API Gateway's own refusals (no key, throttled): `{"message": ...}`."""

    message: str
