"""The local executor at start: it reclaims at once the jobs its instance's dead process held, and
leaves every other process's running jobs to their leases (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from diffusiond.auth.keys import KeyService
from diffusiond.blobs.local import LocalBlobStore
from diffusiond.domain.jobs import JobStatus
from diffusiond.domain.params import Diffusion, GenerateSpec, Txt2Img, WeightedPrompt
from diffusiond.queue.events import JobEvents
from diffusiond.queue.instance import InstanceSlot, worker_id
from diffusiond.queue.job_service import JobService
from diffusiond.queue.local_executor import LocalExecutor
from diffusiond.store.database import Database


def spec() -> GenerateSpec:
    d = Diffusion(model="tiny", prompts=(WeightedPrompt("a red circle"),), width=64, height=64, steps=10)
    return GenerateSpec(stages=(Txt2Img(d),), seed=7)


def no_handlers() -> None:
    raise AssertionError("no worker pools: no handlers are built")


def test_a_restart_reclaims_its_own_dead_workers_jobs_only(db: Database, tmp_path: Path) -> None:
    jobs = JobService(db, JobEvents(), lease_seconds=600)
    tenant = KeyService(db).create("t", credits_milli=10_000).tenant_id
    ids = [jobs.submit(tenant, spec(), dialect="jobs").id for _ in range(4)]
    # Who held what when "the server was killed": this instance's earlier process (slot 0), a live
    # process sharing the home (slot 1, still locked), and a process on another machine.
    earlier, alive = InstanceSlot(tmp_path), InstanceSlot(tmp_path)
    mine, theirs = earlier.acquire(), alive.acquire()
    earlier.release()  # the kernel drops a killed process's locks
    assert mine is not None and theirs is not None and mine != theirs
    for owner in (f"{mine}/4242-0", f"{mine}/4242-1", f"{theirs}/5151-0", "i-0123456789ab.0/6161-0"):
        (claim,) = jobs.claim(owner)
        assert claim.job.id in ids
    executor = LocalExecutor(jobs, LocalBlobStore(tmp_path / "blobs"), no_handlers,  # type: ignore[arg-type]
                             pools=[], instance=InstanceSlot(tmp_path))
    executor.start()
    try:
        assert executor.instance is not None and executor.instance.name == mine
        status = {j.id: j.status for j in jobs.list(tenant)[0]}
        assert [status[i] for i in ids] == [JobStatus.QUEUED] * 2 + [JobStatus.RUNNING] * 2
        assert worker_id(mine, 3).startswith(f"{mine}/")
    finally:
        executor.stop()
        alive.release()
    # Stopping gave the slot back: the next process takes it again.
    again = InstanceSlot(tmp_path)
    assert again.acquire() == mine
    again.release()
