"""The `train` kind's handler: a LoRA from a job's pictures, registered by the kind's success effect.

The job's outputs are the LoRA file (kohya layout, see `kohya.py`) and a `loss` document (the loss
of every step, which `loss_curve.draw_loss_curve` draws). The success effect registers the file as a
model of the job's tenant, with the base model's family and the spec's trigger word. A full
fine-tune (`TrainMethod.FULL`) runs the same loop on every UNet weight and hands the job a diffusers
folder, which the job keeps as one self-describing checkpoint file.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from diffusiond.domain.models import ModelKind
from diffusiond.domain.training import TrainMethod, TrainSpec, check_train_spec
from diffusiond.engine.context import ModelResolver, WorkContext
from diffusiond.engine.training.dataset import build_examples
from diffusiond.engine.training.kohya import save_lora


class TrainHandler:
    """Trains the spec's LoRA; the worker and `diffusiond train lora` both run jobs through it."""

    def __init__(self, resolver: ModelResolver, cache_dir: Path, work_dir: Path, device: str | None = None,
                 checkpoint_every: int | None = None) -> None:
        self.resolver = resolver
        self.cache_dir = cache_dir  # model configs the loader builds
        self.work_dir = work_dir  # the file being written, until the job takes it
        self.device = device
        self.checkpoint_every = checkpoint_every  # the operator's interval, over each training's own

    def run(self, spec: TrainSpec, ctx: WorkContext) -> None:
        from diffusiond.engine.loader import load_checkpoint
        from diffusiond.engine.training.lora import TrainOptions, TrainRun, size_multiple, train_lora

        # 1. Check inputs
        check_train_spec(spec)
        record = self.resolver.resolve(spec.base_model, ModelKind.CHECKPOINT)
        # 2. The base model, and the pictures captioned with the trigger word at sizes it takes
        pictures = [(ctx.load_image(item.image), item.caption) for item in spec.images]
        loaded = load_checkpoint(record, self.cache_dir)
        examples = build_examples(pictures, spec.trigger_word, spec.settings.resolution,
                                  buckets=spec.settings.aspect_buckets, multiple=size_multiple(loaded.pipe))
        # 3. Train
        settings = spec.settings
        if self.checkpoint_every is not None:
            settings = replace(settings, checkpoint_every=self.checkpoint_every)
        run = TrainRun(examples, settings, spec.seed, spec.trigger_word, record.id,
                       full=spec.method is TrainMethod.FULL)
        result = train_lora(loaded, run, ctx, TrainOptions(device=self.device))
        # 4. Hand the model and the loss history to the job
        self.work_dir.mkdir(parents=True, exist_ok=True)
        name = spec.output_name or spec.output_model or spec.method.value
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix="train-") as tmp:
            ctx.save_document("loss", {"steps": list(range(1, len(result.losses) + 1)), "loss": result.losses})
            if run.full:
                folder = Path(tmp) / "model"
                result.pipe.save_pretrained(str(folder), safe_serialization=True)
                ctx.save_model_file(folder, name=f"{name}.safetensors", format="diffusers")
            else:
                out = save_lora(Path(tmp) / "lora.safetensors", result.tensors, result.metadata)
                ctx.save_model_file(out, name=f"{name}.safetensors", format="safetensors")
