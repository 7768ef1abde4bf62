"""The endpoint executor: runs the workers of the endpoints the table says should run.

Every `interval` (and at once after a deploy or delete in this process) it

1. holds the endpoints it runs (`EndpointService.hold`: its own, unheld ones, lapsed holds);
2. for a `Creating` or `InService` endpoint it does not run yet, checks the instance type's device
   profile against this machine (a profile needing more GPUs than there are fails the endpoint) and
   launches `desired_replicas` workers;
3. reports readiness: an endpoint turns `InService` when every worker has loaded its model; a worker
   that dies before it is ready fails a `Creating` endpoint with its reason, one that dies later is
   replaced (up to `MAX_RESTARTS` times);
4. for a `Deleting` endpoint, asks its workers to stop after their running job and marks it
   `Deleted` once they have;
5. stops the workers of endpoints it no longer holds, and fails jobs queued on endpoints already gone.

An endpoint whose workers would pass this machine's `max_workers` (all endpoints together) fails with
that reason rather than overload the machine.

It implements the `Executor` interface; where replicas run is the launcher's business (processes
here, Ray actors in a Ray executor).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field

from diffusiond.domain.endpoints import DeviceProfile, Endpoint, EndpointStatus
from diffusiond.domain.errors import InvalidParams
from diffusiond.endpoints.service import EndpointService
from diffusiond.queue.replicas import ERROR, READY, Replica, ReplicaLauncher

log = logging.getLogger(__name__)
MAX_RESTARTS = 3
SWEEP_EVERY = 10  # ticks


@dataclass
class Pool:
    """The replicas this process runs for one endpoint."""

    endpoint_id: str
    profile: DeviceProfile
    replicas: list[Replica]
    ready: set[str] = field(default_factory=set)
    restarts: int = 0
    stopping: bool = False
    stop_deadline: float = 0.0


class EndpointExecutor:
    def __init__(self, endpoints: EndpointService, launcher: ReplicaLauncher, *, lease_seconds: float = 20.0,
                 interval: float = 1.0, stop_grace: float = 120.0, max_workers: int = 8) -> None:
        self.endpoints = endpoints
        self.launcher = launcher
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.stop_grace = stop_grace  # how long a stopping replica may finish its job before it is killed
        self.max_workers = max_workers  # replicas of all endpoints this process runs at once
        self.owner = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.pools: dict[str, Pool] = {}
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ticks = 0

    # ---- Executor --------------------------------------------------------------------------------

    def start(self) -> None:
        self.endpoints.on_change = self._kick.set
        self._thread = threading.Thread(target=self._loop, name="diffusiond-endpoints", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        with self._lock:
            for pool in self.pools.values():
                for replica in pool.replicas:
                    replica.wake()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every replica (running jobs get `timeout` to finish) and let go of the endpoints."""
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            replicas = [r for pool in self.pools.values() for r in pool.replicas]
            self.pools.clear()
        for r in replicas:
            r.stop()
        deadline = time.monotonic() + timeout
        for r in replicas:
            while r.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            r.kill()
        try:
            self.endpoints.release(self.owner)
        except Exception:
            log.exception("releasing endpoints failed")

    # ---- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("endpoint executor: tick failed")
            self._kick.wait(self.interval)
            self._kick.clear()

    def tick(self) -> None:
        held = {e.id: e for e in self.endpoints.hold(self.owner, self.lease_seconds)}
        with self._lock:
            for endpoint in held.values():
                self._reconcile(endpoint)
            for endpoint_id in [i for i in self.pools if i not in held]:  # deleted, failed or taken over
                self._begin_stop(self.pools[endpoint_id])
            self._reap_stopped(held)
        self._ticks += 1
        if self._ticks % SWEEP_EVERY == 0:
            self.endpoints.sweep()

    def _reconcile(self, endpoint: Endpoint) -> None:
        pool = self.pools.get(endpoint.id)
        if endpoint.status is EndpointStatus.DELETING:
            if pool is None:
                self.endpoints.finish_delete(endpoint.id, self.owner)
            else:
                self._begin_stop(pool)
            return
        if pool is None:
            self._launch(endpoint)
            return
        if not pool.stopping:
            self._watch(endpoint, pool)

    def _launch(self, endpoint: Endpoint) -> None:
        try:
            profile = self._profile(endpoint)
        except InvalidParams as e:
            self.endpoints.fail(endpoint.id, self.owner, e.message)
            return
        pool = Pool(endpoint.id, profile, [])
        self.pools[endpoint.id] = pool
        for index in range(endpoint.desired_replicas):
            pool.replicas.append(self._start_replica(endpoint, profile, index))
        log.info("endpoint %s: started %d worker(s) on %s", endpoint.name, endpoint.desired_replicas,
                 profile.device)

    def _profile(self, endpoint: Endpoint) -> DeviceProfile:
        running = sum(len(p.replicas) for p in self.pools.values())
        if running + endpoint.desired_replicas > self.max_workers:
            raise InvalidParams(f"this machine runs at most {self.max_workers} endpoint workers and {running} are "
                                f"running; {endpoint.desired_replicas} more do not fit "
                                "(DIFFUSIOND_MAX_ENDPOINT_WORKERS)", code="no_capacity")
        profile = self.endpoints.profile(endpoint.instance_type)
        have = self.launcher.gpus() if profile.gpus else 0
        if profile.gpus > have:
            raise InvalidParams(f"instance type {endpoint.instance_type} needs {profile.gpus} GPU(s) per worker "
                                f"and this machine has {have}; map it to a CPU profile or fewer GPUs in "
                                "DIFFUSIOND_INSTANCE_TYPES", code="not_enough_gpus")
        return profile

    def _start_replica(self, endpoint: Endpoint, profile: DeviceProfile, index: int) -> Replica:
        devices: list[int] = []
        if profile.gpus:
            have = self.launcher.gpus()
            devices = [(index * profile.gpus + k) % have for k in range(profile.gpus)]
        return self.launcher.launch(endpoint.id, f"{endpoint.name}-{index}", profile, devices)

    def _watch(self, endpoint: Endpoint, pool: Pool) -> None:
        """Collect readiness and failures of a live endpoint's replicas."""
        for i, replica in enumerate(pool.replicas):
            for kind, text in replica.messages():
                if kind == READY:
                    pool.ready.add(replica.name)
                elif kind == ERROR and endpoint.status is EndpointStatus.CREATING:
                    self._fail(endpoint, pool, f"worker {replica.name} could not start: {text}")
                    return
            if replica.alive():
                continue
            pool.ready.discard(replica.name)
            why = f"worker {replica.name} exited with code {replica.exit_code()}"
            if endpoint.status is EndpointStatus.CREATING or pool.restarts >= MAX_RESTARTS:
                self._fail(endpoint, pool, why)
                return
            log.warning("endpoint %s: %s; starting it again", endpoint.name, why)
            pool.restarts += 1
            pool.replicas[i] = self._start_replica(endpoint, pool.profile, i)
        self.endpoints.set_ready(endpoint.id, self.owner, len(pool.ready))

    def _fail(self, endpoint: Endpoint, pool: Pool, error: str) -> None:
        log.error("endpoint %s failed: %s", endpoint.name, error)
        self.endpoints.fail(endpoint.id, self.owner, error)
        self._begin_stop(pool)

    def _begin_stop(self, pool: Pool) -> None:
        if not pool.stopping:
            pool.stopping = True
            pool.stop_deadline = time.monotonic() + self.stop_grace
            for replica in pool.replicas:
                replica.stop()

    def _reap_stopped(self, held: dict[str, Endpoint]) -> None:
        """Forget stopping pools whose replicas have exited; a deleted endpoint is then `Deleted`."""
        for endpoint_id, pool in list(self.pools.items()):
            if not pool.stopping:
                continue
            overdue = time.monotonic() > pool.stop_deadline
            if any(r.alive() for r in pool.replicas) and not overdue:
                continue
            for replica in pool.replicas:
                replica.kill()
            del self.pools[endpoint_id]
            endpoint = held.get(endpoint_id)
            if endpoint is not None and endpoint.status is EndpointStatus.DELETING:
                self.endpoints.finish_delete(endpoint_id, self.owner)
