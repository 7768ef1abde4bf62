"""Load a checkpoint `ModelRecord` into a diffusers pipeline, with nothing fetched from the Hub.

- a diffusers folder loads with `from_pretrained(local_files_only=True, use_safetensors=True)`;
- a single `.safetensors` file loads with `from_single_file(config=<folder>)`, where the folder is
  the sibling `<stem>.config/` when present (non-standard architectures, see `single_file.py`), or
  the one rebuilt from the config embedded in the file's metadata, or else the shipped config of the
  family detected from the file's tensor names and shapes;
- pickle formats (.ckpt, .pt, .bin) are refused before any byte of them is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelRecord
from diffusiond.engine.clip_tokenizer import EOS, write_clip_tokenizer
from diffusiond.engine.single_file import EMBEDDED_CONFIG, sibling_config_dir, write_embedded_config

if TYPE_CHECKING:
    import torch

# Set before diffusers/huggingface_hub are first imported by the engine: no code path may download.
os.environ["HF_HUB_OFFLINE"] = "1"

CONFIGS = Path(__file__).parent / "configs"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SDXL_FAMILIES = {"sdxl", "sdxl_inpaint"}

_UNET = "model.diffusion_model."
_SD2_PROBE = _UNET + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
_CONV_IN = _UNET + "input_blocks.0.0.weight"


@dataclass
class LoadedModel:
    """A pipeline plus what the engine needs to know about it."""

    pipe: Any  # a diffusers StableDiffusion*/StableDiffusionXL* pipeline
    family: str  # sd15 | sd15_inpaint | sd2_v | sd2_base | sd2_inpaint | sdxl | sdxl_inpaint | <record>

    @property
    def is_sdxl(self) -> bool:
        return self.family.startswith("sdxl") or hasattr(self.pipe, "text_encoder_2")

    @property
    def is_inpaint_unet(self) -> bool:
        return int(self.pipe.unet.config.in_channels) == 9


def read_key_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a .safetensors file; the header only, no tensor data is read."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118


def detect_family(shapes: Mapping[str, tuple[int, ...]], hint: str = "") -> str:
    """The shipped-config family of an LDM single-file checkpoint, from its tensor names and shapes.

    SD 2.x 512 (epsilon) and 768 (v-prediction) weights have identical shapes; v-prediction (SD 2.1
    768, the common release) is assumed unless the record's family says `sd2_base`.
    """
    if not any(key.startswith(_UNET) for key in shapes):
        raise InvalidParams("not a Stable Diffusion checkpoint: no model.diffusion_model.* tensors")
    inpaint = len(shapes.get(_CONV_IN, ())) == 4 and shapes[_CONV_IN][1] == 9
    if any(key.startswith("conditioner.embedders.") for key in shapes):
        return "sdxl_inpaint" if inpaint else "sdxl"
    probe = shapes.get(_SD2_PROBE)
    if probe is not None and probe[-1] == 1024:
        if inpaint:
            return "sd2_inpaint"
        if "v_pred" in shapes:
            return "sd2_v"
        return "sd2_base" if hint in {"sd2_base", "sd2-base", "sd2_512"} else "sd2_v"
    return "sd15_inpaint" if inpaint else "sd15"


def prepare_config_dir(family: str, cache_dir: Path) -> Path:
    """Copy a shipped config to `cache_dir` and add the tokenizer folders (built, never fetched)."""
    base = {"sd2_inpaint": "sd2_base", "sdxl_inpaint": "sdxl"}.get(family, family)
    source = CONFIGS / base
    if not source.is_dir():
        raise InvalidParams(f"no shipped architecture config for family {family!r}")
    target = cache_dir / "configs" / family
    if (target / ".complete").exists():
        return target
    shutil.copytree(source, target, dirs_exist_ok=True)
    if base != family:  # the inpainting variant: 9 input channels and the inpaint pipeline class
        _patch_json(target / "unet" / "config.json", in_channels=9)
        index = json.loads((target / "model_index.json").read_text())
        inpaint_class = index["_class_name"].replace("Pipeline", "InpaintPipeline")
        _patch_json(target / "model_index.json", _class_name=inpaint_class)
    sd1_tokenizer = family.startswith("sd15")
    write_clip_tokenizer(target / "tokenizer", pad_token=EOS if sd1_tokenizer or base == "sdxl" else "!")
    if base == "sdxl":
        write_clip_tokenizer(target / "tokenizer_2", pad_token="!")
    (target / ".complete").touch()
    return target


def _patch_json(path: Path, **values: Any) -> None:
    data = json.loads(path.read_text())
    data.update(values)
    path.write_text(json.dumps(data, indent=2))


def load_checkpoint(
    record: ModelRecord,
    cache_dir: Path,
    *,
    dtype: torch.dtype | None = None,
    config_dir: Path | None = None,
) -> LoadedModel:
    """Load a checkpoint record on the CPU; the model cache moves it to the device."""
    path = Path(record.path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise InvalidParams(
            f"model {record.id}: pickle checkpoints ({path.suffix}) are never loaded; convert to .safetensors",
            code="unsupported_model_format",
        )
    if path.is_dir():
        return _load_folder(path, record.family, dtype)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        raise InvalidParams(f"model {record.id}: {path.name} is neither a diffusers folder nor a .safetensors file")
    config_dir = config_dir or (sibling_config_dir(path) if sibling_config_dir(path).is_dir() else None)
    config_dir = config_dir or embedded_config_dir(path, cache_dir)
    if config_dir is not None:
        return _load_single_file(path, config_dir, record.family, dtype)
    family = detect_family(read_key_shapes(path), record.family)
    return _load_single_file(path, prepare_config_dir(family, cache_dir), family, dtype)


def embedded_config_dir(path: Path, cache_dir: Path) -> Path | None:
    """The config folder rebuilt from the file's embedded config (once per distinct config), or None."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get(EMBEDDED_CONFIG)
    if raw is None:
        return None
    target = cache_dir / "configs" / f"embedded-{hashlib.sha256(raw.encode()).hexdigest()[:20]}"
    if not target.is_dir():  # built aside and renamed: replicas loading the same file at once agree
        work = target.with_name(f".{target.name}.{os.getpid()}")
        write_embedded_config(raw, work)
        try:
            work.rename(target)
        except OSError:  # another process renamed its copy first
            shutil.rmtree(work, ignore_errors=True)
    return target


def _load_folder(path: Path, family: str, dtype: torch.dtype | None) -> LoadedModel:
    import diffusers

    if any(path.rglob("*.bin")) and not any(path.rglob("*.safetensors")):
        raise InvalidParams(
            f"{path.name}: only pickle (.bin) weights; diffusers folders must hold .safetensors",
            code="unsupported_model_format",
        )
    loader: Any = diffusers.DiffusionPipeline
    try:
        pipe = loader.from_pretrained(str(path), local_files_only=True, use_safetensors=True, dtype=dtype)
    except OSError as exc:  # missing files: nothing is fetched to complete a folder
        raise InvalidParams(f"{path.name}: incomplete diffusers folder ({exc})", code="invalid_model") from exc
    return LoadedModel(pipe=pipe, family=_refine_family(pipe, family))


def _load_single_file(path: Path, config_dir: Path, family: str, dtype: torch.dtype | None) -> LoadedModel:
    import diffusers

    class_name = json.loads((config_dir / "model_index.json").read_text())["_class_name"]
    pipeline_class = getattr(diffusers, class_name, None)
    if pipeline_class is None or not hasattr(pipeline_class, "from_single_file"):
        raise InvalidParams(f"{config_dir}: pipeline class {class_name!r} cannot load single files")
    pipe = pipeline_class.from_single_file(
        str(path), config=str(config_dir), local_files_only=True, dtype=dtype
    )
    return LoadedModel(pipe=pipe, family=_refine_family(pipe, family))


def _refine_family(pipe: Any, family: str) -> str:
    """Keep a record's own family (e.g. `shapes`) but mark SDXL and 9-channel UNets explicitly."""
    inpaint = int(pipe.unet.config.in_channels) == 9
    if hasattr(pipe, "text_encoder_2"):
        return "sdxl_inpaint" if inpaint else "sdxl"
    if inpaint and not family.endswith("_inpaint"):
        return f"{family}_inpaint"
    return family
