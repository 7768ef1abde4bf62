"""EKS tasks -> core jobs: the front door's structure checks, then the runtime worker's preparation.

The solution's front Lambda only checks a task's structure (400 `Incorrect payload structure,
...`, the last failing check winning); its queue worker then downloads linked images, strips the
routing keys from `alwayson_scripts` and posts the content to A1111. Here the same steps run before
the job is queued: what fails in them fails the task (reported by its result file, its status and
its callbacks), as an unknown model does in the solution.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffusiond.api.eks.runtimes import Runtime
from diffusiond.domain.errors import InvalidParams

TEXT_TO_IMAGE, IMAGE_TO_IMAGE, EXTRA_SINGLE, PIPELINE = "text-to-image", "image-to-image", "extra-single-image", \
    "pipeline"
SDWEBUI_TASKS = (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, EXTRA_SINGLE)
# alwayson_scripts keys that route a task rather than configure a script (the worker removes them).
ROUTING_KEYS = ("task", "id_task", "uid", "save_dir", "image_link", "sd_model_checkpoint", "sd_vae",
                "override_settings")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def structure(reason: str) -> InvalidParams:
    return InvalidParams(f"Incorrect payload structure, {reason}", code="eks_structure")


@dataclass(frozen=True)
class Task:
    """A task that passed the front door: the v1alpha2 metadata (v1alpha1's mapped onto it) and content."""

    version: str
    id: str
    runtime: str
    tasktype: str
    prefix: str
    context: Any
    content: dict[str, Any]
    checkpoint: str | None = None  # v1alpha1's sd_model_checkpoint (its routing key)

    @property
    def request_id(self) -> str:
        """The job's idempotency key: ids are per API version (both samples of the solution use test-t2i)."""
        return request_id(self.version, self.id)


def request_id(version: str, task_id: str) -> str:
    return f"eks:{version}:{task_id}"


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError as e:
        raise InvalidParams(str(e), code="eks_structure") from None


def v1alpha2_task(body: Any) -> Task:
    """`{"task": {"metadata": {id, runtime, tasktype, prefix, context}, "content": ...}}`."""
    task = body.get("task") if isinstance(body, dict) else None
    if not isinstance(task, dict):
        raise structure("task is missing")
    meta = task.get("metadata")
    failed = []
    if not isinstance(meta, dict):
        failed.append("metadata is missing")
        meta = {}
    failed += [f"{key} is missing" for key in ("id", "runtime", "tasktype") if not meta.get(key)]
    if task.get("content") is None:
        failed.append("content is missing")
    if failed:  # the solution runs every check and reports the last that failed
        raise structure(failed[-1])
    content = task["content"]
    if not isinstance(content, dict):
        raise structure("content must be an object")
    return Task("v1alpha2", checked_name(meta["id"], "id"), checked_name(meta["runtime"], "runtime"),
                str(meta["tasktype"]), checked_prefix(meta.get("prefix")), meta.get("context", {}), content)


def v1alpha1_task(body: Any) -> Task:
    """An A1111 body with its routing in `alwayson_scripts` (task, id_task, sd_model_checkpoint, save_dir)."""
    if not isinstance(body, dict):
        raise structure("alwayson_scripts is missing")
    scripts = body.get("alwayson_scripts")
    failed = []
    if not isinstance(scripts, dict):
        failed.append("alwayson_scripts is missing")
        scripts = {}
    failed += [f"{key} is missing" for key in ("task", "sd_model_checkpoint", "id_task") if not scripts.get(key)]
    if failed:
        raise structure(failed[-1])
    return Task("v1alpha1", checked_name(scripts["id_task"], "id_task"), "legacy", str(scripts["task"]),
                checked_prefix(scripts.get("save_dir")), {}, body, checkpoint=str(scripts["sd_model_checkpoint"]))


def checked_name(value: Any, what: str) -> str:
    text = str(value)
    if not _NAME.match(text):
        raise structure(f"invalid {what} format: letters, digits, '-' and '_', at most 64")
    return text


def checked_prefix(value: Any) -> str:
    text = "" if value is None else str(value)
    if any(part and (part in (".", "..") or not _SEGMENT.match(part)) for part in text.split("/")) or len(text) > 300:
        raise structure("invalid prefix format: folders of letters, digits, '.', '-' and '_'")
    return text


def output_folder_name(prefix: str, task_id: str) -> str:
    """`<prefix>/<id>` as the solution names it in `output_location` (a prefix ending in / adds none)."""
    if not prefix:
        return task_id
    return f"{prefix}{task_id}" if prefix.endswith("/") else f"{prefix}/{task_id}"


def check_tasktype(task: Task, runtime: Runtime) -> None:
    if task.tasktype == PIPELINE or runtime.type == "comfyui":
        raise structure(f"tasktype {task.tasktype!r} on runtime {runtime.name!r}: ComfyUI pipelines are not "
                        "supported by this server yet")
    if task.tasktype not in SDWEBUI_TASKS or (task.version == "v1alpha1" and task.tasktype == EXTRA_SINGLE):
        allowed = SDWEBUI_TASKS if task.version == "v1alpha2" else SDWEBUI_TASKS[:2]
        raise structure(f"invalid tasktype {task.tasktype!r}: an sdwebui runtime takes {', '.join(allowed)}")


def prepared_content(task: Task, model: str | None, fetch: Callable[[str], bytes]) -> dict[str, Any]:
    """The A1111 body the runtime would post: routing keys out of `alwayson_scripts`, the image link
    as the init image, a model switch as an override, and every linked image fetched."""
    content = copy.deepcopy(task.content)
    scripts = dict(content.get("alwayson_scripts") or {})
    link = scripts.get("image_link")
    overrides = dict(content.get("override_settings") or {})
    overrides.update(scripts.get("override_settings") or {})
    if scripts.get("sd_vae"):
        overrides.setdefault("sd_vae", scripts["sd_vae"])
    if model is not None:
        overrides["sd_model_checkpoint"] = model
    content["alwayson_scripts"] = {k: v for k, v in scripts.items() if k not in ROUTING_KEYS}
    if overrides:
        content["override_settings"] = overrides
    if task.tasktype == IMAGE_TO_IMAGE and link:
        content["init_images"] = [link]
    for key in ("init_images",):
        if isinstance(content.get(key), list):
            content[key] = [inline(item, fetch) for item in content[key]]
    for key in ("mask", "image"):
        if isinstance(content.get(key), str):
            content[key] = inline(content[key], fetch)
    return content


def inline(value: Any, fetch: Callable[[str], bytes]) -> Any:
    """A linked image as base64 (what the solution's worker puts in its place); anything else as is."""
    if isinstance(value, str) and _URL.match(value.strip()):
        return base64.b64encode(fetch(value.strip())).decode()
    return value
