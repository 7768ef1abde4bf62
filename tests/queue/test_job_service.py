"""The job service contract, on SQLite and PostgreSQL: credits, idempotency, claims, fencing."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from diffusiond.auth.keys import KeyService
from diffusiond.auth.tenants import TenantService
from diffusiond.domain.errors import Conflict, InsufficientCredits, NotFound, RateLimited
from diffusiond.domain.jobs import JobStatus
from diffusiond.domain.params import Diffusion, GenerateSpec, Txt2Img, WeightedPrompt
from diffusiond.queue.events import JobEvents
from diffusiond.queue.job_service import JobService, NewArtifact, Renewal
from diffusiond.store.database import Database


def spec(prompt: str = "a red circle", seed: int = 7, cost: int = 10) -> GenerateSpec:
    """A txt2img spec the documented price rule prices at `cost` millicredits (or just above)."""
    size, steps = (64, 10) if cost <= 10 else (512, math.ceil(cost * 30 / 200))
    d = Diffusion(model="tiny", prompts=(WeightedPrompt(prompt),), width=size, height=size, steps=steps)
    return GenerateSpec(stages=(Txt2Img(d),), seed=seed)


def tenant(db: Database, credits_milli: int) -> str:
    return KeyService(db).create("t", credits_milli=credits_milli).tenant_id


def test_submit_reserves_and_success_captures(db: Database) -> None:
    jobs, tenants = JobService(db, JobEvents()), TenantService(db)
    t = tenant(db, 1000)
    job = jobs.submit(t, spec(cost=300), dialect="jobs")
    assert job.status is JobStatus.QUEUED and job.credits_reserved == 300
    assert tenants.get(t).balance == 700
    (claim,) = jobs.claim("w1")
    assert claim.attempt == 1 and claim.job.id == job.id
    assert jobs.succeed(job.id, 1, [NewArtifact.image("k.png", 64, 64, 7)])
    done = jobs.get(t, job.id)
    assert done.status is JobStatus.SUCCEEDED and done.credits_charged == 300
    assert [a.blob_key for a in done.artifacts] == ["k.png"]
    assert tenants.get(t).balance == 700 == tenants.ledger_sum(t)


def test_failure_and_cancel_release_credits(db: Database) -> None:
    jobs, tenants = JobService(db, JobEvents()), TenantService(db)
    t = tenant(db, 1000)
    a = jobs.submit(t, spec(cost=400), dialect="jobs")
    b = jobs.submit(t, spec(cost=400), dialect="jobs")
    assert tenants.get(t).balance == 200
    jobs.cancel(t, b.id)  # queued: canceled at once
    assert jobs.get(t, b.id).status is JobStatus.CANCELED
    (claim,) = jobs.claim("w1")
    assert claim.job.id == a.id
    jobs.fail(a.id, claim.attempt, "engine_error", "boom")
    assert jobs.get(t, a.id).status is JobStatus.FAILED
    assert tenants.get(t).balance == 1000 == tenants.ledger_sum(t)


def test_insufficient_credits_creates_nothing(db: Database) -> None:
    jobs, tenants = JobService(db, JobEvents()), TenantService(db)
    t = tenant(db, 100)
    with pytest.raises(InsufficientCredits):
        jobs.submit(t, spec(cost=101), dialect="jobs")
    assert jobs.list(t)[1] == 0 and tenants.get(t).balance == 100 == tenants.ledger_sum(t)


def test_queued_jobs_per_tenant_are_limited_and_a_refused_one_leaves_nothing(db: Database) -> None:
    jobs, tenants = JobService(db, JobEvents(), max_queued_per_tenant=2), TenantService(db)
    t, other = tenant(db, 1000), tenant(db, 1000)
    a = jobs.submit(t, spec(cost=100), dialect="jobs")
    jobs.submit(t, spec(cost=100), dialect="jobs")
    with pytest.raises(RateLimited) as refused:
        jobs.submit(t, spec(cost=100), dialect="jobs", request_id="third")
    assert refused.value.code == "too_many_queued_jobs"
    assert jobs.list(t)[1] == 2 and tenants.get(t).balance == 800 == tenants.ledger_sum(t)
    jobs.submit(other, spec(cost=100), dialect="jobs")  # the limit is each tenant's own
    (claim,) = jobs.claim("w1")  # a job that starts leaves the queue, and makes room
    assert claim.job.id == a.id
    assert jobs.submit(t, spec(cost=100), dialect="jobs", request_id="third").status is JobStatus.QUEUED
    with pytest.raises(RateLimited):
        jobs.submit(t, spec(cost=100), dialect="jobs")


def test_balance_never_negative_under_concurrent_submits(db: Database) -> None:
    jobs, tenants = JobService(db, JobEvents()), TenantService(db)
    t = tenant(db, 1000)

    def attempt(i: int) -> bool:
        try:
            jobs.submit(t, spec(seed=i, cost=300), dialect="jobs")
            return True
        except InsufficientCredits:
            return False

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(16)))
    assert sum(results) == 3
    assert tenants.get(t).balance == 100 == tenants.ledger_sum(t)


def test_idempotent_request_id_under_concurrency(db: Database) -> None:
    jobs, tenants = JobService(db, JobEvents()), TenantService(db)
    t = tenant(db, 10_000)
    barrier = threading.Barrier(20)

    def submit(_: int) -> str:
        barrier.wait()
        return jobs.submit(t, spec(cost=100), dialect="jobs", request_id="req-1", request_hash="h1").id

    with ThreadPoolExecutor(20) as pool:
        ids = set(pool.map(submit, range(20)))
    assert len(ids) == 1
    assert jobs.list(t)[1] == 1 and tenants.get(t).balance == 9_900 == tenants.ledger_sum(t)
    with pytest.raises(Conflict):
        jobs.submit(t, spec("other", cost=100), dialect="jobs", request_id="req-1", request_hash="h2")


def test_stale_attempt_is_fenced_and_requeue_is_bounded(db: Database) -> None:
    jobs = JobService(db, JobEvents(), lease_seconds=-1, max_attempts=2)  # leases expire at once
    t = tenant(db, 1000)
    job = jobs.submit(t, spec(cost=10), dialect="jobs")
    (c1,) = jobs.claim("w1")
    assert jobs.requeue_expired() == 1
    (c2,) = jobs.claim("w2")
    assert c2.attempt == 2
    assert not jobs.succeed(job.id, c1.attempt, [])  # the lost worker cannot write
    assert jobs.renew([Renewal(job.id, c1.attempt, {"0": 0.5})]) == {job.id}  # nor report progress
    assert jobs.requeue_expired() == 1  # second loss: out of attempts
    final = jobs.get(t, job.id)
    assert final.status is JobStatus.FAILED and final.error_code == "worker_lost"
    assert TenantService(db).get(t).balance == 1000


def test_one_renewal_covers_a_batch_and_names_the_jobs_to_stop(db: Database) -> None:
    jobs = JobService(db, JobEvents())
    t = tenant(db, 1000)
    a, b, c = (jobs.submit(t, spec(seed=i, cost=10), dialect="jobs") for i in range(3))
    claims = {cl.job.id: cl for cl in jobs.claim("w", max_jobs=3)}
    assert set(claims) == {a.id, b.id, c.id}
    jobs.cancel(t, b.id)
    stale = Renewal(c.id, claims[c.id].attempt + 1, {"0": 0.9})
    stop = jobs.renew([Renewal(a.id, 1, {"0": 0.25}), Renewal(b.id, 1, {"0": 0.5}), stale])
    assert stop == {b.id, c.id}
    assert jobs.get(t, a.id).progress == {"0": 0.25}
    assert jobs.get(t, b.id).progress == {"0": 0.5}  # canceled, not yet stopped: still recorded
    assert jobs.get(t, c.id).progress == {}  # a stale attempt writes nothing
    assert jobs.renew([Renewal(a.id, 1, {"1": 0.5})]) == set()
    assert jobs.get(t, a.id).progress == {"0": 0.25, "1": 0.5}
    assert jobs.succeed(a.id, 1, [NewArtifact.image(f"{i}.png", 64, 64, 7) for i in range(3)])
    assert jobs.get(t, a.id).progress == {"0": 1.0, "1": 1.0, "2": 1.0}


def test_other_tenant_sees_404(db: Database) -> None:
    jobs = JobService(db, JobEvents())
    a, b = tenant(db, 1000), tenant(db, 1000)
    job = jobs.submit(a, spec(cost=10), dialect="jobs")
    with pytest.raises(NotFound):
        jobs.get(b, job.id)
    with pytest.raises(NotFound):
        jobs.cancel(b, job.id)
    assert jobs.list(b)[1] == 0


def test_queue_rank_and_claim_order(db: Database) -> None:
    jobs = JobService(db, JobEvents())
    t = tenant(db, 1000)
    ids = [jobs.submit(t, spec(seed=i, cost=10), dialect="jobs").id for i in range(3)]
    assert [jobs.queue_position(jobs.get(t, i)) for i in ids] == [(1, 3), (2, 3), (3, 3)]
    assert jobs.claim("w")[0].job.id == ids[0]
    assert jobs.queue_position(jobs.get(t, ids[2])) == (2, 2)


def test_running_cancel_is_seen_by_lease_renewal(db: Database) -> None:
    jobs = JobService(db, JobEvents())
    t = tenant(db, 1000)
    job = jobs.submit(t, spec(cost=10), dialect="jobs")
    (c,) = jobs.claim("w")
    assert jobs.renew([Renewal(job.id, c.attempt)]) == set()
    assert jobs.cancel(t, job.id).status is JobStatus.RUNNING
    assert jobs.renew([Renewal(job.id, c.attempt)]) == {job.id}
    assert jobs.mark_canceled(job.id, c.attempt)
    assert jobs.get(t, job.id).status is JobStatus.CANCELED


def test_a_list_page_carries_every_queued_rank(db: Database) -> None:
    jobs = JobService(db, JobEvents())
    t, other = tenant(db, 1000), tenant(db, 1000)
    mine = [jobs.submit(t, spec(seed=i, cost=10), dialect="jobs").id for i in range(2)]
    jobs.submit(other, spec(cost=10), dialect="jobs")  # another tenant's job still counts in the queue
    mine.append(jobs.submit(t, spec(seed=9, cost=10), dialect="jobs").id)
    jobs.claim("w")  # the oldest leaves the queue
    page, total = jobs.list(t)
    assert total == 3
    by_id = {j.id: j for j in page}
    assert by_id[mine[0]].queue_position is None  # running
    assert [by_id[i].queue_position for i in mine[1:]] == [(1, 3), (3, 3)]
    assert [jobs.queue_position(by_id[i]) for i in mine[1:]] == \
        [jobs.queue_position(jobs.get(t, i, with_queue=True)) for i in mine[1:]]


def test_several_notify_targets_get_one_row_each_and_one_terminal_each(db: Database) -> None:
    from sqlalchemy import select

    from diffusiond.queue.job_service import NotifyTarget
    from diffusiond.store.tables import OutboxRow
    from diffusiond.webhooks.ssrf import UrlPolicy

    jobs = JobService(db, JobEvents(), url_policy=UrlPolicy("127.0.0.1"))
    t = tenant(db, 1000)
    targets = [NotifyTarget("http://127.0.0.1:9/a"), NotifyTarget("http://127.0.0.1:9/b", "sns"),
               NotifyTarget("http://127.0.0.1:9/a", "sns")]  # a URL twice: one row
    job = jobs.submit(t, spec(), dialect="jobs", notify_url="http://127.0.0.1:9/main", notify_targets=targets,
                      dialect_data={"task": "x"})
    assert jobs.get(t, job.id).dialect_data == {"task": "x"}
    (claim,) = jobs.claim("w1")
    jobs.succeed(job.id, claim.attempt, [])
    with db.read() as s:
        rows = s.scalars(select(OutboxRow).where(OutboxRow.tenant_id == t)).all()
    terminal = sorted((r.url, r.format) for r in rows if r.terminal)
    assert terminal == [("http://127.0.0.1:9/a", "standard"), ("http://127.0.0.1:9/b", "sns"),
                        ("http://127.0.0.1:9/main", "standard")]
    assert len(rows) == 3 * 3  # queued, running, succeeded for each URL


def test_a_request_that_failed_at_once(db: Database) -> None:
    jobs, tenants = JobService(db, JobEvents()), TenantService(db)
    t = tenant(db, 1000)
    job = jobs.submit_failed(t, dialect="eks", request_id="eks:a", request_hash="h", code="invalid_url",
                             message="cannot fetch", dialect_data={"id": "a"})
    assert job.status is JobStatus.FAILED and job.error_code == "invalid_url" and job.credits_reserved == 0
    assert jobs.get_by_request(t, "eks:a").id == job.id
    again = jobs.submit_failed(t, dialect="eks", request_id="eks:a", request_hash="h", code="x", message="y")
    assert again.id == job.id
    with pytest.raises(Conflict):
        jobs.submit_failed(t, dialect="eks", request_id="eks:a", request_hash="other", code="x", message="y")
    assert jobs.claim("w1") == [] and tenants.get(t).balance == 1000
    with pytest.raises(NotFound):
        jobs.get_by_request(t, "eks:never")
