"""The endpoint state machine on SQLite and PostgreSQL: deploy, hold, ready, fail, delete, sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from diffusiond.domain.endpoints import CPU, INSTANCE_TABLES, EndpointStatus, load_instance_table
from diffusiond.domain.errors import Conflict, InvalidParams, NotFound
from diffusiond.domain.jobs import JobStatus
from diffusiond.domain.params import Diffusion, GenerateSpec, Txt2Img, WeightedPrompt
from diffusiond.endpoints.service import EndpointService
from diffusiond.queue.events import JobEvents
from diffusiond.queue.job_service import JobService
from diffusiond.store.database import Database
from diffusiond.store.tables import EndpointRow, LedgerRow, TenantRow

SPEC = GenerateSpec(stages=(Txt2Img(Diffusion(model="tiny", prompts=(WeightedPrompt("x"),), width=64, height=64,
                                              steps=2)),))


@pytest.fixture
def parts(db: Database) -> tuple[EndpointService, JobService]:
    with db.session() as s:
        s.add(TenantRow(id="t1", name="t1", balance=100_000, webhook_secret="x"))
        s.add(TenantRow(id="t2", name="t2", balance=100_000, webhook_secret="x"))
    jobs = JobService(db, JobEvents())
    return EndpointService(db, jobs, INSTANCE_TABLES["cpu"]), jobs


def test_deploy_names_and_checks(parts: tuple[EndpointService, JobService]) -> None:
    endpoints, _ = parts
    e = endpoints.deploy("t1", "ml.g5.xlarge", 2)
    assert e.name == f"infer-endpoint-{e.id[:7]}" and e.status is EndpointStatus.CREATING
    assert (e.desired_replicas, e.min_replicas, e.max_replicas, e.ready_replicas) == (2, 2, 2, 0)
    assert endpoints.deploy("t1", "ml.g5.xlarge", 1, name="mine", autoscaling=True).max_replicas == 2
    with pytest.raises(Conflict):
        endpoints.deploy("t1", "ml.g5.xlarge", 1, name="mine")
    assert endpoints.deploy("t2", "ml.g5.xlarge", 1, name="mine").tenant_id == "t2"  # names are per tenant
    for kwargs in ({"name": "a+b"}, {"name": "-x"}, {"name": "x" * 64}):
        with pytest.raises(InvalidParams):
            endpoints.deploy("t1", "ml.g5.xlarge", 1, **kwargs)  # type: ignore[arg-type]
    for instance, count in (("ml.unknown", 1), ("ml.g5.xlarge", 0), ("ml.g5.xlarge", 9)):
        with pytest.raises(InvalidParams):
            endpoints.deploy("t1", instance, count)
    with pytest.raises(NotFound):
        endpoints.get("t2", e.id)
    assert [x.name for x in endpoints.list("t1")][-1] == e.name


def test_hold_ready_in_service_and_lapsed_holds(db: Database, parts: tuple[EndpointService, JobService]) -> None:
    endpoints, _ = parts
    e = endpoints.deploy("t1", "ml.g5.xlarge", 2, name="p")
    assert [x.id for x in endpoints.hold("exec-1", 30)] == [e.id]
    assert endpoints.hold("exec-2", 30) == []  # held by another executor
    endpoints.set_ready(e.id, "exec-2", 2)  # not the holder: ignored
    endpoints.set_ready(e.id, "exec-1", 1)
    assert endpoints.get("t1", "p").status is EndpointStatus.CREATING
    endpoints.set_ready(e.id, "exec-1", 2)
    ready = endpoints.get("t1", "p")
    assert ready.status is EndpointStatus.IN_SERVICE and ready.ended_at is not None
    assert endpoints.serving("t1", "p").id == e.id
    with db.session() as s:  # exec-1 stopped renewing: its hold lapsed
        row = s.get(EndpointRow, e.id)
        assert row is not None
        row.owner_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert [x.id for x in endpoints.hold("exec-2", 30)] == [e.id]  # taken over
    endpoints.release("exec-2")
    assert endpoints.get("t1", "p").ready_replicas == 0 and endpoints.hold("exec-3", 30)


def test_serving_refuses_creating_unknown_and_other_tenants(parts: tuple[EndpointService, JobService]) -> None:
    endpoints, _ = parts
    endpoints.deploy("t1", "ml.g5.xlarge", 1, name="p")
    with pytest.raises(InvalidParams, match="Creating, not InService"):
        endpoints.serving("t1", "p")
    for tenant, name in (("t1", "nope"), ("t2", "p")):
        with pytest.raises(NotFound):
            endpoints.serving(tenant, name)


def test_fail_and_delete_fail_queued_jobs_and_release_credits(db: Database,
                                                              parts: tuple[EndpointService, JobService]) -> None:
    endpoints, jobs = parts
    a = endpoints.deploy("t1", "ml.g5.xlarge", 1, name="a")
    b = endpoints.deploy("t1", "ml.g5.xlarge", 1, name="b")
    endpoints.hold("x", 30)
    on_a = jobs.submit("t1", SPEC, dialect="esd", endpoint=a.id)
    on_b = jobs.submit("t1", SPEC, dialect="esd", endpoint=b.id)
    elsewhere = jobs.submit("t1", SPEC, dialect="esd")
    endpoints.fail(a.id, "x", "worker a-0 could not start: boom")
    failed = endpoints.get("t1", "a")
    assert failed.status is EndpointStatus.FAILED and failed.error == "worker a-0 could not start: boom"
    job = jobs.get("t1", on_a.id)
    assert job.status is JobStatus.FAILED and job.error_code == "endpoint_failed" and "boom" in str(job.error_message)
    # held by a live executor: Deleting until its workers stop; queued jobs fail now
    assert endpoints.delete("t1", "b").status is EndpointStatus.DELETING
    assert jobs.get("t1", on_b.id).error_code == "endpoint_deleted"
    assert jobs.get("t1", elsewhere.id).status is JobStatus.QUEUED
    endpoints.finish_delete(b.id, "x")
    assert endpoints.get("t1", "b").status is EndpointStatus.DELETED
    # a deleted name is free again, and a failed endpoint is deleted at once
    assert endpoints.deploy("t1", "ml.g5.xlarge", 1, name="b").status is EndpointStatus.CREATING
    assert endpoints.delete("t1", "a").status is EndpointStatus.DELETED
    with db.read() as s:
        balance = s.get(TenantRow, "t1").balance  # type: ignore[union-attr]
        released = s.query(LedgerRow).filter(LedgerRow.entry == "release").count()
    assert released == 2 and balance == 100_000 - jobs.get("t1", elsewhere.id).credits_reserved


def test_an_unheld_endpoint_deletes_at_once_and_sweep_catches_stragglers(
        parts: tuple[EndpointService, JobService]) -> None:
    endpoints, jobs = parts
    e = endpoints.deploy("t1", "ml.g5.xlarge", 1, name="lonely")
    assert endpoints.delete("t1", "lonely").status is EndpointStatus.DELETED
    straggler = jobs.submit("t1", SPEC, dialect="esd", endpoint=e.id)  # a submit that raced the delete
    assert endpoints.sweep() == 1 and jobs.get("t1", straggler.id).status is JobStatus.FAILED
    assert endpoints.sweep() == 0
    with pytest.raises(NotFound):
        endpoints.delete("t1", "lonely")


def test_instance_tables() -> None:
    assert set(load_instance_table("cpu").values()) == {CPU}
    gpu = load_instance_table("aws-gpu")
    assert gpu["ml.g5.12xlarge"].gpus == 4 and gpu["ml.p4d.24xlarge"].precision == "bf16"
    custom = load_instance_table('{"ml.g5.xlarge": {"gpus": 1, "precision": "fp16"}, "my.box": {"cpu_threads": 2}}')
    assert custom["ml.g5.xlarge"].device == "cuda" and custom["my.box"].cpu_threads == 2
    assert custom["ml.g4dn.xlarge"] == CPU  # unnamed types keep the CPU profile
    with pytest.raises(ValueError):
        load_instance_table('{"x": {"precision": "fp8"}}')
