"""Tenants: balance and account details, and admin credit grants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update

from diffusiond.domain.errors import NotFound
from diffusiond.store.database import Database
from diffusiond.store.tables import DialectSettingsRow, LedgerRow, TenantRow


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    email: str | None
    balance: int  # millicredits
    webhook_secret: str


class TenantService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, tenant_id: str) -> Tenant:
        with self.db.read() as s:
            row = s.get(TenantRow, tenant_id)
            if row is None:
                raise NotFound(f"tenant {tenant_id} not found")
            return Tenant(row.id, row.name, row.email, row.balance, row.webhook_secret)

    def grant(self, tenant_id: str, millicredits: int) -> Tenant:
        """Add (or, negative, remove down to zero) credits, recorded in the ledger."""
        with self.db.session() as s:
            row = s.get(TenantRow, tenant_id, with_for_update=True)
            if row is None:
                raise NotFound(f"tenant {tenant_id} not found")
            amount = max(millicredits, -row.balance)
            s.execute(update(TenantRow).where(TenantRow.id == tenant_id)
                      .values(balance=TenantRow.balance + amount))
            s.add(LedgerRow(tenant_id=tenant_id, entry="grant", amount=amount))
        return self.get(tenant_id)

    def ledger_sum(self, tenant_id: str) -> int:
        """The balance recomputed from the ledger (an invariant the tests check)."""
        with self.db.read() as s:
            return int(s.scalar(select(func.coalesce(func.sum(LedgerRow.amount), 0))
                                .where(LedgerRow.tenant_id == tenant_id)) or 0)

    def rotate_webhook_secret(self, tenant_id: str) -> str:
        import secrets

        secret = secrets.token_urlsafe(32)
        with self.db.session() as s:
            row = s.get(TenantRow, tenant_id)
            if row is None:
                raise NotFound(f"tenant {tenant_id} not found")
            row.webhook_secret = secret
        return secret

    def dialect_settings(self, tenant_id: str, dialect: str) -> dict[str, Any]:
        """The tenant's own settings in a dialect (A1111's options): what it changed, nothing else."""
        with self.db.read() as s:
            row = s.get(DialectSettingsRow, (tenant_id, dialect))
            return dict(row.data) if row is not None else {}

    def update_dialect_settings(self, tenant_id: str, dialect: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge `changes` into the tenant's settings in `dialect`; other tenants never see them."""
        with self.db.session() as s:
            row = s.get(DialectSettingsRow, (tenant_id, dialect), with_for_update=True)
            if row is None:
                row = DialectSettingsRow(tenant_id=tenant_id, dialect=dialect, data={})
                s.add(row)
            row.data = {**(row.data or {}), **changes}
            row.updated_at = datetime.now(UTC)
            return dict(row.data)
