"""Export a diffusers SD 1.x/2.x-style folder to the original single-file (LDM) key layout.

This is the inverse of what diffusers' `from_single_file` reads (`convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`),
written for any block count and `layers_per_block`, so small non-standard models (the bundled
`shapes` model, test models) can be shipped and loaded as one `.safetensors` file. SD 1.x, SD 2.x
(OpenCLIP text tower) and SDXL (both text towers) layouts are written.

A non-standard architecture has no shipped config, so `export_single_file` also writes the folder's
configs and tokenizer, without weights, to the sibling folder `<stem>.config/`. The loader looks for
exactly that sibling (see `sibling_config_dir`); a caller may also pass a config folder explicitly.

A file that travels alone (uploaded, stored as one blob) carries its configs inside instead: with
`embed_family=...` the json configs go into the safetensors header's metadata (`EMBEDDED_CONFIG`),
and `write_embedded_config` rebuilds the config folder from them. That metadata is as untrusted as
the file: only a fixed list of pipeline and component classes is accepted from it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.engine.clip_tokenizer import EOS, write_clip_tokenizer

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}
_VAE_ATTENTION = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}


def sibling_config_dir(checkpoint: Path) -> Path:
    """The config folder that travels with a non-standard single file: `<stem>.config/`."""
    return checkpoint.with_name(checkpoint.stem + ".config")


def _replace_prefix(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet2DConditionModel state dict to the LDM `model.diffusion_model.` layout."""
    step = layers_per_block + 1
    up_with_attention = {int(m.group(1)) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _unet_key(key, step, up_with_attention)
        if new is None:
            raise ValueError(f"cannot map UNet key {key!r} to the single-file layout")
        out[UNET_PREFIX + new] = value
    return out


def _unet_key(key: str, step: int, up_with_attention: set[int]) -> str | None:
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = step * block + j + 1
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_replace_prefix(rest, _UNET_RESNET)}"
        return f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{step * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = step * block + j
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_replace_prefix(rest, _UNET_RESNET)}"
        return f"output_blocks.{index}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        block = int(m[1])
        # LDM puts the upsampler after the attention layer when the block has one.
        slot = 2 if block in up_with_attention else 1
        return f"output_blocks.{step * block + step - 1}.{slot}.conv.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_replace_prefix(m[2], _UNET_RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    for old, new in _UNET_TOP.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def vae_to_ldm(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKL state dict to the LDM `first_stage_model.` layout."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _vae_key(key, num_blocks)
        if ".mid.attn_1." in new and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        out[VAE_PREFIX + new] = value
    return out


def _vae_key(key: str, num_blocks: int) -> str:
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        block = num_blocks - 1 - int(m[1])  # LDM numbers decoder blocks from the lowest resolution up
        return f"decoder.up.{block}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
        return f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.{m[2]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        return f"{m[1]}.mid.attn_1.{_replace_prefix(m[2], _VAE_ATTENTION)}"
    return key.replace("conv_norm_out", "norm_out")


def clip_to_ldm(state: dict[str, torch.Tensor], prefix: str = CLIP_PREFIX) -> dict[str, torch.Tensor]:
    """Prefix a CLIPTextModel state dict the SD 1.x way (`cond_stage_model.transformer.text_model.`).

    transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); the file keeps the original
    names so other tools read it too.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key if key.startswith("text_model.") else "text_model." + key
        out[prefix + name] = value.detach().contiguous()
    return out


_OPEN_CLIP_LAYER = {
    "self_attn.out_proj.": "attn.out_proj.",
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
}


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """An OpenCLIP text tower (SD 2.x, SDXL's second encoder) in its original layout under `prefix`.

    OpenCLIP keeps q, k and v as one `in_proj` matrix and stores the projection transposed.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for full_key, value in state.items():
        key = full_key.removeprefix("text_model.")
        if m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$", key):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.*)", key):
            out[f"transformer.resblocks.{m[1]}.{_replace_prefix(m[2], _OPEN_CLIP_LAYER)}"] = value
        elif key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.rsplit(".", 1)[1]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T
        elif "position_ids" not in key:
            raise ValueError(f"cannot map text encoder key {full_key!r} to the OpenCLIP layout")
    for (layer, kind), parts in qkv.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return {prefix + k: v.detach().contiguous() for k, v in out.items()}


def text_to_ldm(pipe: Any, *, open_clip: bool = False) -> dict[str, torch.Tensor]:
    """The pipeline's text encoder(s) in the single-file layout of its family.

    SDXL: CLIP-L under `conditioner.embedders.0.transformer.`, OpenCLIP under
    `conditioner.embedders.1.model.`. SD 2.x (`open_clip=True`): `cond_stage_model.model.`.
    SD 1.x: `cond_stage_model.transformer.`.
    """
    first = pipe.text_encoder.state_dict()
    if getattr(pipe, "text_encoder_2", None) is not None:
        clip_l = clip_to_ldm(first, "conditioner.embedders.0.transformer.")
        return clip_l | open_clip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model.")
    if open_clip:
        return open_clip_to_ldm(first, "cond_stage_model.model.")
    return clip_to_ldm(first)


EMBEDDED_CONFIG = "diffusiond.config"
# What an embedded config may name: the pipelines a single file loads as, and their components.
PIPELINE_CLASSES = {"StableDiffusionPipeline", "StableDiffusionInpaintPipeline", "StableDiffusionXLPipeline",
                    "StableDiffusionXLInpaintPipeline"}
COMPONENT_CLASSES = {("diffusers", "UNet2DConditionModel"), ("diffusers", "AutoencoderKL"),
                     ("transformers", "CLIPTextModel"), ("transformers", "CLIPTextModelWithProjection"),
                     ("transformers", "CLIPTokenizer"), ("transformers", "CLIPTokenizerFast")}
_CONFIG_FILE = re.compile(r"^(?:[a-z_0-9]{1,40}/)?[a-z_0-9]{1,40}\.json$")
_TOKENIZER = re.compile(r"^tokenizer(?:_[0-9])?$")
MAX_EMBEDDED_CONFIG = 256 * 1024


def embedded_config(folder: Path, family: str) -> str:
    """A diffusers folder's architecture as one string: its json configs, its family, and the pad token
    of each tokenizer (the CLIP vocabulary itself is rebuilt offline, see clip_tokenizer.py)."""
    files: dict[str, Any] = {}
    tokenizers: dict[str, str] = {}
    for path in sorted(folder.rglob("*.json")):
        rel = path.relative_to(folder).as_posix()
        if _TOKENIZER.match(path.parent.name):
            if path.name == "tokenizer_config.json":
                tokenizers[path.parent.name] = str(json.loads(path.read_text()).get("pad_token", EOS))
            continue
        if rel == "model_index.json" or path.parent.parent == folder:  # not a README's or a log's json
            files[rel] = json.loads(path.read_text())
    return json.dumps({"family": family, "files": files, "tokenizers": tokenizers}, sort_keys=True)


def embedded_family(raw: str) -> str:
    """The family an embedded config names (checked like the rest of it)."""
    return str(_checked_config(raw)["family"])


def write_embedded_config(raw: str, target: Path) -> Path:
    """Rebuild the config folder an embedded config describes, after checking every part of it."""
    data = _checked_config(raw)
    if target.exists():
        shutil.rmtree(target)
    for rel, content in data["files"].items():
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(content, indent=2))
    for name, pad in data["tokenizers"].items():
        write_clip_tokenizer(target / name, pad_token=pad)
    return target


def _checked_config(raw: str) -> dict[str, Any]:
    def bad(why: str) -> InvalidParams:
        return InvalidParams(f"the file's embedded config is invalid: {why}", code="invalid_model_file")

    if len(raw) > MAX_EMBEDDED_CONFIG:
        raise bad("too large")
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad("not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or not isinstance(
            data.get("tokenizers"), dict) or not isinstance(data.get("family"), str):
        raise bad("expected family, files and tokenizers")
    if not re.fullmatch(r"[a-z0-9_.-]{1,32}", data["family"]):
        raise bad("family")
    files: dict[str, Any] = data["files"]
    if len(files) > 20 or not all(_CONFIG_FILE.match(k) and isinstance(v, dict) for k, v in files.items()):
        raise bad("config file names")
    index = files.get("model_index.json")
    if not isinstance(index, dict) or index.get("_class_name") not in PIPELINE_CLASSES:
        raise bad("model_index.json must name a Stable Diffusion pipeline")
    for key, value in index.items():
        if isinstance(value, list) and len(value) == 2 and value[0] is not None and (
                (value[0], value[1]) not in COMPONENT_CLASSES and not str(value[1]).endswith("Scheduler")):
            raise bad(f"component {key} may not be {value[0]}.{value[1]}")
    tokenizers: dict[str, Any] = data["tokenizers"]
    if not all(_TOKENIZER.match(k) and isinstance(v, str) and len(v) <= 20 for k, v in tokenizers.items()):
        raise bad("tokenizers")
    return data


def export_single_file(folder: Path, out: Path, *, write_config: bool = True, open_clip: bool = False,
                       embed_family: str | None = None) -> Path:
    """Write `folder` (a diffusers SD/SDXL pipeline) as one LDM-layout `.safetensors` file at `out`.

    `open_clip=True` writes an SD 2.x-style text encoder (SDXL's layout is chosen automatically).
    `embed_family` puts the folder's configs into the file's metadata under that family name, so the
    file loads on its own (see `write_embedded_config`).
    """
    import diffusers
    from safetensors.torch import save_file

    loader: Any = diffusers.DiffusionPipeline
    pipe = loader.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    unet_state = {k: v.detach().contiguous() for k, v in pipe.unet.state_dict().items()}
    vae_state = {k: v.detach().contiguous() for k, v in pipe.vae.state_dict().items()}
    tensors = unet_to_ldm(unet_state, int(pipe.unet.config.layers_per_block))
    tensors |= vae_to_ldm(vae_state, len(pipe.vae.config.block_out_channels))
    tensors |= text_to_ldm(pipe, open_clip=open_clip)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "exported_by": "diffusiond"}
    if embed_family is not None:
        metadata[EMBEDDED_CONFIG] = embedded_config(folder, embed_family)
    save_file(tensors, str(out), metadata=metadata)
    if write_config:
        copy_configs(folder, sibling_config_dir(out))
    return out


def copy_configs(folder: Path, target: Path) -> Path:
    """Copy a diffusers folder's json configs and tokenizer files, never its weights."""
    if target.exists():
        shutil.rmtree(target)
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".txt"}:
            dest = target / path.relative_to(folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    return target
