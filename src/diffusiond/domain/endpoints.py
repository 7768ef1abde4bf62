"""Endpoints: named pools of workers on one device profile, and the instance types they run on.

An endpoint is a row with a state machine, like a job: `Creating` while its workers start and load
their model, `InService` once every one of them is ready, `Failed` when they could not start,
`Deleting` while running jobs finish, then `Deleted`. Jobs name the endpoint that must run them
(`Job.endpoint` holds the endpoint's id); only that endpoint's workers claim them.

An instance type (the AWS names the AWS-extension API uses, e.g. `ml.g5.2xlarge`) maps to a
`DeviceProfile` through one table, `INSTANCE_TABLES`, chosen and extended by configuration
(`DIFFUSIOND_INSTANCE_TYPES`, README "Endpoints and instance types").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from diffusiond.domain.errors import InvalidParams

MAX_REPLICAS = 8  # per endpoint, on one machine
_NAME = re.compile(r"^[A-Za-z0-9](-?[A-Za-z0-9]){0,62}$")  # SageMaker's endpoint-name rule


class EndpointStatus(str, Enum):
    CREATING = "Creating"
    IN_SERVICE = "InService"
    FAILED = "Failed"
    DELETING = "Deleting"
    DELETED = "Deleted"

    @property
    def live(self) -> bool:
        """Workers should run (or be starting) for it."""
        return self in (EndpointStatus.CREATING, EndpointStatus.IN_SERVICE)


@dataclass(frozen=True)
class DeviceProfile:
    """What one worker of an instance type runs on."""

    gpus: int = 0  # GPUs each worker needs; 0 runs on the CPU
    gpu_memory_gb: float = 0.0  # per GPU (documentation; the CUDA runtime enforces the real size)
    precision: str = "fp32"  # fp32 | fp16 | bf16
    cpu_threads: int = 1  # torch intra-op threads of a CPU worker

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"


@dataclass(frozen=True)
class Endpoint:
    """A named worker pool of one tenant."""

    id: str  # also the queue name its jobs carry (`Job.endpoint`)
    tenant_id: str
    name: str
    instance_type: str
    desired_replicas: int
    min_replicas: int
    max_replicas: int
    ready_replicas: int
    autoscaling: bool
    status: EndpointStatus
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None  # InService reached, or Failed, or Deleted
    error: str | None = None


def check_endpoint_name(name: str) -> str:
    """SageMaker's rule: letters, digits and single hyphens, 1-63 characters (so never a `+`)."""
    if not _NAME.match(name):
        raise InvalidParams(f"endpoint name {name!r} must be 1-63 letters, digits or single hyphens",
                            code="invalid_endpoint_name", field="endpoint_name")
    return name


def check_replicas(count: int) -> int:
    if not 1 <= count <= MAX_REPLICAS:
        raise InvalidParams(f"initial_instance_count must be between 1 and {MAX_REPLICAS}",
                            code="invalid_instance_count", field="initial_instance_count")
    return count


# ---- instance types -------------------------------------------------------------------------------

CPU = DeviceProfile()
# The AWS instance types of the AWS-extension API: (GPUs, GPU memory in GB, precision). With
# `DIFFUSIOND_INSTANCE_TYPES=aws-gpu` each worker of an endpoint gets this many GPUs.
AWS_GPU_TYPES: dict[str, tuple[int, float, str]] = {
    "ml.g4dn.xlarge": (1, 16, "fp16"), "ml.g4dn.2xlarge": (1, 16, "fp16"), "ml.g4dn.4xlarge": (1, 16, "fp16"),
    "ml.g4dn.8xlarge": (1, 16, "fp16"), "ml.g4dn.12xlarge": (4, 16, "fp16"), "ml.g4dn.16xlarge": (1, 16, "fp16"),
    "ml.g5.xlarge": (1, 24, "fp16"), "ml.g5.2xlarge": (1, 24, "fp16"), "ml.g5.4xlarge": (1, 24, "fp16"),
    "ml.g5.8xlarge": (1, 24, "fp16"), "ml.g5.12xlarge": (4, 24, "fp16"), "ml.g5.16xlarge": (1, 24, "fp16"),
    "ml.g5.24xlarge": (4, 24, "fp16"), "ml.g5.48xlarge": (8, 24, "fp16"),
    "ml.p3.2xlarge": (1, 16, "fp16"), "ml.p3.8xlarge": (4, 16, "fp16"), "ml.p3.16xlarge": (8, 16, "fp16"),
    "ml.p4d.24xlarge": (8, 40, "bf16"), "ml.p5.48xlarge": (8, 80, "bf16"),
}
# The built-in tables. `cpu` (the default) runs every instance type's workers on the CPU, one torch
# thread each: the machine the default install meets has no GPU.
INSTANCE_TABLES: dict[str, dict[str, DeviceProfile]] = {
    "cpu": {name: CPU for name in AWS_GPU_TYPES},
    "aws-gpu": {name: DeviceProfile(gpus=g, gpu_memory_gb=m, precision=p) for name, (g, m, p) in AWS_GPU_TYPES.items()},
}


def load_instance_table(spec: str) -> dict[str, DeviceProfile]:
    """The table `DIFFUSIOND_INSTANCE_TYPES` names: `cpu`, `aws-gpu`, or a JSON file (or JSON text)
    mapping instance types to `{"gpus", "gpu_memory_gb", "precision", "cpu_threads"}`, which extends
    the `cpu` table (so unnamed types still run on the CPU)."""
    if spec in INSTANCE_TABLES:
        return dict(INSTANCE_TABLES[spec])
    text = spec if spec.lstrip().startswith("{") else Path(spec).read_text()
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("DIFFUSIOND_INSTANCE_TYPES must be a JSON object of instance type -> profile")
    table = dict(INSTANCE_TABLES["cpu"])
    for name, entry in raw.items():
        table[str(name)] = _profile(str(name), entry)
    return table


def _profile(name: str, entry: Any) -> DeviceProfile:
    if not isinstance(entry, Mapping):
        raise ValueError(f"instance type {name}: a profile must be an object")
    profile = DeviceProfile(gpus=int(entry.get("gpus", 0)), gpu_memory_gb=float(entry.get("gpu_memory_gb", 0)),
                            precision=str(entry.get("precision", "fp32")),
                            cpu_threads=int(entry.get("cpu_threads", 1)))
    if profile.gpus < 0 or profile.cpu_threads < 1 or profile.precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"instance type {name}: gpus >= 0, cpu_threads >= 1, precision fp32|fp16|bf16")
    return profile
