"""Workers in this process: the embedded default."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

from diffusiond.blobs.base import BlobStore
from diffusiond.queue.instance import InstanceSlot, worker_id
from diffusiond.queue.job_service import JobService
from diffusiond.queue.worker import Runner, Worker

log = logging.getLogger(__name__)


class LocalExecutor:
    """Worker threads sharing one warm engine, plus a reaper that re-queues lost jobs."""

    def __init__(self, jobs: JobService, blobs: BlobStore, runner_factory: Callable[[], Runner], *,
                 workers: int = 1, reap_interval: float = 5.0, batch_size: int = 1,
                 batch_window: float = 0.005, instance: InstanceSlot | None = None) -> None:
        self.jobs = jobs
        self.blobs = blobs
        self.runner_factory = runner_factory
        self.n_workers = workers
        self.reap_interval = reap_interval
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.stop_event = threading.Event()
        self.instance = instance  # names this process's workers so a restart can reclaim their jobs
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
        if self.n_workers == 0:
            return
        runner = self.runner_factory()
        for i in range(self.n_workers):
            worker = Worker(self.jobs, self.blobs, runner, worker_id(name, i), batch_size=self.batch_size,
                            batch_window=self.batch_window)
            self.workers.append(worker)
            self._spawn(functools.partial(worker.run_forever, self.stop_event), f"diffusiond-worker-{i}")

    def notify(self) -> None:
        """A job was queued: wake idle workers now instead of at their next poll."""
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
