"""The `/v1/jobs` webhook body: `{type, timestamp, data: {job}}` with the job object as GET returns it."""

from __future__ import annotations

from typing import Any

from diffusiond.api.jobs.render import job_public, spec_shape
from diffusiond.blobs.signing import UrlSigner
from diffusiond.domain.webhooks import WebhookEnvelope, WebhookRenderer


def job_webhook_renderer(signer: UrlSigner, expires_in: int) -> WebhookRenderer:
    """Bodies with signed image URLs and no live queue rank (it would be stale on arrival)."""

    def render(envelope: WebhookEnvelope) -> dict[str, Any]:
        job = envelope.job
        size, count = spec_shape(job)
        public = job_public(job, signer, expires_in, output_size=size, count=count)
        return {"type": envelope.event, "timestamp": envelope.timestamp.isoformat(),
                "data": {"job": public.model_dump(mode="json", exclude_none=True)}}

    return render
