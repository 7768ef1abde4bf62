"""Tiny random Stable Diffusion components and model files, built in seconds on a CPU.

The shapes follow diffusers' own `get_dummy_components` (UNet block_out_channels (32, 64),
cross-attention width 32, a 32-wide CLIP text encoder) but keep CLIP's real vocabulary and tokenizer,
so prompts, embeddings and LoRA target the same code paths as a real SD 1.5 checkpoint.
Every builder seeds torch itself, so two calls give identical weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusiond.engine.clip_tokenizer import VOCAB_SIZE, write_clip_tokenizer

if TYPE_CHECKING:
    import torch

TINY_HIDDEN = 32
TINY_HIDDEN_2 = 48  # SDXL's second text encoder; wider than the first, as in the real model


def _diffusers() -> Any:
    # diffusers ships partial type hints; the builders treat its classes as dynamic.
    import diffusers

    return diffusers


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def tiny_unet(in_channels: int = 4, *, sdxl: bool = False) -> Any:
    _seed(0)
    extra: dict[str, Any] = {}
    if sdxl:
        # text_time conditioning: 6 time ids * addition_time_embed_dim + pooled width (32)
        extra = {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + TINY_HIDDEN_2,
            "use_linear_projection": True,
            "transformer_layers_per_block": (1, 2),
            "attention_head_dim": (2, 4),
            "cross_attention_dim": TINY_HIDDEN + TINY_HIDDEN_2,
        }
    else:
        extra = {"cross_attention_dim": TINY_HIDDEN}
    return _diffusers().UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        **extra,
    )


def tiny_vae() -> Any:
    _seed(0)
    return _diffusers().AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )


def tiny_text_encoder(*, with_projection: bool = False, seed: int = 0, hidden: int = TINY_HIDDEN) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    _seed(seed)
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,  # SD 1.x's legacy value: pooling takes the argmax token (EOS has the top id)
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=VOCAB_SIZE,
        projection_dim=hidden,
        hidden_act="gelu",
        max_position_embeddings=77,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config)


def tiny_tokenizer(folder: Path, pad_token: str = "<|endoftext|>") -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(folder, pad_token=pad_token)))


def tiny_scheduler() -> Any:
    return _diffusers().DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_sd_components(work: Path, *, in_channels: int = 4) -> dict[str, Any]:
    """The components of a tiny SD 1.x-style pipeline (tokenizer files go under `work`)."""
    return {
        "unet": tiny_unet(in_channels),
        "vae": tiny_vae(),
        "text_encoder": tiny_text_encoder(),
        "tokenizer": tiny_tokenizer(work / "_tokenizer"),
        "scheduler": tiny_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def save_tiny_sd(folder: Path) -> Path:
    """Save a tiny SD 1.x pipeline as a diffusers folder of .safetensors files."""
    pipe = _diffusers().StableDiffusionPipeline(**tiny_sd_components(folder.parent / f".{folder.name}-work"))
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_tiny_sd_inpaint(folder: Path) -> Path:
    """Save a tiny inpainting pipeline: a 9-channel UNet (latents + mask + masked-image latents)."""
    components = tiny_sd_components(folder.parent / f".{folder.name}-work", in_channels=9)
    _diffusers().StableDiffusionInpaintPipeline(**components).save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_tiny_sdxl(folder: Path) -> Path:
    """Save a tiny SDXL pipeline (two text encoders, text_time conditioning)."""
    diffusers = _diffusers()
    work = folder.parent / f".{folder.name}-work"
    pipe = diffusers.StableDiffusionXLPipeline(
        unet=tiny_unet(sdxl=True),
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(),
        text_encoder_2=tiny_text_encoder(with_projection=True, seed=1, hidden=TINY_HIDDEN_2),
        tokenizer=tiny_tokenizer(work / "tok1"),
        tokenizer_2=tiny_tokenizer(work / "tok2", pad_token="!"),
        scheduler=diffusers.EulerDiscreteScheduler.from_config(tiny_scheduler().config),
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def tiny_lora_layers(*, rank: int = 4, seed: int = 1, scale: float = 0.5, sdxl: bool = False
                     ) -> dict[str, torch.Tensor]:
    """diffusers/peft-format LoRA weights for the tiny SD (or SDXL) UNet, large enough to matter.

    peft initialises lora_B to zero (a no-op adapter), so both matrices are filled with random values.
    """
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = tiny_unet(sdxl=sdxl)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    layers: dict[str, torch.Tensor] = get_peft_model_state_dict(unet)
    return layers


def save_tiny_lora(path: Path, *, rank: int = 4, seed: int = 1, kohya: bool = False, sdxl: bool = False) -> Path:
    """Save the tiny LoRA as a diffusers/peft file, or with `kohya=True` in kohya-ss naming.

    Both files hold the same weights (kohya alpha = rank, so its scale is 1): they must give the
    same images.
    """
    from safetensors.torch import save_file

    layers = tiny_lora_layers(rank=rank, seed=seed, sdxl=sdxl)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kohya:
        save_file(_to_kohya(layers, rank), str(path))
    else:
        pipeline = _diffusers().StableDiffusionXLPipeline if sdxl else _diffusers().StableDiffusionPipeline
        pipeline.save_lora_weights(
            str(path.parent), unet_lora_layers=layers, weight_name=path.name, safe_serialization=True
        )
    return path


def _to_kohya(layers: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    import torch

    out: dict[str, torch.Tensor] = {}
    for key, value in layers.items():
        module, _, kind = key.rpartition(".lora_")
        name = "lora_unet_" + module.replace(".", "_")
        out[f"{name}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value.contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(rank))
    return out


def save_tiny_embedding(path: Path, *, vectors: int = 2, seed: int = 2, sdxl: bool = False) -> Path:
    """Save a textual-inversion embedding for the tiny text encoder(s).

    SD layout: A1111's `emb_params`; SDXL layout: one tensor per encoder, `clip_l` and `clip_g`.
    """
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    widths = {"clip_l": TINY_HIDDEN, "clip_g": TINY_HIDDEN_2} if sdxl else {"emb_params": TINY_HIDDEN}
    save_file({name: torch.randn((vectors, width), generator=generator) for name, width in widths.items()}, str(path))
    return path


def tiny_esrgan_state_dict(scale: int = 2) -> dict[str, torch.Tensor]:
    """An old-layout ESRGAN (RRDBNet) state dict that spandrel detects, 8 filters, one block."""
    from diffusiond.engine.upscalers import ensure_spandrel_importable

    ensure_spandrel_importable()  # before spandrel's own import, which needs torchvision otherwise
    from spandrel.architectures.ESRGAN import ESRGAN

    _seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def save_tiny_esrgan(path: Path, scale: int = 2) -> Path:
    """Save the tiny ESRGAN as .safetensors or, for a `.pth` path, as a plain torch zip of tensors."""
    import torch
    from safetensors.torch import save_file

    state = tiny_esrgan_state_dict(scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return path


def save_tiny_hypernetwork(path: Path, *, width: int = TINY_HIDDEN, seed: int = 3, scale: float = 0.5) -> Path:
    """An A1111-layout hypernetwork (layer structure 1, 2, 1 with relu) as .safetensors, for context `width`."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for which in (0, 1):  # keys, values
        for index, (out, inp) in ((0, (2 * width, width)), (2, (width, 2 * width))):
            tensors[f"{width}.{which}.linear.{index}.weight"] = torch.randn((out, inp), generator=generator) * scale
            tensors[f"{width}.{which}.linear.{index}.bias"] = torch.randn((out,), generator=generator) * scale
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"activation_func": "relu", "layer_structure": "1,2,1"})
    return path


def save_tiny_single_file(folder: Path, path: Path, family: str = "tiny") -> Path:
    """A diffusers folder as one self-describing .safetensors checkpoint (its configs in the metadata)."""
    from diffusiond.engine.single_file import export_single_file

    return export_single_file(folder, path, write_config=False, embed_family=family)
