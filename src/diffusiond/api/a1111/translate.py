"""A1111 `/sdapi/v1` <-> core: the tenant's options, translation lookups, answers from finished jobs."""

from __future__ import annotations

import base64
import json
from datetime import UTC
from typing import Any

from diffusiond import __version__
from diffusiond.api.vocabulary.a1111_images import InputImages
from diffusiond.api.vocabulary.a1111_processing import APPLIED, DEFAULT_OPTIONS, FORMATS, UNSUPPORTED, Lookups
from diffusiond.auth.keys import Principal
from diffusiond.domain.errors import InvalidParams, NotFound
from diffusiond.domain.jobs import Job
from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.engine.style_presets import STYLE_PRESETS
from diffusiond.services import Services

DIALECT = "a1111"
VERSION = f"diffusiond {__version__}"


def styles() -> dict[str, tuple[str, str]]:
    """A1111 prompt styles: the platform's style presets, by name."""
    return dict(STYLE_PRESETS)


def options(services: Services, tenant_id: str) -> dict[str, Any]:
    """Every A1111 setting as this tenant sees it: defaults, then what the tenant changed."""
    stored = services.tenants.dialect_settings(tenant_id, DIALECT)
    merged = {**DEFAULT_OPTIONS, **stored}
    merged["sd_model_checkpoint"] = merged.get("sd_model_checkpoint") or services.settings.default_model
    return merged


def check_options(services: Services, principal: Principal, changes: dict[str, Any]) -> dict[str, Any]:
    """Validate settings a tenant sets; returns them as stored (checkpoint titles as model ids' titles)."""
    out = dict(changes)
    for key, value in changes.items():
        if key in UNSUPPORTED and value != UNSUPPORTED[key]:
            raise InvalidParams(f"{key}: only the default ({UNSUPPORTED[key]!r}) is supported",
                                code="unsupported_feature", field=key)
    if "sd_model_checkpoint" in changes:
        out["sd_model_checkpoint"] = checkpoint_title(services, principal, changes["sd_model_checkpoint"])
    if "sd_vae" in changes and str(changes["sd_vae"]).strip().lower() not in ("automatic", "none", "auto", ""):
        resolve(services, principal, str(changes["sd_vae"]), ModelKind.VAE, "sd_vae")
    if "CLIP_stop_at_last_layers" in changes:
        value = changes["CLIP_stop_at_last_layers"]
        if not isinstance(value, int | float) or not 1 <= int(value) <= 12:
            raise InvalidParams("CLIP_stop_at_last_layers: must be between 1 and 12", field="CLIP_stop_at_last_layers")
    if "samples_format" in changes and str(changes["samples_format"]).lower() not in FORMATS:
        raise InvalidParams("samples_format: must be png, jpg or webp", field="samples_format")
    for key in ("eta_noise_seed_delta", "show_progress_every_n_steps"):
        if key in changes and not isinstance(changes[key], int):
            raise InvalidParams(f"{key}: must be an integer", field=key)
    for key in APPLIED:
        if key in changes and isinstance(changes[key], dict | list):
            raise InvalidParams(f"{key}: must be a single value", field=key)
    return out


def checkpoint_title(services: Services, principal: Principal, title: Any) -> str:
    name = str(title or "").strip()
    if " [" in name and name.endswith("]"):
        name = name[: name.rindex(" [")]
    record = resolve(services, principal, name, ModelKind.CHECKPOINT, "sd_model_checkpoint")
    return name or record.id


def resolve(services: Services, principal: Principal, name: str, kind: ModelKind, field: str) -> ModelRecord:
    try:
        return services.models.resolve_for(principal.tenant_id, name, kind)
    except NotFound:
        raise InvalidParams(f"{field}: Model not found: {name}", code="model_not_found", field=field) from None


def embeddings(services: Services, principal: Principal) -> dict[str, str]:
    """Every word that triggers one of the tenant's textual inversions (ids and aliases), to its model id."""
    words: dict[str, str] = {}
    for record, aliases in services.models.list(ModelKind.EMBEDDING, tenant_id=principal.tenant_id):
        for word in (record.id, *aliases):
            words[word] = record.id
    return words


def lookups(services: Services, principal: Principal, images: InputImages,
            settings: dict[str, Any] | None = None) -> Lookups:
    """The processing translation's view of the platform, for one tenant (its A1111 options)."""
    opts = settings if settings is not None else options(services, principal.tenant_id)

    def resolve_any(name: str, kind: ModelKind) -> ModelRecord:
        return services.models.resolve_for(principal.tenant_id, name, kind)

    return Lookups(resolve=resolve_any, default_model=str(opts.get("sd_model_checkpoint") or
                                                          services.settings.default_model),
                   image=images, options=opts, embeddings=lambda: embeddings(services, principal), styles=styles())


def images_b64(services: Services, job: Job) -> list[str]:
    return [base64.b64encode(services.blobs.get(a.blob_key)).decode() for a in job.images]


def job_timestamp(job: Job) -> str:
    return job.created_at.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def info_json(info: dict[str, Any]) -> str:
    return json.dumps(info)
