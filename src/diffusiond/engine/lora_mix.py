"""Composed LoRA mixing (`LoraMix.COMPOSED`): each LoRA denoises on its own prompt, and their effects add up.

Merged mixing adds every adapter's weight change to one UNet and conditions it on the whole prompt.
A LoRA trained on its own trigger word (and taught to leave other prompts alone) may then not fire:
CLIP's text encoder is causal, so the second trigger word of "FJA90AB KQZ27MD" is encoded in the
context of the first, which neither LoRA ever saw. Composed mixing runs, at every UNet call:

- the base model (no adapter) on the prompt without any of the LoRAs' trigger words;
- each LoRA alone, at its weight, on the prompt without the other LoRAs' trigger words;

and returns base + sum(branch - base). Classifier-free guidance is linear in the UNet's outputs, so
the guided result composes the same way. A job with one LoRA (after dropping weight 0) runs plainly:
with one branch the sum is that branch, which is the merged result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from diffusiond.domain.params import Diffusion, WeightedPrompt, unet_passes
from diffusiond.engine.lora import ActiveLora

if TYPE_CHECKING:
    import torch

    from diffusiond.engine.prompts import Conditioning


@dataclass(frozen=True)
class Branch:
    """One UNet pass of a composed step: an adapter at a weight (None: the base model) on a prompt."""

    adapter: str | None
    weight: float
    diffusion: Diffusion


def without_words(text: str, words: Sequence[str]) -> str:
    """`text` without the whole words `words` (CLIP lower-cases, so case does not matter)."""
    for word in words:
        text = re.sub(rf"(?<![\w-]){re.escape(word)}(?![\w-])", " ", text, flags=re.IGNORECASE)
    return " ".join(text.split())


def branches(diffusion: Diffusion, active: Sequence[ActiveLora]) -> list[Branch]:
    """The base branch first, then one per LoRA with a non-zero weight, by adapter name (the sum's order
    then does not depend on the order a request lists them in)."""
    loras = sorted((lora for lora in active if lora.weight != 0), key=lambda lora: lora.name)

    def prompts_without(drop: Sequence[ActiveLora]) -> Diffusion:
        words = [word for lora in drop for word in lora.trigger_words]
        prompts = tuple(WeightedPrompt(without_words(p.text, words), p.weight) for p in diffusion.prompts)
        return replace(diffusion, prompts=prompts)

    base = Branch(None, 0.0, prompts_without(loras))
    return [base, *(Branch(lora.name, lora.weight, prompts_without([o for o in loras if o is not lora]))
                    for lora in loras)]


def composes(diffusion: Diffusion) -> bool:
    """Whether the job's LoRAs run as composed branches: the rule its price follows too."""
    return unet_passes(diffusion) > 1


@contextmanager
def composed(
    base: Any, pipe: Any, parts: Sequence[Branch], encode: Callable[[Diffusion], Conditioning]
) -> Iterator[Conditioning]:
    """Make every call of the UNet a composed step for the block; yields the base branch's conditioning.

    `base` is the pipeline the adapters are loaded on; `pipe` the one that will run, sharing its
    modules (its `do_classifier_free_guidance` decides the row layout). `encode` turns a branch's
    prompts into conditioning; it runs with that branch's adapter on, so a LoRA that trained the text
    encoder changes its own branch's encoding.
    """
    # 1. Encode each branch's prompts with its own adapter
    conds = []
    for part in parts:
        _select(base, part)
        conds.append(encode(part.diffusion))
    # 2. Every adapter on; a branch is a choice of scales (0 for the others). Switching adapters through
    #    diffusers walks every module and flips requires_grad (about 20 ms a switch on `shapes`, whose
    #    UNet pass takes 45 ms); setting the scales of the LoRA layers found once takes microseconds. An
    #    adapter at scale 0 adds exactly nothing, though its low-rank product is still computed.
    adapters = [part for part in parts if part.adapter is not None]
    base.enable_lora()
    base.set_adapters([p.adapter for p in adapters], adapter_weights=[p.weight for p in adapters])
    unet = base.unet
    layers = [m for m in unet.modules() if callable(getattr(m, "set_scale", None)) and hasattr(m, "scaling")]
    original = unet.forward

    def forward(sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *args: Any,
                **kwargs: Any) -> Any:
        return_dict = kwargs.pop("return_dict", True)
        added = kwargs.pop("added_cond_kwargs", None)
        guided = bool(getattr(pipe, "do_classifier_free_guidance", False))
        outputs = []
        for part, cond in zip(parts, conds, strict=True):
            for layer in layers:
                for other in adapters:
                    layer.set_scale(other.adapter, other.weight if other is part else 0.0)
            states, extra = unet_inputs(cond, encoder_hidden_states, added, guided)
            outputs.append(original(sample, timestep, states, *args, added_cond_kwargs=extra, return_dict=False,
                                    **kwargs)[0])
        base = outputs[0]
        total = base + sum(out - base for out in outputs[1:])
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=total)
        return (total,)

    unet.forward = forward
    try:
        yield conds[0]
    finally:
        del unet.forward  # the instance attribute shadowed the class's forward


def unet_inputs(
    cond: Conditioning, states: torch.Tensor, added: dict[str, Any] | None, guided: bool
) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """A branch's conditioning in the rows the pipeline laid out for the base branch: each prompt row
    repeated once per image, after as many negative rows when guidance is on (diffusers' layout)."""
    import torch

    rows = states.shape[0] // 2 if guided else states.shape[0]

    def lay_out(positive: torch.Tensor, negative: torch.Tensor | None) -> torch.Tensor:
        pos = positive.expand(rows, *positive.shape[1:])
        if not guided:
            return pos
        assert negative is not None
        return torch.cat([negative.expand(rows, *negative.shape[1:]), pos])

    laid_out = lay_out(cond.prompt_embeds, cond.negative_prompt_embeds).to(states.dtype)
    if laid_out.shape != states.shape:
        raise RuntimeError(f"composed LoRAs: conditioning rows {tuple(laid_out.shape)} do not match the "
                           f"pipeline's {tuple(states.shape)}")
    if added is not None and cond.pooled_prompt_embeds is not None:
        pooled = lay_out(cond.pooled_prompt_embeds, cond.negative_pooled_prompt_embeds)
        added = {**added, "text_embeds": pooled.to(added["text_embeds"].dtype)}
    return laid_out, added


def _select(pipe: Any, part: Branch) -> None:
    """Only `part`'s adapter on, on the pipeline's text encoders and UNet; none for the base."""
    if part.adapter is None:
        pipe.disable_lora()
        return
    pipe.enable_lora()
    pipe.set_adapters([part.adapter], adapter_weights=[part.weight])
