"""The endpoint service: the one place endpoints change state.

Clients deploy, list and delete endpoints here; the executor that runs an endpoint's workers reports
their readiness and failures here. Both sides only write rows: an executor learns what to run by
reading them (`hold`), so a deployment asked for on one API replica is started by whichever
machine runs workers, and taken over by another when that one stops renewing its hold.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from diffusiond.domain.clock import now_utc
from diffusiond.domain.endpoints import (
    DeviceProfile,
    Endpoint,
    EndpointStatus,
    check_endpoint_name,
    check_replicas,
)
from diffusiond.domain.errors import Conflict, InvalidParams, NotFound
from diffusiond.queue.job_service import JobService
from diffusiond.store.database import Database, as_utc
from diffusiond.store.tables import EndpointRow

LIVE = (EndpointStatus.CREATING.value, EndpointStatus.IN_SERVICE.value)
HELD = (*LIVE, EndpointStatus.DELETING.value)  # statuses an executor has work for
GONE_CODE = "endpoint_deleted"


class EndpointService:
    def __init__(self, db: Database, jobs: JobService, instance_types: Mapping[str, DeviceProfile]) -> None:
        self.db = db
        self.jobs = jobs
        self.instance_types = dict(instance_types)
        # Called after a client changed an endpoint (deploy, delete): the local executor looks at once.
        self.on_change: Callable[[], None] | None = None

    # ---- client side -------------------------------------------------------------------------------

    def profile(self, instance_type: str) -> DeviceProfile:
        profile = self.instance_types.get(instance_type)
        if profile is None:
            known = ", ".join(sorted(self.instance_types)[:6])
            raise InvalidParams(f"unknown instance_type {instance_type!r} (known: {known}, ...; see "
                                "DIFFUSIOND_INSTANCE_TYPES)", code="invalid_instance_type", field="instance_type")
        return profile

    def deploy(self, tenant_id: str, instance_type: str, count: int, *, name: str | None = None,
               autoscaling: bool = False) -> Endpoint:
        """Record a new endpoint, `Creating`; an executor starts its `count` workers."""
        self.profile(instance_type)
        check_replicas(count)
        endpoint_id = str(uuid.uuid4())
        name = check_endpoint_name(name) if name else f"infer-endpoint-{endpoint_id[:7]}"
        with self.db.session() as s:
            if self._live_named(s, tenant_id, name) is not None:
                raise Conflict(f"an endpoint named {name!r} already exists", code="endpoint_exists")
            now = now_utc()
            row = EndpointRow(id=endpoint_id, tenant_id=tenant_id, name=name, instance_type=instance_type,
                              desired_replicas=count, min_replicas=count,
                              max_replicas=count * 2 if autoscaling else count, ready_replicas=0,
                              autoscaling=autoscaling, status=EndpointStatus.CREATING.value,
                              created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            endpoint = _endpoint(row)
        self._changed()
        return endpoint

    def get(self, tenant_id: str, ref: str) -> Endpoint:
        """An endpoint by id, or by name (the newest of that name)."""
        with self.db.read() as s:
            row = s.get(EndpointRow, ref)
            if row is None or row.tenant_id != tenant_id:
                row = s.scalar(select(EndpointRow).where(EndpointRow.tenant_id == tenant_id, EndpointRow.name == ref)
                               .order_by(EndpointRow.created_at.desc()).limit(1))
            if row is None:
                raise NotFound(f"endpoint {ref!r} not found")
            return _endpoint(row)

    def list(self, tenant_id: str) -> builtins.list[Endpoint]:
        """The tenant's endpoints, deleted ones included, newest first."""
        with self.db.read() as s:
            rows = s.scalars(select(EndpointRow).where(EndpointRow.tenant_id == tenant_id)
                             .order_by(EndpointRow.created_at.desc(), EndpointRow.id))
            return [_endpoint(r) for r in rows]

    def serving(self, tenant_id: str, name: str) -> Endpoint:
        """The endpoint a job may be sent to: the tenant's, by name, and `InService`."""
        with self.db.read() as s:
            row = self._live_named(s, tenant_id, name)
            if row is None:
                raise NotFound(f"endpoint {name!r} not found (unknown or deleted)", code="endpoint_not_found")
            if row.status != EndpointStatus.IN_SERVICE.value:
                raise InvalidParams(f"endpoint {name!r} is {row.status}, not InService", code="endpoint_not_ready",
                                    field="sagemaker_endpoint")
            return _endpoint(row)

    def delete(self, tenant_id: str, name: str) -> Endpoint:
        """Stop taking jobs: queued ones fail at once, running ones finish, then the workers stop.

        An endpoint no executor holds has no workers to wait for and is `Deleted` at once.
        """
        with self.db.session() as s:
            row = s.scalar(select(EndpointRow).where(EndpointRow.tenant_id == tenant_id, EndpointRow.name == name,
                                                     EndpointRow.status != EndpointStatus.DELETED.value)
                           .order_by(EndpointRow.created_at.desc()).limit(1).with_for_update())
            if row is None:
                raise NotFound(f"endpoint {name!r} not found", code="endpoint_not_found")
            now = now_utc()
            held = row.owner is not None and row.owner_expires_at is not None and as_utc(row.owner_expires_at) > now
            if held and row.status in HELD:  # its workers stop after their running jobs
                row.status = EndpointStatus.DELETING.value
            else:
                _end(row, EndpointStatus.DELETED, now)
            row.updated_at = now
            endpoint_id = row.id
        self.jobs.fail_queued([endpoint_id], GONE_CODE, f"endpoint {name!r} was deleted before this job started")
        self._changed()
        return self.get(tenant_id, endpoint_id)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @staticmethod
    def _live_named(s: Session, tenant_id: str, name: str) -> EndpointRow | None:
        return s.scalar(select(EndpointRow).where(EndpointRow.tenant_id == tenant_id, EndpointRow.name == name,
                                                  EndpointRow.status.in_(LIVE)).limit(1))

    # ---- executor side -------------------------------------------------------------------------------

    def hold(self, owner: str, lease_seconds: float) -> builtins.list[Endpoint]:
        """Take or renew the endpoints this executor runs: its own, unheld ones and lapsed holds."""
        now = now_utc()
        mine_or_free = (EndpointRow.status.in_(HELD), or_(
            EndpointRow.owner.is_(None), EndpointRow.owner == owner, EndpointRow.owner_expires_at < now))
        # Read first: most ticks find nothing to take and holds far from lapsing, and write nothing.
        with self.db.read() as s:
            rows = s.scalars(select(EndpointRow).where(*mine_or_free).order_by(EndpointRow.created_at)).all()
            renew_by = now + timedelta(seconds=lease_seconds / 2)
            if all(r.owner == owner and r.owner_expires_at and as_utc(r.owner_expires_at) > renew_by for r in rows):
                return [_endpoint(r) for r in rows]
        with self.db.session() as s:
            rows = s.scalars(select(EndpointRow).where(*mine_or_free).order_by(EndpointRow.created_at)
                             .with_for_update(skip_locked=True)).all()
            for row in rows:
                row.owner = owner
                row.owner_expires_at = now + timedelta(seconds=lease_seconds)
            return [_endpoint(r) for r in rows]

    def release(self, owner: str) -> None:
        """Let go of every endpoint this executor holds (it is stopping): another may start them now."""
        with self.db.session() as s:
            for row in s.scalars(select(EndpointRow).where(EndpointRow.owner == owner).with_for_update()):
                row.owner = None
                row.owner_expires_at = None
                if row.status in LIVE:
                    row.ready_replicas = 0

    def set_ready(self, endpoint_id: str, owner: str, ready: int) -> None:
        """`ready` workers have loaded their model; all of them make a `Creating` endpoint `InService`."""
        with self.db.session() as s:
            row = self._held(s, endpoint_id, owner)
            if row is None or row.status not in LIVE or row.ready_replicas == ready:
                return
            row.ready_replicas = ready
            now = now_utc()
            row.updated_at = now
            if row.status == EndpointStatus.CREATING.value and ready >= row.desired_replicas:
                row.status = EndpointStatus.IN_SERVICE.value
                row.ended_at = now

    def fail(self, endpoint_id: str, owner: str, error: str) -> None:
        """Its workers could not start: `Failed`, and its queued jobs fail with the reason."""
        with self.db.session() as s:
            row = self._held(s, endpoint_id, owner)
            if row is None or row.status not in LIVE:
                return
            _end(row, EndpointStatus.FAILED, now_utc())
            row.error = error[:4000]
            name = row.name
        self.jobs.fail_queued([endpoint_id], "endpoint_failed", f"endpoint {name!r} failed: {error[:500]}")

    def finish_delete(self, endpoint_id: str, owner: str) -> None:
        """A `Deleting` endpoint's workers have stopped: it is `Deleted`."""
        with self.db.session() as s:
            row = self._held(s, endpoint_id, owner)
            if row is None or row.status != EndpointStatus.DELETING.value:
                return
            _end(row, EndpointStatus.DELETED, now_utc())
            name = row.name
        self.jobs.fail_queued([endpoint_id], GONE_CODE, f"endpoint {name!r} was deleted before this job started")

    def sweep(self) -> int:
        """Fail jobs that reached the queue of an endpoint already gone (a submit racing a delete)."""
        with self.db.read() as s:
            gone = list(s.scalars(select(EndpointRow.id).where(
                EndpointRow.status.in_((EndpointStatus.DELETED.value, EndpointStatus.FAILED.value)),
                EndpointRow.updated_at > now_utc() - timedelta(hours=1))))
        return self.jobs.fail_queued(gone, GONE_CODE, "the endpoint is no longer in service") if gone else 0

    @staticmethod
    def _held(s: Session, endpoint_id: str, owner: str) -> EndpointRow | None:
        row = s.get(EndpointRow, endpoint_id, with_for_update=True)
        return row if row is not None and row.owner == owner else None


def _end(row: EndpointRow, status: EndpointStatus, now: datetime) -> None:
    row.status = status.value
    row.ended_at = now
    row.updated_at = now
    row.owner = None
    row.owner_expires_at = None
    row.ready_replicas = 0


def _endpoint(row: EndpointRow) -> Endpoint:
    return Endpoint(id=row.id, tenant_id=row.tenant_id, name=row.name, instance_type=row.instance_type,
                    desired_replicas=row.desired_replicas, min_replicas=row.min_replicas,
                    max_replicas=row.max_replicas, ready_replicas=row.ready_replicas, autoscaling=row.autoscaling,
                    status=EndpointStatus(row.status), created_at=as_utc(row.created_at),
                    updated_at=as_utc(row.updated_at), ended_at=as_utc(row.ended_at) if row.ended_at else None,
                    error=row.error)
