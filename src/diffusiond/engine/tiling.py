"""Seamless tiling (A1111's `tiling`): every 2-D convolution pads circularly for one job.

With circular padding the left edge of every feature map sees the right edge, so the decoded image
continues across its borders and tiles without seams. The modules are shared by every task pipeline
of a model, so the mode is switched back when the job ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def circular_padding(modules: Iterable[Any], enabled: bool) -> Iterator[None]:
    """Pad the Conv2d layers of `modules` circularly inside the block (nothing when not `enabled`)."""
    if not enabled:
        yield
        return
    import torch

    convs: dict[int, Any] = {}
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d) and layer.padding_mode == "zeros":
                convs[id(layer)] = layer
    for layer in convs.values():
        layer.padding_mode = "circular"
    try:
        yield
    finally:
        for layer in convs.values():
            layer.padding_mode = "zeros"
