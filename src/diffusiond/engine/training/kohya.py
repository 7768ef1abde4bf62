"""A trained adapter as a kohya/A1111 LoRA file: what A1111, ComfyUI and civitai users load.

Keys are kohya-ss's: `lora_unet_<module>.lora_down.weight` / `.lora_up.weight` / `.alpha`, the text
encoder as `lora_te_text_model_<module>` (SDXL: `lora_te1_` and `lora_te2_`). diffusers' own converter
does the renaming; two fixes follow it: the alpha it writes is the rank (our alpha may differ), and
transformers >= 5 dropped CLIPTextModel's `text_model.` level that every kohya file names.
The metadata follows kohya's `ss_*` keys, plus `diffusiond_*` ones; it holds no time stamp, so the
same training gives the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_TEXT_PREFIX = re.compile(r"^lora_te([12])_(?!text_model_)")


def kohya_state_dict(unet: Any, text_encoders: Sequence[Any], alpha: float, *, sdxl: bool) -> dict[str, torch.Tensor]:
    """The adapters on `unet` and the text encoders (those that have one) in kohya's key layout."""
    import torch
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict

    peft: dict[str, torch.Tensor] = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    for prefix, encoder in zip(("text_encoder", "text_encoder_2"), text_encoders, strict=False):
        if getattr(encoder, "peft_config", None):
            peft.update({f"{prefix}.{k}": v for k, v in get_peft_model_state_dict(encoder).items()})
    out: dict[str, torch.Tensor] = {}
    for key, value in convert_state_dict_to_kohya(peft).items():  # type: ignore[no-untyped-call]
        key = _TEXT_PREFIX.sub(r"lora_te\1_text_model_", key)
        if not sdxl:  # SD 1.x/2.x files name their one text encoder `lora_te_`
            key = key.replace("lora_te1_", "lora_te_", 1)
        if key.endswith(".alpha"):
            value = torch.tensor(float(alpha))
        out[key] = value.detach().to("cpu", torch.float32).contiguous()
    return dict(sorted(out.items()))


def lora_metadata(*, family: str, base_model: str, trigger: str, rank: int, alpha: float, steps: int,
                  learning_rate: float, resolution: int, seed: int, images: int, text_encoder: bool,
                  captions: Sequence[str]) -> dict[str, str]:
    """kohya's `ss_*` training metadata (the fields A1111's and civitai's LoRA pages read)."""
    tags: dict[str, int] = {}
    for caption in captions:
        for tag in (t.strip() for t in caption.split(",")):
            if tag:
                tags[tag] = tags.get(tag, 0) + 1
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": _number(alpha),
        "ss_base_model_version": family,
        "ss_sd_model_name": base_model,
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_steps": str(steps),
        "ss_max_train_steps": str(steps),
        "ss_learning_rate": _number(learning_rate),
        "ss_seed": str(seed),
        "ss_num_train_images": str(images),
        "ss_network_train_unet_only": str(not text_encoder),
        "ss_tag_frequency": json.dumps({"diffusiond": tags}, sort_keys=True),
        "diffusiond_trigger": trigger,
        "diffusiond_family": family,
        "diffusiond_base_model": base_model,
    }


def save_lora(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
    """Write the file; the same tensors and metadata always give the same bytes."""
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canonical_header(save(dict(tensors), metadata=dict(metadata))))
    return path


def canonical_header(data: bytes) -> bytes:
    """The safetensors bytes with the JSON header's keys sorted: safetensors writes the metadata in
    hash-map order, which differs from one call to the next."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the tensor data stays 8-byte aligned
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
