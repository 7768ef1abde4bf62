"""Train a LoRA on a loaded base model (`shapes`, SD 1.x, SD 2.x, SDXL) with diffusers + peft.

The same loop fine-tunes every UNet weight instead (`TrainRun.full`), for the full fine-tunes some
dialects ask for; everything below holds for it, with the UNet's weights in place of the adapters.

The recipe is diffusers' `train_text_to_image_lora.py` (and its SDXL sibling), reorganised for
speed and exact resumption:

1. the base is frozen; peft adapters go on the UNet's attention projections (to_q/to_k/to_v/to_out.0)
   and, optionally, on the text encoders' (q/k/v/out_proj), initialised under a seeded RNG;
2. every picture goes through the VAE once, up front (its latent distribution is kept; each step
   samples it), and every caption through the text encoders once when they are not trained: a step
   is then only the UNet's forward and backward pass;
3. the noise schedule and the target follow the model's scheduler config (epsilon, v-prediction,
   zero-terminal-SNR betas); the loss is the MSE to the target, plus prior preservation: each step
   also trains half a batch of noisy latents whose target is the frozen model's own prediction for
   the caption without the trigger word (computed once, up front; see `PriorBank`), weighted 4. On
   `shapes` it kept the base colour pass rate of non-trigger prompts (95.6% -> 95.6%, against 71%
   without it) at the same strength of the learned concept;
4. AdamW, a constant rate after a linear warm-up, gradients clipped to norm 1; fp32 on the CPU,
   fp16/bf16 autocast on CUDA (the adapters stay fp32), optional gradient checkpointing;
5. every random draw of a step (batch, latent sample, noise, timesteps) comes from a generator
   seeded by (seed, step), so the same seed and data give the same LoRA, and a run resumed from a
   checkpoint (adapters + optimizer state + step + losses; no RNG state is needed) ends with exactly
   the weights of an uninterrupted one;
6. progress, loss and ETA are reported every step, cancel is checked between steps, and a
   checkpoint is saved every `checkpoint_every` steps through the job's context.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusiond.domain.errors import InvalidParams
from diffusiond.domain.training import MixedPrecision, TrainSettings
from diffusiond.engine.context import Canceled, WorkContext
from diffusiond.engine.training.dataset import BatchPlan, TrainingExample, fingerprint

if TYPE_CHECKING:
    import torch

    from diffusiond.engine.loader import LoadedModel

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
MAX_GRAD_NORM = 1.0
LOSS_WINDOW = 10  # steps averaged into the reported loss
PRIOR_SAMPLES = 64  # prior-preservation samples computed up front (see `PriorBank`)
STATE_FILE, ADAPTER_FILE, OPTIMIZER_FILE = "state.json", "adapter.safetensors", "optimizer.safetensors"


@dataclass(frozen=True)
class TrainRun:
    """What to learn: the examples, the settings, the seed, and what the result says about itself."""

    examples: Sequence[TrainingExample]
    settings: TrainSettings
    seed: int
    trigger: str
    base_model: str  # the base model's id, written into the LoRA's metadata
    flip: bool = False  # random horizontal flips (off: many concepts are not mirror-symmetric)
    preserve: float = 4.0  # weight of the prior-preservation loss (see `PriorBank`); 0 turns it off
    full: bool = False  # train every UNet weight (a full fine-tune) instead of adding adapters


@dataclass(frozen=True)
class TrainOptions:
    """How to run it: on which device, how often to report (torch's CPU threads are the caller's choice)."""

    device: str | None = None  # None: CUDA when there is one, else the CPU
    report_every: int = 1


@dataclass
class TrainResult:
    """The kohya-layout tensors and metadata (none for a full fine-tune), the per-step losses, and the
    pipeline as trained (with the adapters on)."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    losses: list[float]
    pipe: Any
    seconds: float
    resumed_at: int = 0  # the step a checkpoint resumed from (0: a fresh start)


@dataclass
class Batch:
    """One step's noisy latents, timesteps and targets, and which examples and captions they come from."""

    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    indices: list[int]
    captions: list[str]

    def join(self, other: Batch) -> Batch:
        return Batch.concat([self, other])

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        import torch

        return Batch(torch.cat([b.noisy for b in batches]), torch.cat([b.timesteps for b in batches]),
                     torch.cat([b.target for b in batches]), [i for b in batches for i in b.indices],
                     [c for b in batches for c in b.captions])


@dataclass
class PriorBank:
    """Noisy latents of the pictures with the frozen model's predictions for their captions *without*
    the trigger word, computed once. Training on them too keeps what the adapters do tied to the
    trigger word: without it, a LoRA trained on trigger-only captions changes every prompt (through
    the start and padding tokens every prompt shares), and the base model's colours suffered."""

    entries: list[Batch]  # one sample each
    buckets: list[tuple[int, int]]  # the picture size of each entry

    def draw(self, count: int, bucket: tuple[int, int], generator: torch.Generator) -> Batch:
        import torch

        candidates = [e for e, b in zip(self.entries, self.buckets, strict=True) if b == bucket]
        picks: list[int] = torch.randint(0, len(candidates), (count,), generator=generator).tolist()
        return Batch.concat([candidates[i] for i in picks])


@dataclass
class _Encoded:
    """Each example's latent distribution (scaled) and, with frozen text encoders, its conditioning."""

    means: list[torch.Tensor]
    stds: list[torch.Tensor]
    flipped: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    text: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)


def train_lora(loaded: LoadedModel, run: TrainRun, ctx: WorkContext,
               options: TrainOptions | None = None) -> TrainResult:
    """Train `run` on `loaded` (whose pipeline it changes: adapters are added), reporting through `ctx`."""
    import torch

    from diffusiond.engine.runner import pick_device

    options = options or TrainOptions()
    settings = run.settings
    pipe = loaded.pipe
    # 1. Check inputs
    check_run(loaded, run)
    # 2. Device and precision; the frozen base on the device
    device = pick_device(options.device)
    autocast = autocast_dtype(settings.mixed_precision, device)
    weight_dtype = autocast or torch.float32
    encoders = text_encoders(pipe)
    for module in (pipe.unet, pipe.vae, *encoders):
        module.requires_grad_(False)
    for module in (pipe.unet, *encoders):
        move(module, device, weight_dtype)
    # 3. Encode every picture once, and every caption once unless the text encoders learn
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # type: ignore[no-untyped-call]
    encoded = encode_examples(pipe, run, device)
    move(pipe.vae, torch.device("cpu"), torch.float32)
    captions = {e.caption for e in run.examples} | {e.plain_caption for e in run.examples}
    if not settings.train_text_encoder:
        encoded.text = encode_captions(pipe, captions, device, loaded.is_sdxl)
    # 4. The frozen model's own predictions for the captions without the trigger word (prior preservation)
    prior = prior_bank(pipe, run, encoded, noise_scheduler, device, autocast, loaded.is_sdxl)
    # 5. Adapters (peft's initialisation under the seed), optimizer, resume from the job's checkpoint
    if run.full:
        pipe.unet.requires_grad_(True)
        adapter_modules = [pipe.unet]
    else:
        adapter_modules = add_adapters(pipe.unet, encoders if settings.train_text_encoder else [], settings, run.seed)
    trainable = trainable_parameters(adapter_modules)
    for _, param in trainable:
        param.data = param.data.float()
    if settings.gradient_checkpointing:
        enable_gradient_checkpointing(pipe.unet, encoders if settings.train_text_encoder else [])
    optimizer = make_optimizer(trainable, settings)
    scaler = torch.amp.GradScaler("cuda") if autocast is torch.float16 else None
    plan = BatchPlan.of(run.examples, settings.batch_size, run.seed)
    key = run_key(run, loaded.family)
    losses: list[float] = []
    start = resume(ctx, key, trainable, optimizer, scaler, losses)
    # 6. The training loop
    for module in adapter_modules:
        module.train()
    prediction = noise_scheduler.config.prediction_type
    started = time.perf_counter()
    for step in range(start, settings.steps):
        if ctx.is_canceled():
            raise Canceled()
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * min(1.0, (step + 1) / max(1, settings.warmup_steps))
        generator = step_generator(run.seed, step)
        indices = plan.batch(step)
        latents = sample_latents(run, encoded, indices, generator, device)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        steps_total = noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps_total, (len(indices),), generator=generator).to(device)
        batch = Batch(noise_scheduler.add_noise(latents, noise, timesteps), timesteps,
                      prediction_target(noise_scheduler, prediction, latents, noise, timesteps),
                      indices, [run.examples[i].caption for i in indices])
        if prior is not None:
            batch = batch.join(prior.draw(prior_per_step(len(indices)), run.examples[indices[0]].bucket, generator))
        hidden, added = conditioning(pipe, run, encoded, batch, device, loaded.is_sdxl)
        with autocast_context(device, autocast):
            pred = pipe.unet(batch.noisy.to(weight_dtype), batch.timesteps, hidden.to(weight_dtype),
                             added_cond_kwargs=added).sample
        errors = (pred.float() - batch.target.float()).pow(2).mean(dim=(1, 2, 3))
        data_loss = errors[: len(indices)].mean()
        loss = data_loss + run.preserve * errors[len(indices):].mean() if prior is not None else data_loss
        optimizer_step(loss, optimizer, scaler, [p for _, p in trainable])
        losses.append(float(data_loss.detach()))
        done = step + 1
        if done % options.report_every == 0 or done == settings.steps:
            report(ctx, done, settings.steps, losses, (time.perf_counter() - started) / (done - start))
        if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < settings.steps:
            save_state(ctx, key, done, trainable, optimizer, scaler, losses)
    # 7. The result: adapters in kohya's layout, with their metadata
    from diffusiond.engine.training.kohya import kohya_state_dict, lora_metadata

    for module in adapter_modules:
        module.eval()
    tensors = {} if run.full else kohya_state_dict(pipe.unet, encoders, settings.alpha, sdxl=loaded.is_sdxl)
    metadata = lora_metadata(family=loaded.family, base_model=run.base_model, trigger=run.trigger,
                             rank=settings.rank, alpha=settings.alpha, steps=settings.steps,
                             learning_rate=settings.learning_rate, resolution=settings.resolution, seed=run.seed,
                             images=len(run.examples), text_encoder=settings.train_text_encoder,
                             captions=[e.caption for e in run.examples])
    return TrainResult(tensors, metadata, losses, pipe, time.perf_counter() - started, resumed_at=start)


# -- 1. inputs -------------------------------------------------------------------------------------


def size_multiple(pipe: Any) -> int:
    """Picture sides must be a multiple of this: the VAE's factor times the UNet's downsampling."""
    vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    return int(vae_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1))


def check_run(loaded: LoadedModel, run: TrainRun) -> None:
    if loaded.is_inpaint_unet:
        raise InvalidParams("LoRA training on an inpainting checkpoint is not supported; use its base model",
                            code="invalid_params", field="base_model")
    multiple = size_multiple(loaded.pipe)
    for example in run.examples:
        if example.image.width % multiple or example.image.height % multiple:
            raise InvalidParams(f"training pictures of this model must have sides that are multiples of {multiple}; "
                                f"got {example.image.width}x{example.image.height}", field="resolution")
    if not run.examples:
        raise InvalidParams("a training needs pictures", code="invalid_training_data", field="images")


# -- 2. device and precision -----------------------------------------------------------------------


def autocast_dtype(precision: MixedPrecision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype on CUDA (None: fp32); always fp32 on the CPU, where half precision is slow."""
    import torch

    if device.type != "cuda" or precision is MixedPrecision.NO:
        return None
    if precision is MixedPrecision.FP16:
        return torch.float16
    if precision is MixedPrecision.BF16 or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> Any:
    import torch

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def text_encoders(pipe: Any) -> list[Any]:
    return [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]


# -- 3. adapters -----------------------------------------------------------------------------------


def add_adapters(unet: Any, encoders: Sequence[Any], settings: TrainSettings, seed: int) -> list[Any]:
    """LoRA on the UNet (and on `encoders`), initialised by peft under the seed; the modules changed."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    def config(targets: list[str]) -> Any:
        # peft annotates lora_alpha as int, but scales by alpha / r with any number (kohya alphas are floats)
        return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0,  # type: ignore[arg-type]
                          init_lora_weights=True, target_modules=targets)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(config(UNET_TARGETS))
        for encoder in encoders:
            inject_adapter_in_model(config(TEXT_TARGETS), encoder)
    return [unet, *encoders]


def trainable_parameters(modules: Sequence[Any]) -> list[tuple[str, torch.nn.Parameter]]:
    """(unique name, parameter) of every trainable weight, in a fixed order."""
    return [(f"{i}.{name}", param) for i, module in enumerate(modules)
            for name, param in module.named_parameters() if param.requires_grad]


def enable_gradient_checkpointing(unet: Any, encoders: Sequence[Any]) -> None:
    unet.enable_gradient_checkpointing()
    for encoder in encoders:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


# -- 4. encoding once ------------------------------------------------------------------------------


def encode_examples(pipe: Any, run: TrainRun, device: torch.device) -> _Encoded:
    """Each example's (and with flips its mirror's) latent mean and std, times the VAE's scaling."""
    import numpy as np
    import torch

    vae = pipe.vae
    move(vae, device, torch.float32)  # fp32 always: SDXL's VAE overflows in fp16
    scale = float(vae.config.scaling_factor)
    encoded = _Encoded(means=[], stds=[])

    def encode(images: list[Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pixels = torch.stack([torch.from_numpy(np.asarray(i, dtype=np.float32)).permute(2, 0, 1) for i in images])
        with torch.no_grad():
            dist = vae.encode((pixels / 127.5 - 1.0).to(device)).latent_dist
        return [(m[None] * scale, s[None] * scale) for m, s in zip(dist.mean, dist.std, strict=True)]

    for example in run.examples:  # one at a time: buckets differ in size, and memory stays flat
        (mean, std), = encode([example.image])
        encoded.means.append(mean)
        encoded.stds.append(std)
        if run.flip:
            from PIL import Image

            encoded.flipped.append(encode([example.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])[0])
    return encoded


def encode_captions(pipe: Any, captions: set[str] | Sequence[str], device: torch.device, sdxl: bool,
                    ) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Each caption's conditioning exactly as generation encodes a prompt (engine/text_encoding.py)."""
    import torch

    from diffusiond.engine.text_encoding import encode_text

    out = {}
    grad = any(p.requires_grad for e in text_encoders(pipe) for p in e.parameters())
    with nullcontext() if grad else torch.no_grad():
        for caption in sorted(set(captions)):
            out[caption] = encode_text(pipe, caption, 1, device, None, is_sdxl=sdxl)
    return out


def prior_bank(pipe: Any, run: TrainRun, encoded: _Encoded, scheduler: Any, device: torch.device,
               autocast: torch.dtype | None, sdxl: bool) -> PriorBank | None:
    """Up to `PRIOR_SAMPLES` (at least one per picture) draws of noisy latents with the frozen model's
    prediction for the picture's caption without the trigger word; None when preservation is off."""
    import torch

    if not run.preserve:
        return None
    generator = step_generator(run.seed, -1)
    drawn = run.settings.steps * prior_per_step(run.settings.batch_size)  # never more than the run can use
    count = max(min(PRIOR_SAMPLES, drawn), len(run.examples))
    indices = [i % len(run.examples) for i in range(count)]
    latents = [sample_latents(run, encoded, [i], generator, device) for i in indices]
    entries: list[Batch] = []
    steps_total = scheduler.config.num_train_timesteps
    for i, x0 in zip(indices, latents, strict=True):
        noise = torch.randn(x0.shape, generator=generator).to(device)
        t = torch.randint(0, steps_total, (1,), generator=generator).to(device)
        entries.append(Batch(scheduler.add_noise(x0, noise, t), t, x0, [i], [run.examples[i].plain_caption]))
    texts = encoded.text or encode_captions(pipe, {e.plain_caption for e in run.examples}, device, sdxl)
    size = max(1, run.settings.batch_size)
    by_bucket: dict[tuple[int, int], list[Batch]] = {}
    for entry in entries:
        by_bucket.setdefault(run.examples[entry.indices[0]].bucket, []).append(entry)
    with torch.no_grad():
        for group in by_bucket.values():
            for start in range(0, len(group), size):
                chunk = group[start:start + size]
                batch = Batch.concat(chunk)
                hidden, added = conditioning(pipe, run, _Encoded([], [], text=texts), batch, device, sdxl)
                dtype = autocast or torch.float32
                with autocast_context(device, autocast):
                    pred = pipe.unet(batch.noisy.to(dtype), batch.timesteps, hidden.to(dtype),
                                     added_cond_kwargs=added).sample.float()
                for entry, target in zip(chunk, pred, strict=True):
                    entry.target = target[None]
    return PriorBank(entries, [run.examples[e.indices[0]].bucket for e in entries])


def prior_per_step(batch_size: int) -> int:
    return max(1, batch_size // 2)


def move(module: Any, device: torch.device, dtype: torch.dtype) -> None:
    """Move a module, converting it only when its dtype differs (diffusers warns on needless casts)."""
    module.to(device)
    if module.dtype != dtype:
        module.to(dtype=dtype)


# -- 5. schedule, optimizer, checkpoints -----------------------------------------------------------


def make_optimizer(trainable: list[tuple[str, torch.nn.Parameter]], settings: TrainSettings) -> torch.optim.AdamW:
    import torch

    unet = [p for name, p in trainable if name.startswith("0.")]
    text = [p for name, p in trainable if not name.startswith("0.")]
    groups: list[dict[str, Any]] = [{"params": unet, "lr": settings.learning_rate}]
    if text:
        groups.append({"params": text, "lr": settings.text_encoder_lr or settings.learning_rate})
    for group in groups:
        group["initial_lr"] = group["lr"]
    # fused: one kernel for all the adapters' small tensors (8x faster than the per-tensor loop on a CPU)
    return torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8, fused=True)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one step's random draws: a function of (seed, step) only."""
    import torch

    digest = hashlib.sha256(f"diffusiond-lora:{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def run_key(run: TrainRun, family: str) -> str:
    """What a checkpoint must match to be resumed: the data, the settings (but how often checkpoints are
    saved), the seed, the base."""
    settings = replace(run.settings, checkpoint_every=0)
    parts = [fingerprint(run.examples), repr(settings), str(run.seed), run.base_model, family, str(run.flip),
             str(run.full), str(run.preserve)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def save_state(ctx: WorkContext, key: str, step: int, trainable: list[tuple[str, torch.nn.Parameter]],
               optimizer: torch.optim.Optimizer, scaler: Any, losses: list[float]) -> None:
    """Adapters, optimizer moments, step and losses as plain files (safetensors and JSON, no pickle)."""
    from safetensors.torch import save_file

    state = optimizer.state_dict()["state"]
    moments = {f"{i}.{name}": value.detach().cpu().contiguous() for i, slot in state.items()
               for name, value in slot.items()}
    with tempfile.TemporaryDirectory(prefix="diffusiond-lora-ckpt-") as tmp:
        folder = Path(tmp)
        save_file({name: p.detach().cpu().contiguous() for name, p in trainable}, str(folder / ADAPTER_FILE))
        save_file(moments, str(folder / OPTIMIZER_FILE))
        record = {"key": key, "step": step, "losses": losses,
                  "scaler": scaler.state_dict() if scaler is not None else None}
        (folder / STATE_FILE).write_text(json.dumps(record))
        ctx.save_checkpoint(folder)


def resume(ctx: WorkContext, key: str, trainable: list[tuple[str, torch.nn.Parameter]],
           optimizer: torch.optim.Optimizer, scaler: Any, losses: list[float]) -> int:
    """Load the job's last checkpoint when it is of this very run; the step to go on from (0: none)."""
    import torch
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory(prefix="diffusiond-lora-resume-") as tmp:
        folder = Path(tmp)
        if not ctx.load_checkpoint(folder) or not (folder / STATE_FILE).is_file():
            return 0
        record = json.loads((folder / STATE_FILE).read_text())
        if record.get("key") != key:  # another run's state (changed settings or data): start afresh
            return 0
        weights = load_file(str(folder / ADAPTER_FILE))
        with torch.no_grad():
            for name, param in trainable:
                param.copy_(weights[name])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in load_file(str(folder / OPTIMIZER_FILE)).items():
            index, slot = name.split(".", 1)
            state.setdefault(int(index), {})[slot] = value.to(trainable[int(index)][1].device)
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
        if scaler is not None and record.get("scaler"):
            scaler.load_state_dict(record["scaler"])
        losses[:] = [float(v) for v in record["losses"]]
        return int(record["step"])


# -- 6. one step -----------------------------------------------------------------------------------


def sample_latents(run: TrainRun, encoded: _Encoded, indices: list[int], generator: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """A draw from each example's cached latent distribution (or its mirror's, with flips)."""
    import torch

    flips = (torch.rand(len(indices), generator=generator) < 0.5).tolist() if run.flip else [False] * len(indices)
    pairs = [encoded.flipped[i] if flip else (encoded.means[i], encoded.stds[i])
             for i, flip in zip(indices, flips, strict=True)]
    means = torch.cat([m for m, _ in pairs])
    stds = torch.cat([s for _, s in pairs])
    return means + stds * torch.randn(means.shape, generator=generator).to(device)


def conditioning(pipe: Any, run: TrainRun, encoded: _Encoded, batch: Batch, device: torch.device,
                 sdxl: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """The batch's text conditioning (cached, or encoded now when the text encoders learn); SDXL's
    pooled embeddings and size/crop time ids."""
    import torch

    texts = encoded.text or encode_captions(pipe, batch.captions, device, sdxl)
    hidden = torch.cat([texts[c][0] for c in batch.captions])
    if not sdxl:
        return hidden, None
    pooled = torch.cat([texts[c][1] for c in batch.captions])  # type: ignore[misc]
    examples = [run.examples[i] for i in batch.indices]
    time_ids = torch.tensor([[*e.original_size, *e.crop_top_left, e.image.height, e.image.width] for e in examples],
                            dtype=hidden.dtype, device=device)
    return hidden, {"text_embeds": pooled, "time_ids": time_ids}


def prediction_target(scheduler: Any, prediction: str, latents: torch.Tensor, noise: torch.Tensor,
                      timesteps: torch.Tensor) -> torch.Tensor:
    if prediction == "epsilon":
        return noise
    if prediction == "v_prediction":
        target: torch.Tensor = scheduler.get_velocity(latents, noise, timesteps)
        return target
    if prediction == "sample":
        return latents
    raise InvalidParams(f"the base model's scheduler predicts {prediction!r}, which training does not support")


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: Any,
                   params: list[torch.nn.Parameter]) -> None:
    import torch

    if scaler is None:
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM, foreach=True)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM, foreach=True)
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)


def report(ctx: WorkContext, done: int, total: int, losses: list[float], seconds_per_step: float) -> None:
    recent = losses[-LOSS_WINDOW:]
    ctx.report_progress(0, done / total)
    ctx.report_metrics({"step": done, "steps": total, "loss": round(sum(recent) / len(recent), 6),
                        "eta_seconds": round(seconds_per_step * (total - done), 1)})
