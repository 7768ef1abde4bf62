"""CLIP text encoding with long prompts and clip skip, for SD 1.x/2.x and SDXL pipelines.

Why not `pipe.encode_prompt`: it truncates at 77 tokens, and its clip-skip path reaches for
`text_encoder.text_model`, which transformers >= 5.6 removed from CLIPTextModel. This module
produces exactly what `encode_prompt` produces for prompts that fit (a test pins that), and
encodes longer prompts the way A1111 does: 75-token chunks, each wrapped in BOS/EOS and padded to
77, encoded separately and concatenated along the sequence axis. Every prompt of a job is padded
with empty chunks to the same chunk count, because the UNet's cross-attention takes one length.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams

if TYPE_CHECKING:
    import torch

CHUNK = 75  # tokens per chunk, between BOS and EOS
MAX_CHUNKS = 12


def _pairs(pipe: Any) -> list[tuple[Any, Any]]:
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def token_ids(pipe: Any, tokenizer: Any, text: str) -> list[int]:
    """Token ids without BOS/EOS; multi-vector embedding tokens expanded as diffusers does."""
    if hasattr(pipe, "maybe_convert_prompt"):
        text = pipe.maybe_convert_prompt(text, tokenizer)
    ids: list[int] = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    return ids


def chunks_needed(pipe: Any, texts: list[str]) -> int:
    """How many 75-token chunks the longest of `texts` needs (at least one)."""
    longest = max((len(token_ids(pipe, pipe.tokenizer, text)) for text in texts), default=0)
    count = max(1, math.ceil(longest / CHUNK))
    if count > MAX_CHUNKS:
        raise InvalidParams(
            f"prompt is too long: {longest} tokens, at most {CHUNK * MAX_CHUNKS}",
            code="prompt_too_long",
            field="text_prompts",
        )
    return count


def encode_text(
    pipe: Any, text: str, chunks: int, device: torch.device, clip_skip: int | None, *, is_sdxl: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden states [1, 77 * chunks, width], pooled [1, width2] or None) for one prompt."""
    import torch

    hidden: list[torch.Tensor] = []
    pooled = None
    for tokenizer, encoder in _pairs(pipe):
        ids = token_ids(pipe, tokenizer, text)[: CHUNK * chunks]
        parts = []
        for index in range(chunks):
            chunk = ids[index * CHUNK : (index + 1) * CHUNK]
            row = [tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id]
            row += [tokenizer.pad_token_id] * (CHUNK + 2 - len(row))
            tensor = torch.tensor([row], device=device)
            out = encoder(tensor, output_hidden_states=True)
            parts.append(_select_layer(encoder, out, clip_skip, is_sdxl=is_sdxl))
            if is_sdxl and index == 0 and pooled is None and hasattr(out, "text_embeds"):
                pooled = out.text_embeds  # SDXL's pooled vector: the projected EOS of the first chunk
        hidden.append(torch.cat(parts, dim=1))
    dtype = _pairs(pipe)[-1][1].dtype
    return torch.cat(hidden, dim=-1).to(dtype), pooled


def _select_layer(encoder: Any, out: Any, clip_skip: int | None, *, is_sdxl: bool) -> torch.Tensor:
    if is_sdxl:  # SDXL conditions on the penultimate layer, without the final layer norm
        states: torch.Tensor = out.hidden_states[-((clip_skip or 0) + 2)]
        return states
    if clip_skip is None:
        last: torch.Tensor = out[0]
        return last
    final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
    skipped: torch.Tensor = final_norm(out.hidden_states[-(clip_skip + 1)])
    return skipped
