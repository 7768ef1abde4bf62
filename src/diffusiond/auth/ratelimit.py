"""Token-bucket rate limits per key: in memory by default, in Redis when replicas share a limit."""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from diffusiond.domain.errors import RateLimited


class RateLimiter(Protocol):
    # True when `acquire` does network I/O, so async callers must run it off the event loop.
    blocking: bool

    def acquire(self, key: str, rate: float, burst: int) -> None:
        """Take one token or raise RateLimited."""
        ...


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
                raise RateLimited("rate limit exceeded; slow down")
            self._buckets[key] = (tokens - 1.0, now)


# Refill and take atomically inside Redis so every API replica sees one bucket per key.
_REDIS_BUCKET = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'l') or ARGV[3])
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 't', tokens, 'l', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return ok
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by all API replicas."""

    blocking = True

    def __init__(self, url: str) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url)
        self._script = self._redis.register_script(_REDIS_BUCKET)

    def acquire(self, key: str, rate: float, burst: int) -> None:
        ok = self._script(keys=[f"diffusiond:rl:{key}"], args=[rate, burst, time.time()])
        if int(ok) != 1:
            raise RateLimited("rate limit exceeded; slow down")
