"""Stop the server mid-queue (SIGKILL: no clean shutdown), start it again: no job is lost, and the jobs
the killed process was running are back at work within seconds, not when their 60 s leases run out."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from diffusiond.domain.jobs import JobStatus
from tests.conftest import LiveServer, free_port, prepare_home


def test_jobs_survive_a_killed_server(tmp_path: Path, tiny_sd_dir: Path) -> None:
    prepare_home(tmp_path, tiny_sd_dir)
    # The default 60 s lease: only the restarted process reclaiming its own jobs can make recovery fast.
    env = {"DIFFUSIOND_DEFAULT_MODEL": "tiny"}
    live = LiveServer(home=tmp_path, port=free_port(), env=env)
    live.start()
    view = live.services()
    try:
        body = {"text_prompts": [{"text": "a red circle"}], "width": 64, "height": 64, "steps": 30}

        def request(seed: int) -> None:
            try:
                with live.client() as c:
                    c.post("/v1/generation/tiny/text-to-image", json={**body, "seed": seed})
            except httpx.HTTPError:
                pass  # the server is killed under this request; the job itself must live on

        threads = [threading.Thread(target=request, args=(i + 1,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jobs, total = view.jobs.list(_tenant(view))
            if total == 4 and any(j.status is JobStatus.RUNNING for j in jobs):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the jobs were not queued and started in time")
        live.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        for t in threads:
            t.join(10)
        jobs, _ = view.jobs.list(_tenant(view))
        assert sum(j.status.terminal for j in jobs) < 4, "the kill came too late to test anything"
        interrupted = {j.id: j.attempt for j in jobs if j.status is JobStatus.RUNNING}  # the killed attempts
        assert interrupted
        live.start()
        recovered = done = None
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            jobs, _ = view.jobs.list(_tenant(view))
            # Recovered: no job is left running under a killed attempt (each is queued, running again, or done).
            stuck = [j for j in jobs if j.status is JobStatus.RUNNING and interrupted.get(j.id) == j.attempt]
            if recovered is None and not stuck:
                recovered = time.monotonic() - killed_at
            if all(j.status.terminal for j in jobs):
                done = time.monotonic() - killed_at
                break
            time.sleep(0.1)
        print(f"recovered {recovered:.1f} s after kill -9 (server start included), all done at {done:.1f} s")
        assert recovered is not None and recovered < 10
        assert done is not None and done < 60  # sooner than the killed attempts' leases could expire
        assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 4
        assert all(len(j.artifacts) == 1 for j in jobs)
        assert sorted(j.artifacts[0].seed for j in jobs) == [1, 2, 3, 4]
        tenant = _tenant(view)
        charged = sum(j.credits_charged for j in jobs)
        assert view.tenants.get(tenant).balance == view.tenants.ledger_sum(tenant)
        assert view.tenants.ledger_sum(tenant) == 100_000 - charged  # one charge per job
        outputs = list((tmp_path / "blobs" / "outputs").rglob("*.png"))
        assert len(outputs) == 4  # no half-written or duplicate outputs of the killed attempt
    finally:
        live.stop()
        view.db.dispose()


def _tenant(view) -> str:  # type: ignore[no-untyped-def]
    return view.keys.authenticate(LiveServer.key).tenant_id
