"""Wake-ups for clients waiting on a job (synchronous dialects, SSE).

The database stays the truth: a wake-up only tells a waiter to re-read the row. Waiters also
re-read on a short timer, which covers state changes made by other processes (scale-out).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable


class Subscription:
    """Wake-ups for one job, registered before the caller reads the row (so none is missed).

    With `progress=False` only status changes wake it: a waiter that only wants the outcome does not
    re-read the row on every progress report.
    """

    def __init__(self, progress: bool = True) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.progress = progress

    async def wait(self, timeout: float) -> None:
        """Return on the next change (or one that came since the last wait), or after `timeout`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


class JobEvents:
    """In-process fan-out from worker threads to asyncio waiters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._listeners: list[Callable[[str], None]] = []

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Call `callback(job_id)` on every status change (workers use it to wake on new jobs)."""
        self._listeners.append(callback)

    def publish(self, job_id: str, *, progress: bool = False) -> None:
        """Thread-safe: wake everything waiting on `job_id`; `progress` marks a progress-only change."""
        with self._lock:
            subs = [sub for sub in self._subs.get(job_id, ()) if sub.progress or not progress]
        if not progress:
            for listener in self._listeners:
                listener(job_id)
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # the waiter's loop may have closed
                sub.loop.call_soon_threadsafe(sub.event.set)

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str, *, progress: bool = True) -> AsyncIterator[Subscription]:
        sub = Subscription(progress)
        with self._lock:
            self._subs[job_id].add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                bucket = self._subs.get(job_id)
                if bucket is not None:
                    bucket.discard(sub)
                    if not bucket:
                        del self._subs[job_id]

    async def wait(self, job_id: str, timeout: float) -> None:
        """Return when `job_id` changes or after `timeout` seconds, whichever is first."""
        async with self.subscribe(job_id) as sub:
            await sub.wait(timeout)
