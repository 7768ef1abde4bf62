"""The webhook body: the job object in the `/v1/jobs` shape, built inside the transition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffusiond.api.jobs.render import job_public, spec_shape
from diffusiond.blobs.signing import UrlSigner
from diffusiond.domain.jobs import Job


def job_payload_builder(signer: UrlSigner, expires_in: int) -> Callable[[Job], dict[str, Any]]:
    """`JobService.webhook_payload`: `{"job": {...}}` with signed image URLs, no live queue rank."""

    def build(job: Job) -> dict[str, Any]:
        size, count = spec_shape(job)
        public = job_public(job, signer, expires_in, output_size=size, count=count)
        return {"job": public.model_dump(mode="json", exclude_none=True)}

    return build
