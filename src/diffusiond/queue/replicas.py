"""Endpoint workers in processes of their own, spawned (never forked) by the server.

Each replica is a fresh interpreter: it builds its own services from the server's settings, sets up
its device profile (CUDA_VISIBLE_DEVICES before torch loads, precision, CPU threads), loads the
default model, says `ready`, and then runs one `Worker` that claims only its endpoint's jobs. A
stop request lets the running job finish; the parent kills a replica only if it overstays.

`ReplicaLauncher` is what the endpoint executor needs from "a place that runs workers": this module
implements it with local processes; a Ray implementation would start actors instead.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as MpEvent
from typing import Any, Protocol

from diffusiond.config import Settings
from diffusiond.domain.endpoints import DeviceProfile

log = logging.getLogger(__name__)
READY = "ready"
ERROR = "error"


class Replica(Protocol):
    """One running worker of an endpoint."""

    name: str

    def messages(self) -> list[tuple[str, str]]:
        """What it said since the last call: (`ready`, "") once its model loaded, or (`error`, why)."""
        ...

    def alive(self) -> bool: ...

    def exit_code(self) -> int | None: ...

    def wake(self) -> None:
        """A job was queued: claim now instead of at the next poll."""
        ...

    def stop(self) -> None:
        """Finish the running job, then exit."""
        ...

    def kill(self) -> None: ...


class ReplicaLauncher(Protocol):
    def gpus(self) -> int:
        """GPUs this machine offers to endpoint workers."""
        ...

    def launch(self, endpoint_id: str, name: str, profile: DeviceProfile, devices: list[int]) -> Replica: ...


@dataclass
class SpawnedReplica:
    """A replica in a spawned child process of this one."""

    name: str
    process: Any  # multiprocessing.context.SpawnProcess
    inbox: Connection
    stop_flag: MpEvent
    wake_flag: MpEvent

    def messages(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        try:
            while self.inbox.poll():
                kind, text = self.inbox.recv()
                out.append((str(kind), str(text)))
        except (EOFError, OSError):  # the child is gone; alive() says so
            pass
        return out

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def exit_code(self) -> int | None:
        code = self.process.exitcode
        return None if code is None else int(code)

    def wake(self) -> None:
        self.wake_flag.set()

    def stop(self) -> None:
        self.stop_flag.set()
        self.wake_flag.set()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


class ProcessLauncher:
    """Starts replicas as spawned processes running `replica_main` with the server's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        self._gpus: int | None = settings.gpus

    def gpus(self) -> int:
        if self._gpus is None:
            try:
                import torch

                self._gpus = int(torch.cuda.device_count())
            except Exception:  # no torch here (an API-only install): no GPUs to offer
                self._gpus = 0
        return self._gpus

    def launch(self, endpoint_id: str, name: str, profile: DeviceProfile, devices: list[int]) -> Replica:
        inbox, outbox = self.context.Pipe(duplex=False)
        stop_flag, wake_flag = self.context.Event(), self.context.Event()
        process = self.context.Process(
            target=replica_main, name=f"diffusiond-{name}", daemon=True,
            args=(self.settings, endpoint_id, name, profile, devices, outbox, stop_flag, wake_flag))
        process.start()
        outbox.close()  # the child holds its own end; EOF on ours means it is gone
        return SpawnedReplica(name, process, inbox, stop_flag, wake_flag)


def replica_main(settings: Settings, endpoint_id: str, name: str, profile: DeviceProfile, devices: list[int],
                 outbox: Connection, stop_flag: MpEvent, wake_flag: MpEvent) -> None:
    """The child process: set up the device, load the model, say ready, run the worker until stopped."""
    # 1. The device, before torch is imported: only this replica's GPUs are visible to it
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    logging.basicConfig(level=settings.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s")
    try:
        worker = _build_worker(settings, endpoint_id, name, profile)
    except Exception as e:
        log.exception("replica %s could not start", name)
        outbox.send((ERROR, f"{type(e).__name__}: {e}"))
        raise SystemExit(1) from None
    # 2. Ready: the model is loaded
    outbox.send((READY, ""))

    # 3. Work until asked to stop; a queued job wakes the worker through `wake_flag`
    def bridge() -> None:
        while not stop_flag.is_set():
            if wake_flag.wait(1.0):
                wake_flag.clear()
                worker.wake.set()
        worker.wake.set()

    threading.Thread(target=bridge, name="diffusiond-wake", daemon=True).start()
    worker.run_forever(stop_flag)


def _build_worker(settings: Settings, endpoint_id: str, name: str, profile: DeviceProfile) -> Any:
    from diffusiond.domain.jobs import JobKind
    from diffusiond.engine.runner import GenerateHandler
    from diffusiond.queue.worker import Worker
    from diffusiond.services import build_engine, build_output_layouts, build_services

    threads = profile.cpu_threads if profile.gpus == 0 else settings.torch_threads
    settings = settings.model_copy(update={"device": profile.device, "precision": profile.precision,
                                           "torch_threads": threads})
    services = build_services(settings, with_workers=False)
    engine = build_engine(settings, services.models, services.blobs)
    engine.warm(settings.default_model)
    handlers = {JobKind.GENERATE: GenerateHandler(engine)}
    return Worker(services.jobs, services.blobs, handlers, name, endpoint=endpoint_id, kinds=[JobKind.GENERATE],
                  poll_interval=1.0, batch_size=settings.batch_size,
                  batch_window=settings.batch_window_ms / 1000, layouts=build_output_layouts(services.blobs))
