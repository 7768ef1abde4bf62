"""Wake-ups for clients waiting on a job (synchronous dialects, SSE).

The database stays the truth: a wake-up only tells a waiter to re-read the row. Waiters also
re-read on a short timer, which covers state changes made by other processes (scale-out).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable


class JobEvents:
    """In-process fan-out from worker threads to asyncio waiters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)
        self._listeners: list[Callable[[str], None]] = []

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Call `callback(job_id)` on every change (workers use it to wake on new jobs)."""
        self._listeners.append(callback)

    def publish(self, job_id: str) -> None:
        """Thread-safe: wake everything waiting on `job_id`."""
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for listener in self._listeners:
            listener(job_id)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # the waiter's loop may have closed
                loop.call_soon_threadsafe(event.set)

    async def wait(self, job_id: str, timeout: float) -> None:
        """Return when `job_id` changes or after `timeout` seconds, whichever is first."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters[job_id].add(entry)
        try:
            await asyncio.wait_for(entry[1].wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                bucket = self._waiters.get(job_id)
                if bucket is not None:
                    bucket.discard(entry)
                    if not bucket:
                        del self._waiters[job_id]
