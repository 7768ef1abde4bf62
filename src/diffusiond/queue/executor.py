"""The executor interface: what runs the workers that claim jobs from the queue.

The embedded default is `LocalExecutor` (worker threads in this process). Another executor (Ray, a
pool of spawned processes per endpoint) implements the same three calls and is chosen in
services.py; the job service and the workers do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Executor(Protocol):
    def start(self) -> None:
        """Start the workers (and anything that reclaims jobs of lost workers)."""
        ...

    def notify(self) -> None:
        """A job was queued: wake idle workers now instead of at their next poll."""
        ...

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let running jobs' outputs be stored; return within about `timeout`."""
        ...


class ExecutorGroup:
    """Several executors as one: the default worker pools and the endpoints' workers, say."""

    def __init__(self, executors: Sequence[Executor]) -> None:
        self.executors = list(executors)

    def start(self) -> None:
        for executor in self.executors:
            executor.start()

    def notify(self) -> None:
        for executor in self.executors:
            executor.notify()

    def stop(self, timeout: float = 10.0) -> None:
        for executor in self.executors:
            executor.stop(timeout)
