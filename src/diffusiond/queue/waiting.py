"""Waiting for a job to finish: what synchronous dialects do after submitting."""

from __future__ import annotations

import time

import anyio.to_thread

from diffusiond.domain.errors import Timeout
from diffusiond.domain.jobs import Job
from diffusiond.queue.events import JobEvents
from diffusiond.queue.job_service import JobService

POLL = 1.0  # re-read the row at least this often: covers changes made by other processes


async def wait_for_job(jobs: JobService, events: JobEvents, tenant_id: str, job_id: str,
                       timeout: float) -> Job:
    """The job once it is terminal; raises Timeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    # Registered before the first read, so no change is missed; progress reports do not wake it.
    async with events.subscribe(job_id, progress=False) as changes:
        while True:
            job = await anyio.to_thread.run_sync(jobs.get, tenant_id, job_id)
            if job.status.terminal:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"job {job_id} did not finish within {timeout:g} s; it is still {job.status.value}")
            await changes.wait(min(POLL, left))
