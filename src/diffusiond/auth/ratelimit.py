"""Token-bucket rate limits per key: in memory by default, in Redis when replicas share a limit.

A refusal says how long to wait: the seconds until the bucket holds a whole token again, which the
API sends as `Retry-After` and in the IETF `RateLimit` fields.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Protocol

from diffusiond.domain.errors import RateLimited


class RateLimiter(Protocol):
    # True when `acquire` does network I/O, so async callers must run it off the event loop.
    blocking: bool

    def acquire(self, key: str, rate: float, burst: int) -> None:
        """Take one token or raise RateLimited (with the seconds until one is there)."""
        ...


def refused(wait: float, rate: float, burst: int) -> RateLimited:
    """The refusal for a bucket of `burst` tokens refilled at `rate` a second, `wait` s from a token."""
    return RateLimited("rate limit exceeded; slow down", retry_after=wait, policy="burst", quota=burst,
                       window=math.ceil(burst / rate))


class MemoryRateLimiter:
    """Buckets in this process: fine for one API replica."""

    blocking = False

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, rate: float, burst: int) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise refused((1.0 - tokens) / rate, rate, burst)
            self._buckets[key] = (tokens - 1.0, now)


# Refill and take atomically inside Redis so every API replica sees one bucket per key. Returns the
# seconds until a token is there: 0 when one was taken. (A string: Redis turns Lua numbers into integers.)
_REDIS_BUCKET = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'l') or ARGV[3])
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 't', tokens, 'l', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by all API replicas."""

    blocking = True

    def __init__(self, url: str) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url)
        self._script = self._redis.register_script(_REDIS_BUCKET)

    def acquire(self, key: str, rate: float, burst: int) -> None:
        wait = float(self._script(keys=[f"diffusiond:rl:{key}"], args=[rate, burst, time.time()]))
        if wait > 0:
            raise refused(wait, rate, burst)
