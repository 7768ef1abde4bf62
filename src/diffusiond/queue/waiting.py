"""Waiting for a job to finish: what synchronous dialects do after submitting.

A synchronous request that gives up (its wait times out, or its client disconnects) cancels its
job: a queued job never runs, a running one stops within a denoising step, and either way its
credits are released. Nobody is charged for an answer nobody received. A job that finished in the
moment the request gave up is answered as usual.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio.to_thread

from diffusiond.domain.errors import ClientGone, InvalidParams, Timeout
from diffusiond.domain.jobs import Job, JobStatus
from diffusiond.queue.events import JobEvents
from diffusiond.queue.job_service import JobService

POLL = 1.0  # re-read the row at least this often: covers changes made by other processes
Gone = Callable[[], Awaitable[bool]]  # True once the client has disconnected


async def wait_for_job(jobs: JobService, events: JobEvents, tenant_id: str, job_id: str,
                       timeout: float, gone: Gone | None = None) -> Job:
    """The job once it is terminal; raises Timeout after `timeout` seconds, ClientGone when `gone`."""
    deadline = time.monotonic() + timeout
    # Registered before the first read, so no change is missed; progress reports do not wake it.
    async with events.subscribe(job_id, progress=False) as changes:
        while True:
            job = await anyio.to_thread.run_sync(jobs.get, tenant_id, job_id)
            if job.status.terminal:
                return job
            if gone is not None and await gone():
                raise ClientGone(f"the client left before job {job_id} finished")
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"job {job_id} did not finish within {timeout:g} s; it was canceled and its "
                              "credits released")
            await changes.wait(min(POLL, left))


async def wait_or_cancel(jobs: JobService, events: JobEvents, tenant_id: str, job_id: str,
                         timeout: float, gone: Gone | None = None) -> Job:
    """`wait_for_job` for a synchronous request: a wait that ends first cancels the job."""
    try:
        return await wait_for_job(jobs, events, tenant_id, job_id, timeout, gone)
    except (Timeout, ClientGone):
        job = await anyio.to_thread.run_sync(give_up, jobs, tenant_id, job_id)
        if job.status is JobStatus.SUCCEEDED:
            return job
        raise


def give_up(jobs: JobService, tenant_id: str, job_id: str) -> Job:
    """Cancel the job (releasing its credits), unless it has just finished."""
    try:
        return jobs.cancel(tenant_id, job_id)
    except InvalidParams:  # it finished between the last read and now
        return jobs.get(tenant_id, job_id)
