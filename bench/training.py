"""Benchmark: LoRA training. diffusiond's trainer at the `fast` and `high_quality` presets against a
plain diffusers + peft loop, on the same pictures, steps, batch, rank and rate, in the same process.

The baseline is written the way a user would from diffusers' `train_text_to_image_lora.py` example:
every step encodes its pictures through the VAE and its captions through the text encoder, then the
UNet's forward and backward pass, AdamW, gradients clipped to 1. diffusiond encodes each picture
and caption once, and each of its steps also trains half a batch of prior-preservation samples (see
`engine/training/lora.py`), which the baseline does not: it does more work per step, not less.

    python -m bench.run_all --only training [--quick] [--torch-threads N]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.report import Section, Table, command_line, fmt, load_average, ratio
from bench.server import BenchModel
from diffusiond.domain.limits import limits_for
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import ImageFormat, ImageRef
from diffusiond.domain.training import TrainingSpeed, TrainSettings, preset

COLUMNS = ("preset", "steps x batch", "rank", "text encoder", "diffusiond steps/s", "plain steps/s",
           "ratio (diffusiond / plain)", "diffusiond wall s", "plain wall s")
TRIGGER = "hgsz"
FAST_TARGET_SECONDS = 180.0  # issue 13: the `fast` preset done in at most 3 minutes on a 2-core CPU


@dataclass(frozen=True)
class TrainBenchConfig:
    strength: int = 5
    speeds: tuple[TrainingSpeed, ...] = (TrainingSpeed.FAST, TrainingSpeed.HIGH_QUALITY)
    pictures: int = 12
    steps: int | None = None  # None: the preset's
    resolution: int | None = None  # None: the model family's native size
    seed: int = 1


QUICK = TrainBenchConfig(steps=20)


class _QuietContext:
    """A WorkContext that keeps nothing: the benchmark times the training, not the job around it."""

    def load_image(self, ref: ImageRef) -> Any:
        raise NotImplementedError

    def report_progress(self, image_index: int, fraction: float) -> None:
        pass

    def report_metrics(self, metrics: Any) -> None:
        pass

    def report_preview(self, image: Any) -> None:
        pass

    def is_canceled(self) -> bool:
        return False

    def save_image(self, image: Any, seed: int, finish_reason: str = "SUCCESS",
                   format: ImageFormat = ImageFormat.PNG, *, parameters: str | None = None) -> None:
        pass

    def save_model_file(self, path: Path, *, name: str, format: str) -> None:
        pass

    def save_document(self, name: str, data: Any) -> None:
        pass

    def save_checkpoint(self, folder: Path) -> None:
        pass

    def load_checkpoint(self, dest: Path) -> bool:
        return False


@dataclass
class Timing:
    wall: float  # load + train + write the file
    loop: float  # the training steps alone

    def steps_per_second(self, steps: int) -> float:
        return steps / self.loop


def ours(model: BenchModel, work: Path, pictures: list[Any], settings: TrainSettings, seed: int) -> Timing:
    """diffusiond's trainer, as a training job runs it (load, train, write the kohya file)."""
    from diffusiond.engine.loader import load_checkpoint
    from diffusiond.engine.training.dataset import build_examples
    from diffusiond.engine.training.kohya import save_lora
    from diffusiond.engine.training.lora import TrainRun, size_multiple, train_lora

    started = time.perf_counter()
    record = ModelRecord("bench", ModelKind.CHECKPOINT, ModelFormat.DIFFUSERS, str(model.path), family=model.family)
    loaded = load_checkpoint(record, work / "cache")
    examples = build_examples([(p, "") for p in pictures], TRIGGER, settings.resolution,
                              multiple=size_multiple(loaded.pipe))
    result = train_lora(loaded, TrainRun(examples, settings, seed, TRIGGER, record.id), _QuietContext())
    save_lora(work / "ours.safetensors", result.tensors, result.metadata)
    return Timing(time.perf_counter() - started, result.seconds)


def plain(model: BenchModel, work: Path, pictures: list[Any], settings: TrainSettings, seed: int) -> Timing:
    """A plain diffusers + peft LoRA loop, as in diffusers' example script."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    started = time.perf_counter()
    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline.from_pretrained(str(model.path), local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    vae, unet, text_encoder, tokenizer = pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    for module in (vae, unet, text_encoder):
        module.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=settings.rank, lora_alpha=settings.rank, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    if settings.train_text_encoder:
        inject_adapter_in_model(LoraConfig(r=settings.rank, lora_alpha=settings.rank, init_lora_weights="gaussian",
                                           target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]), text_encoder)
    params = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    size = settings.resolution
    images = torch.stack([torch.from_numpy(np.asarray(p.convert("RGB").resize((size, size)), dtype=np.float32))
                          .permute(2, 0, 1) / 127.5 - 1.0 for p in pictures])
    captions = [TRIGGER] * len(pictures)
    unet.train()
    loop_started = time.perf_counter()
    for _ in range(settings.steps):
        idx = torch.randint(0, len(pictures), (settings.batch_size,))
        latents = vae.encode(images[idx]).latent_dist.sample() * vae.config.scaling_factor
        ids = tokenizer([captions[i] for i in idx], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        hidden = text_encoder(ids, return_dict=False)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        pred = unet(noisy, timesteps, hidden, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
    loop = time.perf_counter() - loop_started
    layers = get_peft_model_state_dict(unet)
    StableDiffusionPipeline.save_lora_weights(str(work), unet_lora_layers=layers, weight_name="plain.safetensors")
    return Timing(time.perf_counter() - started, loop)


def run(model: BenchModel, work: Path, *, config: TrainBenchConfig = TrainBenchConfig(), label: str = "",
        threads: int | None = None) -> Section:
    import torch

    from diffusiond.testing.concepts import pictures

    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # both sides: denormals make CPU math crawl
    load_before = load_average()
    resolution = config.resolution or limits_for(model.family).native
    shown = pictures("huge", config.pictures, size=resolution)
    table = Table(COLUMNS)
    targets: list[str] = []
    for speed in config.speeds:
        settings = preset(config.strength, speed, resolution)
        if config.steps:
            settings = replace(settings, steps=config.steps)
        print(f"training: {speed.value}, {settings.steps} steps x batch {settings.batch_size}", flush=True)
        a = ours(model, work, shown, settings, config.seed)
        b = plain(model, work, shown, settings, config.seed)
        a_rate, b_rate = a.steps_per_second(settings.steps), b.steps_per_second(settings.steps)
        table.add(f"`{speed.value}` (strength {config.strength})", f"{settings.steps} x {settings.batch_size}",
                  settings.rank, "yes" if settings.train_text_encoder else "no", fmt(a_rate), fmt(b_rate),
                  ratio(a_rate, b_rate), fmt(a.wall, 1), fmt(b.wall, 1))
        met = "met" if a_rate >= b_rate else "not met"
        targets.append(f"target at least 1.0x the plain loop's steps/s, `{speed.value}`: "
                       f"{ratio(a_rate, b_rate)}, {met}")
        if speed is TrainingSpeed.FAST:
            met = "met" if a.wall <= FAST_TARGET_SECONDS else "not met"
            targets.append(f"target `fast` done in at most {FAST_TARGET_SECONDS:.0f} s: {a.wall:.1f} s, {met}")
    print(table.markdown(), flush=True)
    section = Section(title="LoRA training", command=command_line(), model=model.label, label=label)
    section.facts += [
        ("data", f"{config.pictures} pictures of `huge` shapes (diffusiond.testing.concepts) at "
                 f"{resolution}x{resolution}, captioned with the trigger word only"),
        ("threads", f"torch threads {torch.get_num_threads()} on both sides, in one process, diffusiond first"),
        ("load average", f"{load_before} before, {load_average()} after"),
        ("steps/s", "training steps only; wall s adds loading the model, encoding (diffusiond) and writing the file"),
    ]
    section.tables.append(("", table))
    section.notes.append("Each diffusiond step also trains batch/2 prior-preservation samples (the baseline does "
                         "not), and the baseline's rate is the same number of steps of the same batch.")
    section.notes += targets
    return section
