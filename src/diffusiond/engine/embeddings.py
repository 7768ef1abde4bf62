"""Textual-inversion embeddings added to a warm pipeline's tokenizer for one job, removed after.

The trigger token is `EmbeddingRef.token` or the model id; multi-vector embeddings add `token`,
`token_1`, ... as diffusers does, and prompts keep using the bare `token`. SDXL embeddings carry one
tensor per text encoder (`clip_l`, `clip_g`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import EmbeddingRef
from diffusiond.engine.context import ModelResolver


def _encoder_pairs(pipe: Any) -> list[tuple[Any, Any]]:
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def _read(path: Path) -> dict[str, Any]:
    if path.suffix.lower() != ".safetensors":
        raise InvalidParams(f"{path.name}: embeddings must be .safetensors (pickles are never loaded)")
    from safetensors.torch import load_file

    return dict(load_file(str(path)))


def _vectors_for(state: dict[str, Any], pair_index: int, pairs: int, name: str) -> Any:
    """The embedding tensor for one text encoder of the pipeline."""
    if pairs == 2:
        key = ("clip_l", "clip_g")[pair_index]
        if key not in state:
            raise InvalidParams(f"embedding {name} is not an SDXL embedding (no {key!r} tensor)", field="embeddings")
        return state[key]
    for key in ("emb_params", "clip_l", "string_to_param.*"):  # A1111, SDXL-style, converted .pt
        if key in state:
            return state[key]
    if len(state) == 1:
        return next(iter(state.values()))
    raise InvalidParams(f"embedding {name}: no embedding tensor found", field="embeddings")


@contextmanager
def applied_embeddings(pipe: Any, refs: Sequence[EmbeddingRef], resolver: ModelResolver) -> Iterator[list[str]]:
    """Add the embeddings' tokens for the duration of the block; yields the trigger tokens."""
    if not refs:
        yield []
        return
    pairs = _encoder_pairs(pipe)
    added: list[list[str]] = [[] for _ in pairs]
    try:
        for ref in refs:
            record = resolver.resolve(ref.model_id, ModelKind.EMBEDDING)
            state = _read(Path(record.path))
            token = ref.token or ref.model_id
            for index, (tokenizer, encoder) in enumerate(pairs):
                vectors = _vectors_for(state, index, len(pairs), ref.model_id)
                before = set(tokenizer.added_tokens_encoder)
                try:
                    pipe.load_textual_inversion(vectors, token=token, tokenizer=tokenizer, text_encoder=encoder)
                except ValueError as exc:
                    raise InvalidParams(f"embedding {ref.model_id}: {exc}", field="embeddings") from exc
                added[index] += sorted(set(tokenizer.added_tokens_encoder) - before)
        yield [ref.token or ref.model_id for ref in refs]
    finally:
        for (tokenizer, encoder), tokens in zip(pairs, added, strict=True):
            if tokens:
                pipe.unload_textual_inversion(tokens=tokens, tokenizer=tokenizer, text_encoder=encoder)
