"""The outbox dispatcher against a real receiver: signatures, retries with backoff, one terminal."""

from __future__ import annotations

import time
from typing import Any

import pytest
from standardwebhooks import Webhook

from diffusiond.api.jobs.webhooks import job_webhook_renderer
from diffusiond.auth.keys import KeyService
from diffusiond.auth.tenants import TenantService
from diffusiond.blobs.signing import UrlSigner
from diffusiond.domain.params import Diffusion, GenerateSpec, Txt2Img, WeightedPrompt
from diffusiond.queue.events import JobEvents
from diffusiond.queue.job_service import JobService, NewArtifact
from diffusiond.store.database import Database
from diffusiond.store.tables import OutboxRow
from diffusiond.webhooks.dispatcher import RetryPolicy, WebhookDispatcher
from diffusiond.webhooks.signing import public_secret
from diffusiond.webhooks.ssrf import UrlPolicy
from tests.webhooks.receiver import Receiver

SPEC = GenerateSpec(stages=(Txt2Img(Diffusion(model="tiny", prompts=(WeightedPrompt("x"),), width=64, height=64)),))


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def setup(db: Database) -> tuple[JobService, TenantService, str]:
    jobs = JobService(db, JobEvents(), url_policy=UrlPolicy("127.0.0.1"),
                      webhook_renderers={"jobs": job_webhook_renderer(UrlSigner(b"k", "http://x"), 60)})
    tenant = KeyService(db).create("t", credits_milli=10_000).tenant_id
    return jobs, TenantService(db), tenant


def test_every_status_change_is_delivered_signed_and_the_terminal_once(db: Database) -> None:
    jobs, tenants, tenant = setup(db)
    receiver = Receiver().start()
    dispatcher = WebhookDispatcher(db, tenants, UrlPolicy("127.0.0.1"), poll_interval=0.05)
    dispatcher.start()
    try:
        job = jobs.submit(tenant, SPEC, dialect="jobs", notify_url=receiver.url + "/hook")
        claims: Any = jobs.claim("w")  # JobService.list shadows `list` in its annotations for mypy
        (claim,) = claims
        assert jobs.succeed(job.id, claim.attempt, [NewArtifact.image("outputs/t/a.png", 64, 64, 1)])
        assert not jobs.succeed(job.id, claim.attempt, [])  # a second terminal transition is fenced out
        wait_for(lambda: len(receiver.snapshot()) == 3)
        time.sleep(0.3)
        got = receiver.snapshot()
        assert len(got) == 3
        wh = Webhook(public_secret(tenants.get(tenant).webhook_secret))
        bodies = [wh.verify(r.body, r.headers) for r in got]
        statuses = sorted(b["data"]["job"]["status"] for b in bodies)
        assert statuses == ["RUNNING", "SUCCESS", "WAITING"]
        final = next(b for b in bodies if b["type"] == "job.succeeded")
        assert final["data"]["job"]["successInfo"]["images"][0]["meta"]["image"] == {
            "format": "png", "width": 64, "height": 64}
        with pytest.raises(Exception):  # noqa: B017 - any verification failure will do
            Webhook(public_secret("another secret")).verify(got[0].body, got[0].headers)
    finally:
        dispatcher.stop()
        receiver.stop()


def test_retries_with_backoff_until_the_receiver_accepts(db: Database) -> None:
    jobs, tenants, tenant = setup(db)
    receiver = Receiver(respond=lambda n: (500, {}) if n < 2 else (200, {})).start()
    retry = RetryPolicy(base_seconds=0.2, max_attempts=5)
    dispatcher = WebhookDispatcher(db, tenants, UrlPolicy("127.0.0.1"), retry=retry, poll_interval=0.05)
    dispatcher.start()
    try:
        job = jobs.submit(tenant, SPEC, dialect="jobs", notify_url=receiver.url)
        jobs.cancel(tenant, job.id)
        def delivered() -> bool:
            with db.session() as s:
                return {r.status for r in s.query(OutboxRow).all()} == {"delivered"}
        wait_for(delivered)
        with db.session() as s:
            rows = {r.event: r for r in s.query(OutboxRow).all()}
            terminal = rows["job.canceled"]
            assert terminal.terminal and terminal.job_id == job.id
            assert {r.status for r in rows.values()} == {"delivered"}
            assert [r.attempts for r in rows.values()] == [3, 3]  # failed twice, then accepted
        got = receiver.snapshot()
        assert len(got) == 6 and len({r.headers["webhook-id"] for r in got}) == 2
        assert {r.headers["webhook-id"] for r in got} == set(rows[e].id for e in rows)
        # Backoff: 0.2 s before the second attempt, 0.4 s before the third.
        tries = [r for r in got if r.headers["webhook-id"] == terminal.id]
        assert tries[1].at - tries[0].at >= 0.19 and tries[2].at - tries[1].at >= 0.39
    finally:
        dispatcher.stop()
        receiver.stop()


def test_a_refused_url_is_retried_then_dead(db: Database) -> None:
    jobs, tenants, tenant = setup(db)
    retry = RetryPolicy(base_seconds=0.05, max_attempts=3)
    dispatcher = WebhookDispatcher(db, tenants, UrlPolicy(""), retry=retry, poll_interval=0.05)
    jobs.submit(tenant, SPEC, dialect="jobs", notify_url="http://127.0.0.1:9/hook")
    dispatcher.start()
    try:
        def dead() -> bool:
            with db.session() as s:
                return s.query(OutboxRow).one().status == "dead"
        wait_for(dead)
        with db.session() as s:
            row = s.query(OutboxRow).one()
            assert row.attempts == 3 and "127.0.0.1" in (row.last_error or "")
    finally:
        dispatcher.stop()
