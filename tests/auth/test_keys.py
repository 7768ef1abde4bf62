"""API keys are hashed, shown once, and map to their tenant."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from diffusiond.auth.keys import KeyService, hash_key
from diffusiond.auth.ratelimit import MemoryRateLimiter
from diffusiond.domain.errors import RateLimited, Unauthorized
from diffusiond.store.database import Database
from diffusiond.store.tables import ApiKeyRow


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'k.db'}")
    database.migrate()
    return database


def test_key_is_stored_hashed_and_authenticates(db: Database) -> None:
    keys = KeyService(db)
    created = keys.create("alice", credits_milli=5000)
    with db.session() as s:
        stored = s.scalars(select(ApiKeyRow.key_hash)).all()
    assert created.key not in stored and hash_key(created.key) in stored
    p = keys.authenticate(created.key)
    assert p.tenant_id == created.tenant_id and p.role == "user"


@pytest.mark.parametrize("presented", [None, "", "sk-dfd-wrong"])
def test_missing_or_wrong_key_is_unauthorized(db: Database, presented: str | None) -> None:
    KeyService(db).create("alice")
    with pytest.raises(Unauthorized):
        KeyService(db).authenticate(presented)


def test_revoked_key_stops_working(db: Database) -> None:
    keys = KeyService(db)
    created = keys.create("bob")
    keys.revoke(created.key_id)
    with pytest.raises(Unauthorized):
        keys.authenticate(created.key)


def test_verified_key_is_cached_without_database_reads(db: Database) -> None:
    keys = KeyService(db, cache_seconds=60)
    created = keys.create("alice")
    assert keys.cached(created.key) is None  # nothing verified yet
    first = keys.authenticate(created.key)
    db.dispose()
    db.engine = None  # type: ignore[assignment]  # any database access would now fail
    assert keys.cached(created.key) == first
    assert keys.authenticate(created.key) == first
    assert keys.cached("sk-dfd-wrong") is None


def test_revoking_forgets_the_cached_key_at_once(db: Database) -> None:
    keys = KeyService(db, cache_seconds=60)
    created = keys.create("alice")
    keys.authenticate(created.key)
    keys.revoke(created.key_id)
    assert keys.cached(created.key) is None
    with pytest.raises(Unauthorized):
        keys.authenticate(created.key)


def test_cache_entries_expire(db: Database) -> None:
    keys = KeyService(db, cache_seconds=0.05)
    created = keys.create("alice")
    keys.authenticate(created.key)
    # Revoked elsewhere (another replica): this process notices once its entry expires.
    KeyService(db).revoke(created.key_id)
    assert keys.authenticate(created.key).key_id == created.key_id
    time.sleep(0.06)
    with pytest.raises(Unauthorized):
        keys.authenticate(created.key)


def test_cache_off_reads_every_time(db: Database) -> None:
    keys = KeyService(db, cache_seconds=0)
    created = keys.create("alice")
    keys.authenticate(created.key)
    assert keys.cached(created.key) is None


def test_bootstrap_key_registered_once_as_admin(db: Database) -> None:
    keys = KeyService(db)
    keys.ensure_bootstrap("sk-boot", 1000)
    keys.ensure_bootstrap("sk-boot", 1000)
    with db.session() as s:
        assert len(s.scalars(select(ApiKeyRow)).all()) == 1
    assert keys.authenticate("sk-boot").is_admin


def test_token_bucket_allows_burst_then_limits() -> None:
    limiter = MemoryRateLimiter()
    for _ in range(5):
        limiter.acquire("k", rate=0.001, burst=5)
    with pytest.raises(RateLimited):
        limiter.acquire("k", rate=0.001, burst=5)
    limiter.acquire("other", rate=0.001, burst=5)  # buckets are per key


def test_redis_bucket_is_shared_between_limiters() -> None:
    """Two API replicas (two limiter objects) draw from one bucket in a real Redis."""
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except Exception:
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    import uuid

    from diffusiond.auth.ratelimit import RedisRateLimiter

    a, b = RedisRateLimiter("redis://127.0.0.1:6379/0"), RedisRateLimiter("redis://127.0.0.1:6379/0")
    key = f"test-{uuid.uuid4().hex}"
    for i in range(4):
        (a if i % 2 else b).acquire(key, rate=0.001, burst=4)
    with pytest.raises(RateLimited):
        a.acquire(key, rate=0.001, burst=4)


def test_rate_and_burst_per_key_and_the_anonymous_tenant(tmp_path: Path) -> None:
    from diffusiond.auth.keys import KeyService
    from diffusiond.domain.errors import InvalidParams, Unauthorized
    from diffusiond.store.database import Database

    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    db.migrate()
    keys = KeyService(db)
    made = keys.create("k", rate=2.5, burst=7)
    principal = keys.authenticate(made.key)
    assert (principal.rate_limit, principal.rate_burst) == (2.5, 7)
    with pytest.raises(InvalidParams):
        keys.create("k", burst=0)
    with pytest.raises(Unauthorized):
        keys.authenticate(None)
    anonymous = KeyService(db, anonymous_tenant="solo")
    anonymous.ensure_tenant("solo", 5000)
    assert anonymous.authenticate(None).tenant_id == "solo"
    with pytest.raises(Unauthorized):
        anonymous.authenticate("sk-wrong")  # a wrong key is still wrong
    db.dispose()
