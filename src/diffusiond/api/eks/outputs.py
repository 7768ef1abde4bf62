"""An EKS task's files, laid out as the solution's queue workers write them, and its callback body.

A task's folder is `<prefix>/<id>/` under the tenant's EKS root (`outputs/<tenant>/eks/`, so one
tenant never sees another's files). An attempt writes its images as `<id>-<rand>-<n>.png` (n from
1) and, on success and on failure, the result file `<id>-<rand>.out`: `{"images": [""],
"parameters": {...}, "info": ""}`. `rand` is four hex digits fixed by the job and the attempt, so
the callback can name the result file of the attempt that finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.signing import UrlSigner
from diffusiond.config import Settings
from diffusiond.domain.errors import DomainError
from diffusiond.domain.jobs import Job, JobStatus
from diffusiond.domain.webhooks import WebhookEnvelope, WebhookRenderer
from diffusiond.queue.job_service import NewArtifact

DIALECT = "eks"


def root(tenant_id: str) -> str:
    return f"outputs/{tenant_id}/eks"


def folder(tenant_id: str, prefix: str, task_id: str) -> str:
    """The blob folder of a task: the prefix's non-empty segments, then the id."""
    return "/".join([root(tenant_id), *[p for p in prefix.split("/") if p], task_id])


def rand(job_id: str, attempt: int) -> str:
    return hashlib.sha256(f"{job_id}:{attempt}".encode()).hexdigest()[:4]


def out_key(job: Job, attempt: int) -> str:
    return result_key(job.dialect_data, job.id, attempt)


def result_key(data: dict[str, Any], job_id: str, attempt: int) -> str:
    return f"{data['folder']}/{data['id']}-{rand(job_id, attempt)}.out"


def result_file(data: dict[str, Any], images: Sequence[NewArtifact], error: DomainError | None) -> dict[str, Any]:
    """The `.out` document: A1111's parameters plus the task id and seeds, or the failure."""
    if error is not None:
        params: dict[str, Any] = {"id_task": data["id"], "status": 0, "error_msg": f"{error.code}: {error.message}",
                                  "reason": {"error": error.code, "detail": error.message}}
    elif data.get("tasktype") == "extra-single-image":
        params = {"html_info": data.get("html_info", ""), "id_task": data["id"], "error_msg": ""}
    else:
        seeds = ",".join(str(a.seed) for a in images)
        params = {**data.get("parameters", {}), "id_task": data["id"], "image_seed": seeds, "error_msg": ""}
    return {"images": [""], "parameters": params, "info": ""}


def write_result(blobs: BlobStore, data: dict[str, Any], job_id: str, attempt: int, images: Sequence[NewArtifact],
                 error: DomainError | None) -> str:
    """Write a task attempt's `.out` file; returns its key."""
    key = result_key(data, job_id, attempt)
    blobs.put(key, json.dumps(result_file(data, images, error)).encode(), "application/json")
    return key


class EksOutputLayout:
    """The worker's `OutputLayout` for EKS tasks."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def image_key(self, job: Job, attempt: int, index: int, extension: str) -> str | None:
        data = job.dialect_data
        if "folder" not in data:
            return None
        return f"{data['folder']}/{data['id']}-{rand(job.id, attempt)}-{index + 1}.{extension}"

    def finished(self, job: Job, attempt: int, images: Sequence[NewArtifact], error: DomainError | None) -> list[str]:
        if "folder" not in job.dialect_data:
            return []
        return [write_result(self.blobs, job.dialect_data, job.id, attempt, images, error)]


class Locations:
    """URLs of a task's files: `s3://bucket/key` on S3, else signed URLs of this server."""

    def __init__(self, settings: Settings, signer: UrlSigner) -> None:
        self.settings = settings
        self.signer = signer

    @property
    def on_s3(self) -> bool:
        return self.settings.blob_store == "s3"

    def _s3(self, key: str) -> str:
        prefix = self.settings.s3_prefix.strip("/")
        return f"s3://{self.settings.s3_bucket}/{prefix + '/' if prefix else ''}{key}"

    def file(self, tenant_id: str, key: str) -> str:
        if self.on_s3:
            return self._s3(key)
        return self.signer.sign(key, tenant_id, self.settings.url_expiry_seconds)

    def folder(self, tenant_id: str, folder_key: str) -> str:
        """Where the task's files are: its S3 folder, or a signed URL of this server that lists them."""
        if self.on_s3:
            return self._s3(folder_key)
        query = self.signer.query(folder_key, tenant_id, self.settings.url_expiry_seconds)
        return f"{self.settings.resolved_public_url}/v1alpha2/outputs/{folder_key}?{query}"


def callback_body(job: Job, locations: Locations) -> dict[str, Any]:
    """What a registered callback URL receives when a task ends (the solution's SNS message)."""
    data = job.dialect_data
    ok = job.status is JobStatus.SUCCEEDED
    return {
        "id": data.get("id"), "runtime": data.get("runtime"), "status": "completed" if ok else "failed",
        "result": ok, "image_url": [locations.file(job.tenant_id, a.blob_key) for a in job.images] if ok else [],
        "output_url": locations.file(job.tenant_id, out_key(job, job.attempt)),
        "context": data.get("context", {}),
    }


def eks_webhook_renderer(locations: Locations) -> WebhookRenderer:
    """Callbacks fire when a task ends, never for its queued or running transitions."""

    def render(envelope: WebhookEnvelope) -> dict[str, Any] | None:
        if not envelope.terminal or "id" not in envelope.job.dialect_data:
            return None
        return callback_body(envelope.job, locations)

    return render
