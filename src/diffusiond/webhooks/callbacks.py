"""Callback URLs a tenant registers once, to hear of every job of one dialect (EKS completion callbacks).

They are copied onto each job at submit (`JobService.submit(notify_targets=...)`), so a job's
webhooks go where the callbacks pointed when it was submitted. Each URL passes the webhook SSRF
guard when registered and again at every delivery.
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from diffusiond.domain.errors import Conflict, InvalidParams, NotFound
from diffusiond.queue.job_service import NotifyTarget
from diffusiond.store.database import Database
from diffusiond.store.tables import CallbackRow, TenantRow
from diffusiond.webhooks.formats import FORMATS
from diffusiond.webhooks.ssrf import UrlPolicy


@dataclass(frozen=True)
class Callback:
    id: str
    tenant_id: str
    dialect: str
    url: str
    format: str


class CallbackService:
    def __init__(self, db: Database, policy: UrlPolicy) -> None:
        self.db = db
        self.policy = policy

    def add(self, tenant_id: str, url: str, *, dialect: str = "eks", format: str = "standard") -> Callback:
        if format not in FORMATS:
            raise InvalidParams(f"format: must be one of {', '.join(FORMATS)}", field="format")
        self.policy.check(url)
        row = CallbackRow(id=f"cb-{uuid.uuid4().hex[:20]}", tenant_id=tenant_id, dialect=dialect, url=url,
                          format=format)
        try:
            with self.db.session() as s:
                if s.get(TenantRow, tenant_id) is None:
                    raise NotFound(f"tenant {tenant_id} not found")
                s.add(row)
        except IntegrityError:
            raise Conflict(f"{url} is already a {dialect} callback of tenant {tenant_id}") from None
        return _callback(row)

    def list(self, tenant_id: str, dialect: str | None = None) -> builtins.list[Callback]:
        with self.db.read() as s:
            q = select(CallbackRow).where(CallbackRow.tenant_id == tenant_id)
            if dialect is not None:
                q = q.where(CallbackRow.dialect == dialect)
            return [_callback(r) for r in s.scalars(q.order_by(CallbackRow.created_at, CallbackRow.id))]

    def remove(self, tenant_id: str, callback_id: str) -> None:
        with self.db.session() as s:
            row = s.get(CallbackRow, callback_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"callback {callback_id} not found")
            s.delete(row)

    def targets(self, tenant_id: str, dialect: str) -> builtins.list[NotifyTarget]:
        """Where a new job of `dialect` sends its webhooks."""
        return [NotifyTarget(c.url, c.format) for c in self.list(tenant_id, dialect)]


def _callback(row: CallbackRow) -> Callback:
    return Callback(row.id, row.tenant_id, row.dialect, row.url, row.format)
