"""API keys: random, shown once, stored as SHA-256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from diffusiond.domain.errors import InvalidParams, NotFound, Unauthorized
from diffusiond.store.database import Database
from diffusiond.store.tables import ApiKeyRow, LedgerRow, TenantRow
from diffusiond.ttl_cache import TtlCache

KEY_PREFIX = "sk-dfd-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its tenant and role."""

    key_id: str
    tenant_id: str
    role: str
    rate_limit: float | None = None
    rate_burst: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class CreatedKey:
    key: str  # the only time the plain key exists
    key_id: str
    tenant_id: str


class KeyService:
    """Creates tenants and keys, and turns a presented key into a Principal.

    A verified key is remembered for `cache_seconds` (by digest, never the key itself), so a busy
    client costs no database read per request. Revoking in this process forgets it at once; other
    replicas stop accepting it within `cache_seconds`.
    """

    def __init__(self, db: Database, cache_seconds: float = 0.0, *, anonymous_tenant: str | None = None) -> None:
        self.db = db
        self._cache: TtlCache[str, Principal] = TtlCache(cache_seconds)
        # Requests without credentials act as this tenant (a single-user install on loopback); off when None.
        self.anonymous_tenant = anonymous_tenant

    def create(self, name: str, *, admin: bool = False, credits_milli: int = 0,
               tenant_id: str | None = None, key: str | None = None, rate: float | None = None,
               burst: int | None = None) -> CreatedKey:
        """A new key (and tenant, unless `tenant_id`); `rate`/`burst` set its own token bucket."""
        if (rate is not None and rate <= 0) or (burst is not None and burst < 1):
            raise InvalidParams("rate must be positive and burst at least 1")
        key = key or KEY_PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as s:
            if tenant_id is None:
                tenant_id = new_id("tenant")
                s.add(TenantRow(id=tenant_id, name=name, balance=credits_milli,
                                webhook_secret=secrets.token_urlsafe(32)))
                if credits_milli:
                    s.add(LedgerRow(tenant_id=tenant_id, entry="grant", amount=credits_milli))
                s.flush()  # the tenant row must exist before the key that references it
            elif s.get(TenantRow, tenant_id) is None:
                raise NotFound(f"tenant {tenant_id} not found")
            row = ApiKeyRow(id=new_id("key"), tenant_id=tenant_id, name=name, key_hash=hash_key(key),
                            prefix=key[:12], role="admin" if admin else "user", rate_limit=rate, rate_burst=burst)
            s.add(row)
        return CreatedKey(key=key, key_id=row.id, tenant_id=tenant_id)

    def ensure_bootstrap(self, key: str, credits_milli: int) -> None:
        """Register `key` as an admin key unless it is already known (scripted set-ups, tests)."""
        with self.db.session() as s:
            known = s.scalar(select(ApiKeyRow.id).where(ApiKeyRow.key_hash == hash_key(key)))
        if known is None:
            self.create("bootstrap", admin=True, credits_milli=credits_milli, key=key)

    def cached(self, key: str | None) -> Principal | None:
        """The principal for a key verified less than `cache_seconds` ago, else None (no I/O)."""
        return self._cache.get(hash_key(key)) if key and self._cache.seconds else None

    def ensure_tenant(self, tenant_id: str, credits_milli: int) -> None:
        """Create the tenant `tenant_id` unless it exists (the anonymous tenant's first start)."""
        with self.db.session() as s:
            if s.get(TenantRow, tenant_id) is None:
                s.add(TenantRow(id=tenant_id, name=tenant_id, balance=credits_milli,
                                webhook_secret=secrets.token_urlsafe(32)))
                if credits_milli:
                    s.add(LedgerRow(tenant_id=tenant_id, entry="grant", amount=credits_milli))

    def authenticate(self, key: str | None) -> Principal:
        if not key and self.anonymous_tenant:
            return Principal(key_id="anonymous", tenant_id=self.anonymous_tenant, role="user")
        if not key:
            raise Unauthorized("missing authorization header")
        principal = self.cached(key)
        return principal if principal is not None else self._lookup(hash_key(key))

    def _lookup(self, digest: str) -> Principal:
        with self.db.read() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
        # The lookup is by digest; the compare below keeps the final check constant-time anyway.
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
            raise Unauthorized("invalid API key")
        principal = Principal(key_id=row.id, tenant_id=row.tenant_id, role=row.role, rate_limit=row.rate_limit,
                              rate_burst=row.rate_burst)
        self._cache.put(digest, principal)
        return principal

    def revoke(self, key_id: str) -> None:
        with self.db.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"key {key_id} not found")
            row.revoked_at = datetime.now(UTC)
        self._cache.drop(lambda principal: principal.key_id == key_id)
