"""Weighted prompts -> the conditioning tensors a pipeline takes (`prompt_embeds` and friends).

Several prompts combine as the weighted mean of their encoder states (and pooled vectors for SDXL),
so weights steer the mix without changing the conditioning's overall scale. Prompts with a negative
weight are treated as negative prompts of the opposite weight (Stability v1 semantics).
`clip_skip` uses A1111's numbering: 1 is the last layer, 2 the penultimate one. Prompts longer
than CLIP's 77 tokens are encoded in chunks (see `text_encoding.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.params import Diffusion, WeightedPrompt
from diffusiond.engine.style_presets import apply_style
from diffusiond.engine.text_encoding import chunks_needed, encode_text

if TYPE_CHECKING:
    import torch


@dataclass
class Conditioning:
    """Keyword arguments for a diffusers pipeline call, one row (batch 1) each."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def as_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt_embeds": self.prompt_embeds,
            "negative_prompt_embeds": self.negative_prompt_embeds,
        }
        if self.pooled_prompt_embeds is not None:
            kwargs["pooled_prompt_embeds"] = self.pooled_prompt_embeds
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        return kwargs


def split_by_sign(
    prompts: tuple[WeightedPrompt, ...], negatives: tuple[WeightedPrompt, ...]
) -> tuple[list[WeightedPrompt], list[WeightedPrompt]]:
    """Move negative-weight prompts to the negatives; drop zero weights and empty texts."""
    positive = [p for p in prompts if p.weight > 0]
    negative = [WeightedPrompt(p.text, -p.weight) for p in prompts if p.weight < 0]
    negative += [WeightedPrompt(n.text, abs(n.weight)) for n in negatives if n.weight != 0]
    return positive, [n for n in negative if n.text.strip()]


def encode_prompts(pipe: Any, diffusion: Diffusion, device: torch.device, *, is_sdxl: bool) -> Conditioning:
    """Encode a Diffusion's prompts, style preset and clip skip into conditioning tensors."""
    import torch

    styled, styled_negatives = apply_style(diffusion.style_preset, diffusion.prompts, diffusion.negative_prompts)
    positive, negative = split_by_sign(styled, styled_negatives)
    if not positive:
        raise InvalidParams("at least one prompt with a positive weight is required", field="prompts")
    if diffusion.clip_skip < 1:
        raise InvalidParams("clip_skip must be at least 1", field="clip_skip")
    # diffusers counts skipped layers from 0 (None = last layer); A1111 counts from 1.
    clip_skip = diffusion.clip_skip - 1 or None
    chunks = chunks_needed(pipe, [p.text for p in positive + negative])

    def encode(text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return encode_text(pipe, text, chunks, device, clip_skip, is_sdxl=is_sdxl)

    with torch.no_grad():
        embeds, pooled = _mix([encode(p.text) for p in positive], positive)
        if negative:
            neg_embeds, neg_pooled = _mix([encode(n.text) for n in negative], negative)
        elif is_sdxl and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
            # SDXL was trained with zeroed unconditional embeddings, not the encoding of "".
            neg_embeds = torch.zeros_like(embeds)
            neg_pooled = torch.zeros_like(pooled) if pooled is not None else None
        else:
            neg_embeds, neg_pooled = encode("")
    return Conditioning(embeds, neg_embeds, pooled, neg_pooled)


def _mix(
    encoded: list[tuple[torch.Tensor, torch.Tensor | None]], prompts: list[WeightedPrompt]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if len(encoded) == 1:
        return encoded[0]
    total = sum(p.weight for p in prompts)
    embeds = encoded[0][0] * (prompts[0].weight / total)
    pooled = encoded[0][1] * (prompts[0].weight / total) if encoded[0][1] is not None else None
    for (part, part_pooled), prompt in zip(encoded[1:], prompts[1:], strict=True):
        embeds = embeds + part * (prompt.weight / total)
        if pooled is not None and part_pooled is not None:
            pooled = pooled + part_pooled * (prompt.weight / total)
    return embeds, pooled
