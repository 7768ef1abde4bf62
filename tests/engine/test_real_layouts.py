"""Full-size SD 1.5, SD 2.x and SDXL checkpoints in the original single-file layout load through
family detection and the shipped configs, bit for bit. Random fp16 weights, built in memory.

Slow (1-3 minutes and up to 14 GB of memory each): run with DIFFUSIOND_SLOW=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.engine.loader import CONFIGS, detect_family, load_checkpoint, read_key_shapes
from diffusiond.engine.single_file import clip_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("DIFFUSIOND_SLOW") != "1", reason="full-size models; set DIFFUSIOND_SLOW=1"),
]


def build(family: str, component: str) -> Any:
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    folder = CONFIGS / family / component
    library, class_name = json.loads((CONFIGS / family / "model_index.json").read_text())[component]
    with init_empty_weights():
        if library == "transformers":
            cls = getattr(transformers, class_name)
            model = cls(cls.config_class.from_pretrained(str(folder)))
        else:
            cls = getattr(diffusers, class_name)
            model = cls.from_config(cls.load_config(str(folder)))
    model.to_empty(device="cpu")
    model.to(torch.float16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator).to(tensor.dtype))
    return model


@pytest.mark.parametrize("family", ["sd15", "sd2_v", "sdxl"])
def test_full_size_single_file_loads_exactly(family: str, tmp_path: Path) -> None:
    names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    parts = {name: build(family, name) for name in names}
    tensors = unet_to_ldm(parts["unet"].state_dict(), 2) | vae_to_ldm(parts["vae"].state_dict(), 4)
    if family == "sdxl":
        tensors |= clip_to_ldm(parts["text_encoder"].state_dict(), "conditioner.embedders.0.transformer.")
        tensors |= open_clip_to_ldm(parts["text_encoder_2"].state_dict(), "conditioner.embedders.1.model.")
    elif family == "sd2_v":
        tensors |= open_clip_to_ldm(parts["text_encoder"].state_dict(), "cond_stage_model.model.")
    else:
        tensors |= clip_to_ldm(parts["text_encoder"].state_dict())
    from safetensors.torch import save_file

    path = tmp_path / f"{family}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    del tensors
    assert detect_family(read_key_shapes(path)) == family
    record = ModelRecord("real", ModelKind.CHECKPOINT, ModelFormat.SAFETENSORS, str(path))
    loaded = load_checkpoint(record, tmp_path / "cache", dtype=torch.float16)
    for name, original in parts.items():
        a, b = original.state_dict(), getattr(loaded.pipe, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
