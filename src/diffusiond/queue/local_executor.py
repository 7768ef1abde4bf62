"""Workers in this process: the embedded default executor."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from diffusiond.blobs.base import BlobStore
from diffusiond.domain.jobs import JobKind
from diffusiond.queue.instance import InstanceSlot, worker_id
from diffusiond.queue.job_service import JobService
from diffusiond.queue.worker import Handlers, OutputLayout, Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerPool:
    """`count` worker threads that claim jobs of `kinds`."""

    name: str
    count: int
    kinds: Sequence[JobKind]
    batch_size: int = 1


class LocalExecutor:
    """Worker threads sharing one set of warm handlers, plus a reaper that re-queues lost jobs.

    Pools keep kinds of work apart: with the defaults one thread generates images while another
    trains, so a training of several minutes does not hold up every generation behind it.
    """

    def __init__(self, jobs: JobService, blobs: BlobStore, handlers_factory: Callable[[], Handlers], *,
                 pools: Sequence[WorkerPool], reap_interval: float = 5.0, batch_window: float = 0.005,
                 instance: InstanceSlot | None = None, layouts: Mapping[str, OutputLayout] | None = None) -> None:
        self.jobs = jobs
        self.layouts = dict(layouts or {})
        self.blobs = blobs
        self.handlers_factory = handlers_factory
        self.pools = [pool for pool in pools if pool.count > 0]
        self.reap_interval = reap_interval
        self.batch_window = batch_window
        self.instance = instance  # names this process's workers so a restart can reclaim their jobs
        self.stop_event = threading.Event()
        self.workers: list[Worker] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        name = self.instance.acquire() if self.instance is not None else None
        if name is not None:
            # This slot's previous holder is dead (its lock is free): its jobs need no lease to run out.
            reclaimed = self.jobs.end_leases(name)
            if reclaimed:
                log.info("reclaiming %d job(s) this instance's previous process was running", reclaimed)
        self.jobs.requeue_expired()
        self._spawn(self._reap, "diffusiond-reaper")
        if not self.pools:
            return
        handlers = self.handlers_factory()
        for pool in self.pools:
            kinds = [kind for kind in pool.kinds if kind in handlers]  # never claim what nothing here runs
            for i in range(pool.count if kinds else 0):
                worker = Worker(self.jobs, self.blobs, handlers, worker_id(name, f"{pool.name}-{i}"), kinds=kinds,
                                batch_size=pool.batch_size, batch_window=self.batch_window, layouts=self.layouts)
                self.workers.append(worker)
                self._spawn(functools.partial(worker.run_forever, self.stop_event),
                            f"diffusiond-{pool.name}-{i}")

    def notify(self) -> None:
        for w in self.workers:
            w.wake.set()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _reap(self) -> None:
        while not self.stop_event.wait(self.reap_interval):
            try:
                self.jobs.requeue_expired()
            except Exception:
                log.exception("reaper failed")

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for w in self.workers:
            w.wake.set()
        for t in self._threads:
            t.join(timeout)
        if self.instance is not None:
            self.instance.release()
