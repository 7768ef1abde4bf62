"""The webhook envelope: what the core says about a transition; each dialect renders its own body."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from diffusiond.domain.jobs import Job


@dataclass(frozen=True)
class WebhookEnvelope:
    """One transition of a job that has somewhere to send webhooks."""

    event: str  # job.queued | job.running | job.succeeded | job.failed | job.canceled
    job: Job  # the job as it is after the transition
    timestamp: datetime

    @property
    def terminal(self) -> bool:
        return self.job.status.terminal


# A dialect's webhook body for a transition of a job it submitted; None sends nothing for that event.
WebhookRenderer = Callable[[WebhookEnvelope], "dict[str, Any] | None"]


def core_body(envelope: WebhookEnvelope) -> dict[str, Any]:
    """The body for jobs of dialects that render none of their own."""
    job = envelope.job
    data: dict[str, Any] = {
        "id": job.id, "kind": job.kind.value, "status": job.status.value, "requestId": job.request_id,
        "createdAt": job.created_at.isoformat(),
        "finishedAt": job.finished_at.isoformat() if job.finished_at else None,
    }
    if job.error_code:
        data["error"] = {"code": job.error_code, "message": job.error_message}
    return {"type": envelope.event, "timestamp": envelope.timestamp.isoformat(), "data": data}
