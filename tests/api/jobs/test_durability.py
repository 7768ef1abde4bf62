"""Kill the server (and its worker) mid-job: after a restart the job is retried and still yields
one set of outputs, one charge and one terminal webhook; finished jobs and their images survive."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from diffusiond.store.tables import ArtifactRow, JobRow, LedgerRow, OutboxRow
from tests.api.jobs.conftest import start_server, txt2img_stages, wait_job
from tests.conftest import LiveServer
from tests.webhooks.receiver import Receiver


def test_worker_killed_mid_job(tmp_path: Path, tiny_sd_dir: Path) -> None:
    receiver = Receiver().start()
    live: LiveServer = start_server(tmp_path / "home", tiny_sd_dir, DIFFUSIOND_JOB_LEASE_SECONDS="2")
    try:
        services = live.services()
        created = services.keys.create("durable", credits_milli=20_000)
        tenant = created.tenant_id
        c = live.client(created.key)
        quick = c.post("/v1/jobs", json={"requestId": "quick", "stages": txt2img_stages(steps=2)}).json()["job"]
        assert wait_job(c, quick["id"], {"SUCCESS", "FAILED"})["status"] == "SUCCESS"
        job = c.post("/v1/jobs", json={"requestId": "slow", "notifyUrl": receiver.url,
                                       "stages": txt2img_stages(size=96, steps=24, count=2)}).json()["job"]
        running = wait_job(c, job["id"], {"RUNNING"}, timeout=60)
        while running["runningInfo"]["processingImages"][0]["progress"] == 0:
            time.sleep(0.05)
            running = c.get(f"/v1/jobs/{job['id']}").json()["job"]
        live.stop(signal.SIGKILL)  # the worker dies mid-denoising, holding the job's lease

        live.start()
        done = wait_job(c, job["id"], {"SUCCESS", "FAILED", "CANCELED"}, timeout=120)
        assert done["status"] == "SUCCESS", done
        assert len(done["successInfo"]["images"]) == 2
        for image in done["successInfo"]["images"]:
            assert httpx.get(image["url"]).status_code == 200
        # The job finished before the crash is still there, with its image.
        before = c.get(f"/v1/jobs/{quick['id']}").json()["job"]
        assert before["status"] == "SUCCESS" and httpx.get(before["successInfo"]["images"][0]["url"]).status_code == 200

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("job.succeeded" in r.body for r in receiver.snapshot()):
            time.sleep(0.1)
        time.sleep(1.0)
        with services.db.session() as s:
            row = s.get(JobRow, job["id"])
            assert row is not None and row.attempt == 2
            assert s.scalar(select(func.count()).select_from(ArtifactRow).where(ArtifactRow.job_id == job["id"])) == 2
            captures = s.scalars(select(LedgerRow).where(LedgerRow.job_id == job["id"], LedgerRow.entry == "capture"))
            assert [e.amount for e in captures] == [-row.credits_reserved]
            terminals = s.scalar(select(func.count()).select_from(OutboxRow).where(
                OutboxRow.job_id == job["id"], OutboxRow.terminal.is_(True)))
            assert terminals == 1
        # Only the winning attempt's files exist.
        files = sorted(p.name for p in (live.home / "blobs" / "outputs" / tenant / job["id"]).iterdir())
        assert files == ["2-0.png", "2-1.png"]
        terminal_ids = {r.headers["webhook-id"] for r in receiver.snapshot() if "job.succeeded" in r.body}
        assert len(terminal_ids) == 1
        # The receiver saw the retry: queued, running, (worker lost) queued, running, succeeded.
        kinds = list({r.headers["webhook-id"]: json.loads(r.body)["type"] for r in receiver.snapshot()}.values())
        assert sorted(kinds) == sorted(["job.queued", "job.running", "job.queued", "job.running", "job.succeeded"])
        spent = done["credits"] + before["credits"]
        assert services.tenants.get(tenant).balance == services.tenants.ledger_sum(tenant) == pytest.approx(
            20_000 - spent * 1000)
        services.db.dispose()
    finally:
        live.stop()
        receiver.stop()
