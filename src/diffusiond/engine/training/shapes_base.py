"""Train the bundled `shapes` text-to-image model from scratch, on this machine's CPU.

The result is an ordinary Stable Diffusion folder (CLIP text encoder + tokenizer, UNet2DConditionModel,
AutoencoderKL, a standard scheduler) so it runs through exactly the code paths real SD 1.x checkpoints
use. The recipe follows diffusers' `train_text_to_image.py`, shrunk to fit a 2-core CPU:

1. a synthetic dataset of coloured shapes (`shapes_dataset`), rendered once;
2. an AutoencoderKL with 4x downsampling (64x64 RGB -> 16x16x4), trained on crops with MSE and a
   small L2 pull on the latents, its posterior variance pinned to ~0;
3. the dataset's latents, encoded once, and the latent scaling factor measured from them; then the
   decoder refined alone on those fixed latents, on whole images (sharper edges, same latents);
4. a small UNet2DConditionModel and a small CLIPTextModel, trained jointly with the v-prediction
   objective on a zero-terminal-SNR schedule, shape pixels weighted up, a little offset noise, 10%
   empty captions (for classifier-free guidance) and an EMA of the weights: stage 4a favours noisy
   timesteps (layout), 4b refines at uniform timesteps and a low rate (low-noise detail), 4c goes on
   at uniform timesteps and a higher rate (shape kind);
5. the EMA weights saved with `save_pretrained(safe_serialization=True)` plus a TRAINING.json.

Deterministic given the seed: fixed thread count, seeded generators, a fixed data order.
Run: `python -m diffusiond.engine.training.shapes_base --out DIR --seed 0`.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from diffusiond.engine.training import shapes_dataset
from diffusiond.machine import cpu_model

if TYPE_CHECKING:
    import torch

# diffusers and transformers carry no type information mypy can use; as elsewhere in engine/, their
# objects are `Any`, named here by role.
AutoencoderKL: TypeAlias = Any
UNet2DConditionModel: TypeAlias = Any
CLIPTextModel: TypeAlias = Any
CLIPTokenizer: TypeAlias = Any

# The SD 1.x noise schedule, so every sampler's defaults behave as they do on real checkpoints.
SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    # v-prediction (as SD 2.x): at high noise the target is ~ -x0, so the model must read colour and
    # layout from the prompt; with epsilon a small budget learned a model that mostly ignored it.
    "prediction_type": "v_prediction",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}


def zero_terminal_snr_betas(schedule: dict[str, Any]) -> list[float]:
    """The schedule's betas rescaled to zero terminal SNR (Lin et al. 2024), written out in full.

    With SD's own schedule the last timestep still shows 0.5% of the image, so a model learns to read
    the layout off the noise, and at sampling time the layout follows the seed instead of the prompt.
    At zero terminal SNR the first step sees pure noise and must take colour and layout from the
    text. The final cumulative alpha is 2**-24 rather than 0 (as diffusers' Euler does) so sigma
    stays finite. Written as `trained_betas` so every scheduler, not only those with a
    `rescale_betas_zero_snr` flag, samples the schedule the model was trained on.
    """
    import torch
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    steps = schedule["num_train_timesteps"]
    betas = torch.linspace(schedule["beta_start"] ** 0.5, schedule["beta_end"] ** 0.5, steps,
                           dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - rescale_zero_terminal_snr(betas), dim=0)
    alphas_cumprod[-1] = 2.0**-24
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return [float(b) for b in (1.0 - alphas_cumprod / previous)]


def noise_schedule(config: ShapesTrainConfig) -> dict[str, Any]:
    """The scheduler settings the model is trained with and ships with."""
    if not config.zero_terminal_snr:
        return dict(SCHEDULE)
    return {**SCHEDULE, "trained_betas": zero_terminal_snr_betas(SCHEDULE)}


@dataclass(frozen=True)
class ShapesTrainConfig:
    """Every knob of one training run; the defaults produce the shipped weights."""

    seed: int = 0
    resolution: int = 64
    dataset_size: int = 12000
    # Autoencoder
    vae_steps: int = 1200
    vae_batch_size: int = 16
    vae_crop: int = 32
    vae_lr: float = 3e-3
    vae_latent_l2: float = 1e-5
    decoder_steps: int = 0  # optional stage 3b; off for the shipped weights (it costs CPU time)
    decoder_batch_size: int = 8
    decoder_lr: float = 1e-3
    # UNet + text encoder
    unet_steps: int = 9000
    # Stage 4b: the same objective at uniform timesteps and a lower rate, from stage 4a's weights as
    # they ship (fp16-rounded UNet). Stage 4a's high-noise emphasis leaves low-noise denoising
    # (what img2img at low strength and inpainting edges rely on) undertrained.
    refine_steps: int = 1500
    refine_lr: float = 2e-4
    # Stage 4c: uniform timesteps again, at a higher rate, from stage 4b's weights as they ship. Shape
    # kind (circle against square at the large size, triangle against circle at the small one) is the
    # last thing the model learns: on the earlier weights this stage took it from 52% to 72% of the grid.
    polish_steps: int = 2000
    polish_lr: float = 5e-4
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 200
    snapshot_every: int = 0
    caption_dropout: float = 0.1
    noise_offset: float = 0.05
    zero_terminal_snr: bool = True
    snr_gamma: float = 0.0  # 0 turns min-SNR weighting off (plain v-prediction MSE)
    # Loss weight added on latent pixels the shape covers: the shape is ~10-30% of an image, and
    # its colour, kind and place are what prompts ask for.
    shape_loss_weight: float = 4.0
    timestep_power: float = 2.0  # t ~ N * u**(1/power): 1 uniform, >1 favours high noise (layout)
    ema_decay: float = 0.998
    # Architecture
    unet_channels: tuple[int, ...] = (32, 64, 96, 128)
    # Which UNet levels (highest resolution first) get cross-attention; the mid block always has it.
    unet_attention: tuple[bool, ...] = (False, True, True, True)
    text_hidden: int = 64
    text_layers: int = 3
    # One thread: on a shared CPU, two OpenMP threads spin against other processes and run up to
    # 5x slower than one (measured while other test suites ran).
    threads: int = 1


def _class(module: str, name: str) -> Any:
    """`module.name`, imported lazily (torch-heavy imports stay out of module import time)."""
    return getattr(importlib.import_module(module), name)


# -- 0. Components -------------------------------------------------------------------------------


def build_vae() -> AutoencoderKL:
    """A 3-level AutoencoderKL: 64x64x3 <-> 16x16x4."""
    return _class("diffusers", "AutoencoderKL")(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
        # No attention: the autoencoder is trained on crops and must not depend on the image size.
        mid_block_add_attention=False,
    )


def build_text_encoder(config: ShapesTrainConfig) -> CLIPTextModel:
    """A small CLIP text transformer over the full CLIP vocabulary (so the real tokenizer fits)."""
    from diffusiond.engine.clip_tokenizer import VOCAB_SIZE

    return _class("transformers", "CLIPTextModel")(
        _class("transformers", "CLIPTextConfig")(
            vocab_size=VOCAB_SIZE,
            hidden_size=config.text_hidden,
            intermediate_size=config.text_hidden * 4,
            num_hidden_layers=config.text_layers,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=config.text_hidden,
            bos_token_id=VOCAB_SIZE - 2,
            eos_token_id=VOCAB_SIZE - 1,
            pad_token_id=VOCAB_SIZE - 1,
        )
    )


def build_unet(config: ShapesTrainConfig) -> UNet2DConditionModel:
    """A small SD-style UNet on 16x16 latents, cross-attention at the levels `unet_attention` names."""
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_attention))
    return _class("diffusers", "UNet2DConditionModel")(
        sample_size=config.resolution // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=config.unet_channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=config.text_hidden,
        attention_head_dim=8,
        norm_num_groups=16,
    )


# -- helpers ---------------------------------------------------------------------------------------


@contextmanager
def _progress(total: int, desc: str, enabled: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    bar = tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=2.0)
    try:
        yield bar
    finally:
        bar.close()


def _lr_factor(step: int, warmup: int) -> float:
    # Linear warm-up, then constant; the EMA does the annealing. With no dependence on the total,
    # the checkpoint at step K of a long run is exactly the result of a run with K steps.
    return min(1.0, (step + 1) / warmup)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    import torch

    # Warm-up the decay (as diffusers' EMAModel does) so early EMA weights are not mostly random init.
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1.0 - d)


def _render_dataset(config: ShapesTrainConfig, progress: bool) -> tuple[np.ndarray, list[str]]:
    images = np.empty((config.dataset_size, config.resolution, config.resolution, 3), dtype=np.uint8)
    captions: list[str] = []
    with _progress(config.dataset_size, "render dataset", progress) as bar:
        for i, item in enumerate(shapes_dataset.iter_samples(config.dataset_size, seed=config.seed,
                                                             size=config.resolution)):
            images[i] = shapes_dataset.to_array(item.image)
            captions.append(item.caption)
            bar.update(1)
    return images, captions


def shape_masks(images: np.ndarray, factor: int = 4) -> torch.Tensor:
    """(N, 1, H/factor, W/factor) share of each latent pixel's patch covered by the shape.

    The background is the colour of the top-left pixel, which every dataset layout leaves clear.
    """
    import torch

    pixels = torch.from_numpy(images).float()
    background = pixels[:, :1, :1, :]
    covered = ((pixels - background).norm(dim=-1) > 30.0).float()[:, None]
    return torch.nn.functional.avg_pool2d(covered, factor)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _batches(count: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterable[torch.Tensor]:
    """`steps` batches of indices from reshuffled epochs over `count` items."""
    import torch

    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(count, generator=generator)])
        yield order[:batch_size]
        order = order[batch_size:]


# -- 2. Autoencoder --------------------------------------------------------------------------------


def train_vae(images: np.ndarray, config: ShapesTrainConfig, progress: bool) -> tuple[AutoencoderKL, float]:
    """Train the autoencoder; returns it (eval mode) and its final reconstruction MSE."""
    import torch

    generator = torch.Generator().manual_seed(config.seed + 1)
    vae = build_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    loss_ema = float("nan")
    vae.train()
    with _progress(config.vae_steps, "train vae", progress) as bar:
        for step, idx in enumerate(_batches(len(images), config.vae_batch_size, config.vae_steps, generator)):
            for group in optimizer.param_groups:
                group["lr"] = config.vae_lr * _lr_factor(step, 50)
            x = _random_crop(_to_tensor(images[idx.numpy()]), config.vae_crop, generator)
            # A deterministic autoencoder (the posterior mean) plus a small L2 pull on the latents
            # instead of the KL term: it converges several times faster than sampling, and the
            # variance is pinned near zero afterwards (see `_pin_posterior_variance`).
            z = vae.encode(x).latent_dist.mean
            mse = torch.nn.functional.mse_loss(vae.decode(z).sample, x)
            loss = mse + config.vae_latent_l2 * z.pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            loss_ema = mse.item() if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * mse.item()
            bar.set_postfix(mse=f"{loss_ema:.5f}", refresh=False)
            bar.update(1)
    _pin_posterior_variance(vae)
    return vae.eval(), loss_ema


def _random_crop(x: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """One random crop, aligned to the 4-pixel latent grid, for the whole batch."""
    import torch

    if crop >= x.shape[-1]:
        return x
    cells = (x.shape[-1] - crop) // 4 + 1
    i, j = (4 * int(v) for v in torch.randint(0, cells, (2,), generator=generator))
    return x[:, :, i : i + crop, j : j + crop]


def _pin_posterior_variance(vae: AutoencoderKL) -> None:
    """Make the encoder's log-variance a constant -30 (diffusers' clamp), so `sample()` == `mean`.

    img2img and inpainting encode with `latent_dist.sample()`; with the variance pinned, a strength
    near 0 gives back the init image instead of a noisier copy.
    """
    import torch

    channels = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[channels:].zero_()
        vae.quant_conv.bias[channels:].fill_(-30.0)


# -- 3. Latents ------------------------------------------------------------------------------------


def encode_latents(vae: AutoencoderKL, images: np.ndarray, progress: bool) -> torch.Tensor:
    """The posterior means of every image, unscaled, as one (N, 4, h, w) tensor."""
    import torch

    chunks = []
    with torch.no_grad(), _progress(len(images), "encode latents", progress) as bar:
        for start in range(0, len(images), 256):
            chunk = images[start : start + 256]
            chunks.append(vae.encode(_to_tensor(chunk)).latent_dist.mean)
            bar.update(len(chunk))
    return torch.cat(chunks)


def refine_decoder(
    vae: AutoencoderKL, latents: torch.Tensor, images: np.ndarray, config: ShapesTrainConfig, progress: bool
) -> float:
    """Fine-tune the decoder alone on the frozen encoder's latents, on whole images; returns final MSE.

    The encoder, and so every latent the UNet trains on, is unchanged: this only sharpens edges and
    removes the crop-training artefacts at the image border. L1 + MSE with a cosine-decayed rate.
    """
    import torch

    generator = torch.Generator().manual_seed(config.seed + 3)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.decoder_lr, weight_decay=0.0)
    loss_ema = float("nan")
    vae.train()
    with _progress(config.decoder_steps, "refine decoder", progress) as bar:
        for step, idx in enumerate(_batches(len(images), config.decoder_batch_size, config.decoder_steps,
                                            generator)):
            cosine = 0.5 * (1.0 + math.cos(math.pi * step / config.decoder_steps))
            for group in optimizer.param_groups:
                group["lr"] = config.decoder_lr * cosine
            x = _to_tensor(images[idx.numpy()])
            recon = vae.decode(latents[idx]).sample
            mse = torch.nn.functional.mse_loss(recon, x)
            loss = mse + torch.nn.functional.l1_loss(recon, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            loss_ema = mse.item() if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * mse.item()
            bar.set_postfix(mse=f"{loss_ema:.5f}", refresh=False)
            bar.update(1)
    vae.eval()
    return loss_ema


# -- 4. UNet + text encoder ------------------------------------------------------------------------


def _tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return ids  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Phase:
    """One run of the diffusion loop: how long, how fast, which timesteps, which random stream."""

    steps: int
    lr: float
    timestep_power: float
    warmup: int
    seed_offset: int = 0

    @classmethod
    def main(cls, config: ShapesTrainConfig) -> Phase:
        return cls(config.unet_steps, config.lr, config.timestep_power, config.warmup_steps)

    @classmethod
    def refine(cls, config: ShapesTrainConfig) -> Phase:
        return cls(config.refine_steps, config.refine_lr, 1.0, 100, seed_offset=10)

    @classmethod
    def polish(cls, config: ShapesTrainConfig) -> Phase:
        return cls(config.polish_steps, config.polish_lr, 1.0, 100, seed_offset=20)


def train_diffusion(
    latents: torch.Tensor,
    captions: list[str],
    tokenizer: CLIPTokenizer,
    config: ShapesTrainConfig,
    progress: bool,
    on_snapshot: Callable[[int, UNet2DConditionModel, CLIPTextModel, float], None] | None = None,
    masks: torch.Tensor | None = None,
    phase: Phase | None = None,
    start: tuple[UNet2DConditionModel, CLIPTextModel] | None = None,
) -> tuple[UNet2DConditionModel, CLIPTextModel, float]:
    """Train UNet and text encoder jointly; returns their EMA copies and the final smoothed loss.

    `phase` defaults to the main stage; `start` continues from given models instead of new ones.
    Every `config.snapshot_every` steps `on_snapshot(step, ema_unet, ema_text, loss)` is called.
    """
    import torch

    phase = phase or Phase.main(config)
    generator = torch.Generator().manual_seed(config.seed + 2 + phase.seed_offset)
    # Re-seed so initial weights do not depend on what the earlier stages drew (see `vae_from`).
    torch.manual_seed(config.seed + 4 + phase.seed_offset)
    ddpm_config = {k: v for k, v in noise_schedule(config).items() if k != "set_alpha_to_one"}
    noise_scheduler = _class("diffusers", "DDPMScheduler")(**ddpm_config)
    alphas_cumprod = noise_scheduler.alphas_cumprod
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    unet, text_encoder = start if start is not None else (build_unet(config), build_text_encoder(config))
    unet.requires_grad_(True)
    text_encoder.requires_grad_(True)
    ema_unet = copy.deepcopy(unet).requires_grad_(False)
    ema_text = copy.deepcopy(text_encoder).requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=phase.lr, weight_decay=1e-2)
    ids = _tokenize(tokenizer, captions)
    empty_ids = _tokenize(tokenizer, [""])

    unet.train()
    text_encoder.train()
    loss_ema = float("nan")
    desc = "train unet+text" if start is None else "refine unet+text"
    with _progress(phase.steps, desc, progress) as bar:
        for step, idx in enumerate(_batches(len(latents), config.batch_size, phase.steps, generator)):
            for group in optimizer.param_groups:
                group["lr"] = phase.lr * _lr_factor(step, phase.warmup)
            x0 = latents[idx]
            b = x0.shape[0]
            # Empty captions 10% of the time: the unconditional branch of classifier-free guidance.
            drop = torch.rand(b, generator=generator) < config.caption_dropout
            input_ids = torch.where(drop[:, None], empty_ids.expand(b, -1), ids[idx])
            # Offset noise lets the model move the mean colour of the image, which plain noise at
            # SD's terminal SNR barely allows; colour is what this model is about.
            noise = torch.randn(x0.shape, generator=generator)
            noise += config.noise_offset * torch.randn((b, x0.shape[1], 1, 1), generator=generator)
            steps_total = noise_scheduler.config.num_train_timesteps
            u = torch.rand(b, generator=generator)
            t = (steps_total * u.pow(1.0 / phase.timestep_power)).long().clamp(max=steps_total - 1)
            noisy = noise_scheduler.add_noise(x0, noise, t)

            hidden = text_encoder(input_ids).last_hidden_state
            pred = unet(noisy, t, hidden).sample
            target = noise_scheduler.get_velocity(x0, noise, t)
            # Min-SNR-gamma weighting (Hang et al. 2023), v-prediction form: converges several times faster.
            weight = (torch.clamp(snr[t], max=config.snr_gamma) / (snr[t] + 1.0) if config.snr_gamma
                      else torch.ones(b))
            error = (pred - target).pow(2)
            per_sample = error.mean(dim=(1, 2, 3))
            if masks is not None and config.shape_loss_weight:
                error = error * (1.0 + config.shape_loss_weight * masks[idx])
            loss = (weight * error.mean(dim=(1, 2, 3))).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            _ema_update(ema_unet, unet, step, config.ema_decay)
            _ema_update(ema_text, text_encoder, step, config.ema_decay)
            mse = per_sample.mean().item()
            loss_ema = mse if math.isnan(loss_ema) else 0.99 * loss_ema + 0.01 * mse
            bar.set_postfix(loss=f"{loss_ema:.4f}", refresh=False)
            bar.update(1)
            done = step + 1
            if on_snapshot and config.snapshot_every and done % config.snapshot_every == 0 \
                    and done < phase.steps:
                on_snapshot(done, ema_unet, ema_text, loss_ema)
    return ema_unet.eval(), ema_text.eval(), loss_ema


# -- 5. Save ---------------------------------------------------------------------------------------


def save_pipeline(
    out_dir: Path, vae: AutoencoderKL, unet: UNet2DConditionModel, text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer, schedule: dict[str, Any] = SCHEDULE,
) -> None:
    """Write a StableDiffusionPipeline folder of safetensors (UNet and VAE in fp16 to stay small)."""
    import torch

    scheduler = _class("diffusers", "EulerDiscreteScheduler")(**{k: v for k, v in schedule.items()
                                          if k not in ("clip_sample", "set_alpha_to_one")},
                                       timestep_spacing="trailing")
    # The text encoder stays fp32: transformers loads weights in their stored dtype by default and
    # fp16 CPU inference is slow. diffusers up-casts fp16 UNet/VAE weights to fp32 on load.
    pipe = _class("diffusers", "StableDiffusionPipeline")(
        vae=copy.deepcopy(vae).to(torch.float16),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=copy.deepcopy(unet).to(torch.float16),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    # Euler does not take these, but DDIM and DDPM built from this config would otherwise clip x0 to
    # [-1, 1] and pin the final alpha to 1; SD 1.x's own scheduler config carries them the same way.
    config_path = Path(out_dir) / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config.update(clip_sample=False, set_alpha_to_one=False)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    # tokenizer.json holds the same vocabulary and merges; the slow-tokenizer copies only add 1.5 MB.
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        (Path(out_dir) / "tokenizer" / name).unlink(missing_ok=True)


def train_shapes(
    out_dir: Path,
    *,
    seed: int = 0,
    vae_steps: int | None = None,
    unet_steps: int | None = None,
    dataset_size: int | None = None,
    snapshot_every: int | None = None,
    refine_steps: int | None = None,
    polish_steps: int | None = None,
    vae_from: Path | None = None,
    refine_from: Path | None = None,
    polish_from: Path | None = None,
    progress: bool = True,
    config: ShapesTrainConfig | None = None,
) -> Path:
    """Train the `shapes` model and write it as a diffusers folder at `out_dir`; returns `out_dir`.

    `vae_from` reuses the autoencoder of an earlier run's folder with the same seed and dataset (stage
    2 is deterministic), to iterate on the UNet stage without retraining it. `refine_from` starts at
    stage 4b from an earlier run's stage 4a output, `polish_from` at stage 4c from a stage 4b output;
    either gives what the run from scratch gives.
    """
    import dataclasses

    import torch

    from diffusiond.engine.clip_tokenizer import write_clip_tokenizer

    # 1. Configuration and determinism
    config = config or ShapesTrainConfig()
    overrides: dict[str, Any] = {"seed": seed, "vae_steps": vae_steps, "unet_steps": unet_steps,
                                 "dataset_size": dataset_size, "snapshot_every": snapshot_every,
                                 "refine_steps": refine_steps, "polish_steps": polish_steps}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    started = time.monotonic()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    # Denormals make CPU math crawl; flush them to zero (the weights are unaffected in practice).
    torch.set_flush_denormal(True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer(out_dir / "tokenizer")
    tokenizer = _class("transformers", "CLIPTokenizer").from_pretrained(out_dir / "tokenizer")

    # 2. Dataset and autoencoder
    images, captions = _render_dataset(config, progress)
    masks = shape_masks(images)
    if vae_from is None:
        vae, vae_mse = train_vae(images, config, progress)
    else:
        vae, vae_mse = _load_vae(Path(vae_from)), _recorded(Path(vae_from), "final_vae_mse")
    # The latents come from the weights that ship (fp16), so a run that reuses a saved autoencoder
    # (`vae_from`) trains exactly what a run from scratch does.
    vae.to(torch.float16).to(torch.float32)

    # 3. Latents and their scale: SD multiplies latents by `scaling_factor` so they have unit variance.
    latents = encode_latents(vae, images, progress)
    scaling_factor = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=round(scaling_factor, 5))
    # 3b. Refine the decoder on those latents. It touches neither the latents nor the global RNG, so
    #     the UNet stage below is the same with or without it.
    if config.decoder_steps:
        vae_mse = refine_decoder(vae, latents, images, config, progress)
    latents = latents * vae.config.scaling_factor
    del images

    # 4. UNet and text encoder, with optional snapshots: each is a complete model, identical to what
    #    a run with that many steps produces (see `_lr_factor`).
    def write(folder: Path, steps: int, unet: UNet2DConditionModel, text: CLIPTextModel, loss: float) -> None:
        save_pipeline(folder, vae, unet, text, tokenizer, noise_schedule(config))
        stats: dict[str, Any] = {"unet_steps": steps, "final_vae_mse": round(vae_mse, 6),
                                 "final_diffusion_loss": round(loss, 5)}
        if vae_from is not None:  # the autoencoder stage was not run here: its time is not in wall_time_s
            stats["vae_from"] = str(vae_from)
        if refine_from is not None or polish_from is not None:  # nor were the stages it skipped
            stats["resumed_from"] = str(refine_from or polish_from)
        _write_record(folder, dataclasses.replace(config, unet_steps=steps), started, stats)

    def snapshot(steps: int, unet: UNet2DConditionModel, text: CLIPTextModel, loss: float) -> None:
        write(out_dir / "checkpoints" / f"step-{steps}", steps, unet, text, loss)

    resume = polish_from or refine_from
    if resume is None:
        unet, text_encoder, diffusion_loss = train_diffusion(latents, captions, tokenizer, config, progress,
                                                             snapshot, masks)
    else:
        unet, text_encoder = _load_unet_and_text(Path(resume))
        diffusion_loss = _recorded(Path(resume), "final_diffusion_loss")
    # 4b and 4c. Each starts from the previous stage's weights as they ship (the UNet rounded to fp16),
    #     so a run that starts from a saved stage (`refine_from`, `polish_from`) gives what a run from
    #     scratch gives.
    later = [Phase.refine(config), Phase.polish(config)]
    for phase in later[1:] if polish_from is not None else later:
        if phase.steps:
            unet.to(torch.float16).to(torch.float32)
            unet, text_encoder, diffusion_loss = train_diffusion(
                latents, captions, tokenizer, config, progress, None, masks, phase, (unet, text_encoder))

    # 5. Save
    write(out_dir, config.unet_steps, unet, text_encoder, diffusion_loss)
    return out_dir


def _load_unet_and_text(folder: Path) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    import torch

    unet = _class("diffusers", "UNet2DConditionModel").from_pretrained(folder / "unet", torch_dtype=torch.float32)
    text = _class("transformers", "CLIPTextModel").from_pretrained(folder / "text_encoder", dtype=torch.float32)
    return unet, text


def _load_vae(folder: Path) -> AutoencoderKL:
    import torch

    vae_dir = folder / "vae" if (folder / "vae").is_dir() else folder
    return _class("diffusers", "AutoencoderKL").from_pretrained(vae_dir, torch_dtype=torch.float32).eval()


def _recorded(folder: Path, key: str) -> float:
    """A number from an earlier run's TRAINING.json (0.0 when absent)."""
    try:
        return float(json.loads((folder / "TRAINING.json").read_text()).get(key, 0.0))
    except (OSError, ValueError):
        return 0.0


def _write_record(folder: Path, config: ShapesTrainConfig, started: float, stats: dict[str, Any]) -> None:
    """TRAINING.json: how these weights were made, so anyone can reproduce them."""
    import torch

    defaults = ShapesTrainConfig()
    flags = "".join(f" --{name.replace('_', '-')} {getattr(config, name)}"
                    for name in ("vae_steps", "unet_steps", "dataset_size")
                    if getattr(config, name) != getattr(defaults, name))
    record = {
        "command": f"diffusiond train-base shapes --out OUT --seed {config.seed}{flags}",
        "config": asdict(config),
        "wall_time_s": round(time.monotonic() - started, 1),
        **stats,
        "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                    "torch_threads": config.threads, "torch": torch.__version__},
    }
    (folder / "TRAINING.json").write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: `python -m diffusiond.engine.training.shapes_base --out DIR [--seed N]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=None)
    parser.add_argument("--unet-steps", type=int, default=None)
    parser.add_argument("--dataset-size", type=int, default=None)
    parser.add_argument("--snapshot-every", type=int, default=None,
                        help="also save checkpoints/step-K every K UNet steps")
    parser.add_argument("--vae-from", type=Path, default=None,
                        help="reuse the autoencoder of an earlier run (same seed and dataset)")
    parser.add_argument("--refine-from", type=Path, default=None,
                        help="skip stage 4a: refine the UNet and text encoder of an earlier run's stage 4a")
    parser.add_argument("--refine-steps", type=int, default=None)
    parser.add_argument("--polish-from", type=Path, default=None,
                        help="skip stages 4a and 4b: polish the UNet and text encoder of an earlier run's stage 4b")
    parser.add_argument("--polish-steps", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    out = train_shapes(args.out, seed=args.seed, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
                       dataset_size=args.dataset_size, snapshot_every=args.snapshot_every,
                       vae_from=args.vae_from, refine_from=args.refine_from, refine_steps=args.refine_steps,
                       polish_from=args.polish_from, polish_steps=args.polish_steps, progress=not args.quiet)
    print(json.loads((out / "TRAINING.json").read_text()))


if __name__ == "__main__":
    main()
