"""A job's VAE override (`Diffusion.vae`): load a VAE and swap it into a warm pipeline for one job.

Standalone VAE files (e.g. `vae-ft-mse-840000-ema-pruned.safetensors`) use the original LDM key
names, with or without the `first_stage_model.` prefix; they are converted with diffusers' own
converter against the architecture of the VAE already in the pipeline, so no config is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.models import ModelRecord

_PREFIXES = ("first_stage_model.", "vae.")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def load_vae(record: ModelRecord, like: Any) -> Any:
    """Load `record` as an AutoencoderKL shaped like `like` (the pipeline's own VAE)."""
    import diffusers

    path = Path(record.path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise InvalidParams(f"VAE {record.id}: pickle formats are never loaded; use .safetensors", field="vae")
    autoencoder: Any = diffusers.AutoencoderKL
    if path.is_dir():
        vae = autoencoder.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    elif path.suffix.lower() == ".safetensors":
        vae = autoencoder.from_config(like.config)
        try:
            vae.load_state_dict(_diffusers_state(path, dict(like.config)), strict=True)
        except RuntimeError as exc:
            raise InvalidParams(f"VAE {record.id} does not fit this model: {exc}", field="vae") from exc
    else:
        raise InvalidParams(f"VAE {record.id}: expected a .safetensors file or a diffusers folder", field="vae")
    param = next(like.parameters())
    return vae.to(param.device, param.dtype).eval()


def _diffusers_state(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    from diffusers.loaders import single_file_utils
    from safetensors.torch import load_file

    converter: Any = single_file_utils.convert_ldm_vae_checkpoint

    state = dict(load_file(str(path)))
    for prefix in _PREFIXES:
        if any(key.startswith(prefix) for key in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if any(".down_blocks." in key for key in state):  # already diffusers names
        return state
    converted: dict[str, Any] = converter(state, config)
    return converted


@contextmanager
def swapped_vae(pipes: list[Any], vae: Any | None) -> Iterator[None]:
    """Use `vae` in every one of `pipes` (which share modules) for the block, then put theirs back."""
    if vae is None:
        yield
        return
    originals = [pipe.vae for pipe in pipes]
    try:
        for pipe in pipes:
            pipe.vae = vae
        yield
    finally:
        for pipe, original in zip(pipes, originals, strict=True):
            pipe.vae = original
