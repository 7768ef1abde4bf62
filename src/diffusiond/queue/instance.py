"""Which worker process this is, among the processes that share a machine and a home folder.

A worker's `lease_owner` is `<instance>/<pid>-<n>`. The instance is `i-<digest>.<slot>`: the digest
names the machine and the resolved home folder, the slot is the lowest-numbered lock file under
`home/instances/` that this process could lock. The kernel drops a process's locks when it dies, so
a process that takes slot k knows the process that held slot k before it is gone: the jobs that
process's workers held can go back to the queue at once instead of when their leases run out. Jobs
of other slots, homes or machines are untouched and wait for their leases as before.

A machine whose hostname changes at every start (some containers) gets a new digest each time;
its jobs then wait for their leases, as they did before this existed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
MAX_SLOTS = 64


class InstanceSlot:
    """This process's slot among those sharing `home`, held by a file lock until `release`."""

    def __init__(self, home: Path) -> None:
        self.folder = home.resolve() / "instances"
        digest = hashlib.sha256(f"{socket.gethostname()}\n{home.resolve()}".encode()).hexdigest()[:12]
        self.prefix = f"i-{digest}"
        self._file: IO[bytes] | None = None
        self.name: str | None = None

    def acquire(self) -> str | None:
        """Lock the lowest free slot and return the instance name; None when no slot can be held."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): leases alone recover this process's jobs
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            f = (self.folder / f"{slot}.lock").open("ab")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            self._file, self.name = f, f"{self.prefix}.{slot}"
            return self.name
        log.warning("all %d instance slots under %s are held; this process's jobs recover by lease", MAX_SLOTS,
                    self.folder)
        return None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor drops the lock
            self._file, self.name = None, None


def worker_id(instance: str | None, index: int | str) -> str:
    """A worker's lease owner: under the instance when there is one, else just this process."""
    local = f"{os.getpid()}-{index}"
    return f"{instance}/{local}" if instance else local
