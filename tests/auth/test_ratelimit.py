"""A refused request learns how long to wait, from the memory bucket and from the Redis one alike."""

from __future__ import annotations

import uuid

import pytest

from diffusiond.auth.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from diffusiond.domain.errors import RateLimited


def redis_limiter() -> RedisRateLimiter:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except Exception:
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    return RedisRateLimiter("redis://127.0.0.1:6379/0")


@pytest.mark.parametrize("make", [MemoryRateLimiter, redis_limiter], ids=["memory", "redis"])
def test_a_refusal_says_when_a_token_is_back_and_which_policy(make: type[RateLimiter]) -> None:
    limiter = make()
    key = f"test-{uuid.uuid4().hex}"
    for _ in range(3):
        limiter.acquire(key, rate=0.25, burst=3)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire(key, rate=0.25, burst=3)
    err = refused.value
    assert 3.5 < err.retry_after <= 4.0  # an empty bucket refills one token in 1 / 0.25 s
    assert (err.policy, err.quota, err.window) == ("burst", 3, 12)
