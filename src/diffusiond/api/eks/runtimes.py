"""The EKS API's runtimes: named backends a task is routed to (`metadata.runtime`, or for v1alpha1
the checkpoint name), configured with `DIFFUSIOND_EKS_RUNTIMES` as JSON.

    [{"name": "sdruntime", "type": "sdwebui", "endpoint": "default", "model": null,
      "model_filename": "v1-5-pruned-emaonly.safetensors", "dynamic_model": false}]

is the default: one `sdwebui` runtime on the default endpoint running the server's default model,
known to v1alpha1 clients by the checkpoint file name the solution's own configuration deploys.
With `dynamic_model` a task may pick another checkpoint through `alwayson_scripts.sd_model_checkpoint`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from diffusiond.config import Settings

TYPES = ("sdwebui", "comfyui")


@dataclass(frozen=True)
class Runtime:
    name: str
    type: str = "sdwebui"
    endpoint: str = "default"  # the worker pool its jobs go to
    model: str | None = None  # a model id or alias; None: DIFFUSIOND_DEFAULT_MODEL
    model_filename: str | None = None  # the checkpoint name v1alpha1 routes by
    dynamic_model: bool = False


DEFAULT = (Runtime("sdruntime", model_filename="v1-5-pruned-emaonly.safetensors"),)


def runtimes(settings: Settings) -> tuple[Runtime, ...]:
    """The configured runtimes; a malformed setting stops the server from starting with a reason."""
    if not settings.eks_runtimes:
        return DEFAULT
    try:
        items = json.loads(settings.eks_runtimes)
        found = tuple(Runtime(**item) for item in items)
    except (ValueError, TypeError) as e:
        raise ValueError(f"DIFFUSIOND_EKS_RUNTIMES: {e}") from None
    for r in found:
        if r.type not in TYPES:
            raise ValueError(f"DIFFUSIOND_EKS_RUNTIMES: runtime {r.name!r} has type {r.type!r}, not one of {TYPES}")
    return found


def by_name(all_runtimes: tuple[Runtime, ...], name: str) -> Runtime | None:
    return next((r for r in all_runtimes if r.name == name), None)


def by_checkpoint(all_runtimes: tuple[Runtime, ...], checkpoint: str, default_model: str) -> Runtime | None:
    """v1alpha1's routing: the sdwebui runtime whose checkpoint is `checkpoint`, else one that may switch."""
    for r in all_runtimes:
        if r.type == "sdwebui" and checkpoint in (r.model_filename, r.model or default_model):
            return r
    return next((r for r in all_runtimes if r.type == "sdwebui" and r.dynamic_model), None)
