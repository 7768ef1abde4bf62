"""AWS-extension wire <-> core: status words, time formats, names, and inference parameters.

The inference parameters reach the shared A1111 translation (`api/vocabulary/a1111_processing`) as
an A1111 txt2img/img2img body, built from either form the original accepts: the seed's flat body
(A1111 field names), or the client's `config/aigc.json` of `txt2img_*` / `img2img_*` UI values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from diffusiond.api.esd.schemas import InferenceRequest
from diffusiond.domain.endpoints import Endpoint, EndpointStatus
from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.jobs import JobStatus
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import GenerateSpec, HypernetworkRef, Img2Img, Inpaint

TASK_TYPES = ("txt2img", "img2img")
INFERENCE_STATUS = {JobStatus.QUEUED: "inprogress", JobStatus.RUNNING: "inprogress", JobStatus.SUCCEEDED: "succeed",
                    JobStatus.FAILED: "failed", JobStatus.CANCELED: "failed"}
# endpoint status -> the deployment job's `status`
DEPLOYMENT_STATUS = {EndpointStatus.CREATING: "inprogress", EndpointStatus.IN_SERVICE: "success",
                     EndpointStatus.FAILED: "failed", EndpointStatus.DELETING: "deleted",
                     EndpointStatus.DELETED: "deleted"}
# checkpoint_type -> the registry kind its files must be
KINDS = {"Stable-diffusion": ModelKind.CHECKPOINT, "embeddings": ModelKind.EMBEDDING, "Lora": ModelKind.LORA,
         "hypernetworks": ModelKind.HYPERNETWORK, "ControlNet": ModelKind.CONTROLNET, "VAE": ModelKind.VAE}
TYPES = {kind: name for name, kind in KINDS.items()}
# The original's parameter parser defaults (parameter_parser.py), under the request's own values.
INFERENCE_DEFAULTS: dict[str, Any] = {"steps": 20, "cfg_scale": 7.0, "width": 512, "height": 512, "seed": -1,
                                      "sampler_index": "Euler a"}
_HYPERNET_TAG = re.compile(r"<hypernet:([^:>]+)(?::([^>]*))?>")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,199}$")


# ---- times ------------------------------------------------------------------------------------------


def naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def start_time(value: datetime) -> str:
    """`str(datetime.now())` as the original writes it: 2023-07-04 08:00:35.171309."""
    return naive_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")


def complete_time(value: datetime) -> str:
    """An inference job's completeTime: 2023-07-04-09-14-26."""
    return naive_utc(value).strftime("%Y-%m-%d-%H-%M-%S")


def epoch(value: datetime) -> float:
    return value.timestamp()


# ---- names ------------------------------------------------------------------------------------------


def file_name(name: str, field: str = "filename") -> str:
    """A client's file name as the last part of its path, refused when unsafe to use in a key."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not _SAFE_NAME.match(base) or base in (".", "..") or ".." in base:
        raise InvalidParams(f"{field}: {name!r} is not a usable file name (letters, digits, spaces and ._()+- "
                            "only, up to 200)", code="invalid_filename", field=field)
    return base


def model_id_part(name: str) -> str:
    """A file name reduced to what a registry id may hold."""
    stem = re.sub(r"\.safetensors$", "", name, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:80] or "model"


# ---- statuses -----------------------------------------------------------------------------------------


def deployment_item(endpoint: Endpoint) -> dict[str, Any]:
    item: dict[str, Any] = {
        "EndpointDeploymentJobId": endpoint.id, "startTime": start_time(endpoint.created_at),
        "status": DEPLOYMENT_STATUS[endpoint.status], "endpoint_name": endpoint.name,
        "endpoint_status": endpoint.status.value, "instance_type": endpoint.instance_type,
        "initial_instance_count": endpoint.desired_replicas, "current_instance_count": endpoint.ready_replicas,
        "autoscaling_enabled": endpoint.autoscaling,
    }
    if endpoint.ended_at is not None:
        item["endTime"] = start_time(endpoint.ended_at)
    if endpoint.status is EndpointStatus.FAILED:
        item["error"] = endpoint.error or ""
    return item


def task_type_of(spec: GenerateSpec) -> str:
    first = spec.stages[0] if spec.stages else None
    return "img2img" if isinstance(first, Img2Img | Inpaint) else "txt2img"


# ---- inference parameters ----------------------------------------------------------------------------


def uses_config(body: InferenceRequest) -> bool:
    """The client's form: a model map and no parameters; these are in its uploaded config/aigc.json."""
    extra = body.model_extra or {}
    return body.stable_diffusion is not None and "prompt" not in extra


def names(value: list[str] | str | Mapping[str, Any] | None) -> list[str]:
    """Model names from a list, a ":"-joined string (the client's config) or a {name: s3 path} map."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    if isinstance(value, str):
        return [n.strip() for n in value.split(":") if n.strip()]
    return [str(n).strip() for n in value if str(n).strip()]


def a1111_fields(body: InferenceRequest, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The A1111 request body: the seed form's own fields, or the client's config values."""
    if config is None:
        fields = {k: v for k, v in (body.model_extra or {}).items()}
    else:
        fields = config_fields(config, body.task_type)
    fields.pop("override_settings", None)  # "hardcoded, parameter not work" (seed 000)
    return {**INFERENCE_DEFAULTS, **fields}


def model_names(body: InferenceRequest, config: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The models a request names, by kind: the seed form's lists, or the client's maps and config."""
    task = body.task_type
    cfg = config or {}
    return {
        "checkpoint": names(body.stable_diffusion_model) or names(body.stable_diffusion)
        or names(cfg.get(f"{task}_sagemaker_stable_diffusion_checkpoint")),
        "embedding": names(body.embeddings) or names(cfg.get(f"{task}_sagemaker_texual_inversion_model")),
        "lora": names(body.lora_model) or names(body.lora) or names(cfg.get(f"{task}_sagemaker_lora_model")),
        "hypernetwork": names(body.hypernetwork_model) or names(body.hypernetworks)
        or names(cfg.get(f"{task}_sagemaker_hypernetwork_model")),
        "controlnet": names(body.controlnet_model) or names(body.controlnet)
        or names(cfg.get(f"{task}_sagemaker_controlnet_model")),
    }


def check_controlnet(models: Mapping[str, list[str]], config: Mapping[str, Any] | None, task: str) -> None:
    enabled = _truthy((config or {}).get(f"{task}_controlnet_enable"))
    if models["controlnet"] or enabled:
        raise InvalidParams("controlnet_model: ControlNet is not supported by this server yet; send the request "
                            "without controlnet_model", code="unsupported_feature", field="controlnet_model")


def hypernetworks_of(prompt: str, listed: list[str]) -> tuple[str, list[tuple[str, float]]]:
    """The prompt without `<hypernet:NAME:WEIGHT>` tags, and the hypernetworks to apply: the tags'
    and, at strength 1, every listed one no tag names (the old `sd_hypernetwork` setting's way)."""
    tagged: list[tuple[str, float]] = []

    def take(match: re.Match[str]) -> str:
        weight = match.group(2)
        try:
            tagged.append((match.group(1).strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise InvalidParams(f"prompt: hypernetwork weight {weight!r} is not a number",
                                field="prompt") from None
        return ""

    stripped = _HYPERNET_TAG.sub(take, prompt).strip()
    named = {n for n, _ in tagged}
    return stripped, tagged + [(n, 1.0) for n in listed if n not in named and _stem(n) not in named]


def with_hypernetworks(spec: GenerateSpec, refs: tuple[HypernetworkRef, ...]) -> GenerateSpec:
    """Every diffusion of the spec with these hypernetworks applied."""
    from dataclasses import fields, is_dataclass, replace

    from diffusiond.domain.params import Diffusion

    if not refs:
        return spec

    def apply(value: Any) -> Any:
        if isinstance(value, Diffusion):
            return replace(value, hypernetworks=refs)
        if is_dataclass(value) and not isinstance(value, type):
            changes = {f.name: apply(getattr(value, f.name)) for f in fields(value) if f.init}
            return replace(value, **changes)
        if isinstance(value, tuple):
            return tuple(apply(v) for v in value)
        return value

    return replace(spec, stages=tuple(apply(stage) for stage in spec.stages))


def _stem(name: str) -> str:
    return re.sub(r"\.(safetensors|pt)$", "", name, flags=re.IGNORECASE)


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "on", "1", "yes"))


# The client's config/aigc.json: `<task>_<ui control>` -> (A1111 field, type). Values arrive as the
# strings of the UI's inputs (booleans from checkboxes).
CONFIG_FIELDS: dict[str, tuple[str, type]] = {
    "prompt": ("prompt", str), "neg_prompt": ("negative_prompt", str), "steps": ("steps", int),
    "sampling_method": ("sampler_index", str), "width": ("width", int), "height": ("height", int),
    "seed": ("seed", int), "subseed": ("subseed", int), "subseed_strength": ("subseed_strength", float),
    "seed_resize_from_w": ("seed_resize_from_w", int), "seed_resize_from_h": ("seed_resize_from_h", int),
    "cfg_scale": ("cfg_scale", float), "batch_count": ("n_iter", int), "batch_size": ("batch_size", int),
    "restore_faces": ("restore_faces", bool), "tiling": ("tiling", bool), "styles": ("styles", list),
    "denoising_strength": ("denoising_strength", float),
    # txt2img's hires fix
    "enable_hr": ("enable_hr", bool), "hr_scale": ("hr_scale", float), "hr_upscaler": ("hr_upscaler", str),
    "hires_steps": ("hr_second_pass_steps", int), "hr_resize_x": ("hr_resize_x", int),
    "hr_resize_y": ("hr_resize_y", int),
    # img2img
    "init_img": ("init_images", list), "resize_mode": ("resize_mode", int),
}
RESIZE_MODES = {"just resize": 0, "crop and resize": 1, "resize and fill": 2}


def config_fields(config: Mapping[str, Any], task: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for control, (name, kind) in CONFIG_FIELDS.items():
        key = f"{task}_{control}"
        value = config.get(key)
        if value is None or (isinstance(value, str) and not value.strip() and kind is not str):
            continue
        out[name] = _config_value(key, value, kind)
    return out


def _config_value(key: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            return _truthy(value) if isinstance(value, str) else bool(value)
        if kind is int:
            if key.endswith("resize_mode") and isinstance(value, str) and value.strip().lower() in RESIZE_MODES:
                return RESIZE_MODES[value.strip().lower()]
            return int(float(value))
        if kind is float:
            return float(value)
        if kind is list:
            if isinstance(value, list):
                return [str(v) for v in value]
            return [v.strip() for v in str(value).split(",") if v.strip()] if "styles" in key else [str(value)]
        return str(value)
    except (TypeError, ValueError):
        raise InvalidParams(f"config/aigc.json: {key} = {value!r} is not a valid {kind.__name__}",
                            field=key) from None
