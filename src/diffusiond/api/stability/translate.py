"""Stability v1 requests -> core JobSpecs, and multipart form parsing."""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import FormData, UploadFile

from diffusiond.api.stability.schemas import GenerationOptions, TextPrompt
from diffusiond.domain.errors import InvalidParams, PayloadTooLarge
from diffusiond.domain.params import Diffusion, Sampler, WeightedPrompt

# ASCII digits, a few of them: `int()` of a long or non-ASCII digit string is a 500 waiting to happen.
_PROMPT_FIELD = re.compile(r"^text_prompts\[([0-9]{1,4})\]\[(text|weight)\]$")


def split_prompts(prompts: list[TextPrompt]) -> tuple[tuple[WeightedPrompt, ...], tuple[WeightedPrompt, ...]]:
    """Positive weights prompt; negative weights become negative prompts (by their magnitude)."""
    pos = tuple(WeightedPrompt(p.text, p.weight) for p in prompts if p.weight > 0)
    neg = tuple(WeightedPrompt(p.text, -p.weight) for p in prompts if p.weight < 0)
    if not pos:
        raise InvalidParams("text_prompts: at least one prompt must have a positive weight",
                            code="invalid_prompts")
    return pos, neg


def diffusion(model_id: str, opts: GenerationOptions, prompts: list[TextPrompt], width: int,
              height: int) -> Diffusion:
    pos, neg = split_prompts(prompts)
    return Diffusion(
        model=model_id, prompts=pos, negative_prompts=neg, width=width, height=height, steps=opts.steps,
        cfg_scale=opts.cfg_scale, sampler=Sampler(opts.sampler.value) if opts.sampler else None,
        style_preset=opts.style_preset.value if opts.style_preset else None,
    )


def form_fields(form: FormData) -> dict[str, Any]:
    """Multipart fields as a dict; `text_prompts[i][text|weight]` become a list ordered by i."""
    out: dict[str, Any] = {}
    prompts: dict[int, dict[str, str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            continue
        m = _PROMPT_FIELD.match(key)
        if m:
            prompts.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            out[key] = value
    if prompts:
        out["text_prompts"] = [prompts[i] for i in sorted(prompts)]
    return out


async def read_upload(form: FormData, name: str, max_bytes: int, *, required: bool = True) -> tuple[bytes, str] | None:
    """The bytes and declared type of file field `name`, read with a size cap."""
    value = form.get(name)
    if not isinstance(value, UploadFile):
        if required:
            raise InvalidParams(f"{name}: is required", code="bad_request", field=name)
        return None
    data = await value.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{name}: the file is larger than {max_bytes:,} bytes")
    return data, value.content_type or ""
