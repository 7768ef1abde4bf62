"""Attention: diffusers' SDPA processor, without its per-call signature lookup.

diffusers' `Attention.forward` calls `inspect.signature(processor.__call__)` on every call, to filter
keyword arguments. On a small model that is about 7% of a denoising step on CPU (measured with
cProfile on the bundled `shapes` model at 64x64). `fast_attention` swaps each default processor
(`AttnProcessor2_0`, torch's scaled_dot_product_attention) for a subclass that runs the same code and
carries its signature precomputed, so outputs are bit-identical.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@functools.cache
def _processor_class() -> type[Any]:
    from diffusers.models.attention_processor import AttnProcessor2_0

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return AttnProcessor2_0.__call__(self, *args, **kwargs)

    # `inspect.signature` returns a stored `__signature__` without rebuilding it from the code.
    call.__signature__ = inspect.signature(AttnProcessor2_0.__call__)  # type: ignore[attr-defined]
    return type("SignedAttnProcessor2_0", (AttnProcessor2_0,), {
        "__call__": call,
        "__doc__": "AttnProcessor2_0 with its call signature computed once.",
    })


def fast_attention(*models: torch.nn.Module) -> int:
    """Swap every `AttnProcessor2_0` in `models` for the signed copy; returns how many were swapped.

    Other processors (IP-Adapter, custom ones) are left alone.
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    signed = _processor_class()
    swapped = 0
    for model in models:
        for module in model.modules():
            processor: object = getattr(module, "processor", None)
            if isinstance(module, Attention) and type(processor) is AttnProcessor2_0:
                module.set_processor(signed())
                swapped += 1
    return swapped
