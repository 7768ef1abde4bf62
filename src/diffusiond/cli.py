"""The `diffusiond` command: serve, keys, models, generate, train, train-base."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from PIL import Image

    from diffusiond.blobs.images import UploadRules
    from diffusiond.services import Services

from diffusiond.config import Settings
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import ImageFormat, ImageRef
from diffusiond.domain.pricing import from_credits
from diffusiond.domain.training import TrainingSpeed

app = typer.Typer(help="diffusiond: a self-hosted Stable Diffusion platform.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
models_app = typer.Typer(help="Manage models: checkpoints, LoRAs, embeddings, upscalers.", no_args_is_help=True)
train_app = typer.Typer(help="Train the bundled base models.", no_args_is_help=True)
train_lora_app = typer.Typer(help="Train models on your own pictures.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(train_lora_app, name="train")
app.add_typer(train_app, name="train-base")
callbacks_app = typer.Typer(help="Manage tenants' completion callback URLs (EKS callbacks).", no_args_is_help=True)
app.add_typer(callbacks_app, name="callbacks")


def _services() -> Services:
    """Services for a one-off command: migrated database, no workers."""
    from diffusiond.services import build_services

    settings = Settings()
    services = build_services(settings, with_workers=False)
    services.db.migrate()
    services.models.register_builtins(bundled=settings.bundled_models)
    return services


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Listen address (DIFFUSIOND_HOST).")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Listen port (DIFFUSIOND_PORT).")] = None,  # noqa: UP045
) -> None:
    """Start the API server with its in-process worker."""
    import uvicorn

    from diffusiond.app import create_app

    settings = Settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=5)


@app.command()
def worker() -> None:
    """Run workers only (no API): for scale-out with a shared PostgreSQL database and blob store."""
    import signal
    import threading

    from diffusiond.services import build_services

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = build_services(settings, with_workers=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    services.start()
    typer.echo(f"worker running {settings.workers} worker(s) on {settings.resolved_database_url.split('@')[-1]}")
    stop.wait()
    services.stop()


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name for the key (and its new tenant).")],
    admin: Annotated[bool, typer.Option(help="Give the key the admin role.")] = False,
    credits: Annotated[Optional[float], typer.Option(help="Starting credits of the new tenant.")] = None,  # noqa: UP045
    tenant: Annotated[Optional[str], typer.Option(help="Add the key to this existing tenant.")] = None,  # noqa: UP045
    rate: Annotated[Optional[float], typer.Option(  # noqa: UP045
        help="Requests per second this key's token bucket refills (default DIFFUSIOND_RATE_LIMIT_PER_SECOND).")] = None,
    burst: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Requests this key may send at once, the bucket's size (default DIFFUSIOND_RATE_LIMIT_BURST).")] = None,
) -> None:
    """Create an API key and print it once."""
    services = _services()
    amount = services.settings.default_credits if credits is None else credits
    created = services.keys.create(name, admin=admin, credits_milli=from_credits(amount), tenant_id=tenant,
                                   rate=rate, burst=burst)
    typer.echo(f"tenant: {created.tenant_id}", err=True)
    typer.echo(f"key id: {created.key_id} (the key below is shown only once)", err=True)
    typer.echo(created.key)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id."""
    _services().keys.revoke(key_id)
    typer.echo(f"revoked {key_id}")


@callbacks_app.command("add")
def callbacks_add(
    tenant: str, url: str,
    sns: Annotated[bool, typer.Option(help="Wrap each body in an SNS Notification envelope.")] = False,
) -> None:
    """Send TENANT's EKS task completions to URL."""
    cb = _services().callbacks.add(tenant, url, format="sns" if sns else "standard")
    typer.echo(f"{cb.id} {cb.url} ({cb.format})")


@callbacks_app.command("list")
def callbacks_list(tenant: str) -> None:
    """List TENANT's callback URLs."""
    for cb in _services().callbacks.list(tenant):
        typer.echo(f"{cb.id}  {cb.dialect:<6} {cb.format:<8} {cb.url}")


@callbacks_app.command("remove")
def callbacks_remove(tenant: str, callback_id: str) -> None:
    """Remove one of TENANT's callbacks."""
    _services().callbacks.remove(tenant, callback_id)
    typer.echo(f"removed {callback_id}")


@models_app.command("add")
def models_add(
    path: Path,
    id: Annotated[str, typer.Option("--id", help="The model id clients use.")],
    kind: Annotated[ModelKind, typer.Option(help="What the file is.")] = ModelKind.CHECKPOINT,
    family: Annotated[Optional[str], typer.Option(help="sd15 | sd2 | sdxl | ...; detected when omitted.")] = None,  # noqa: UP045
    trigger: Annotated[Optional[list[str]], typer.Option(help="Trigger word (repeatable).")] = None,  # noqa: UP045
    replace: Annotated[bool, typer.Option(help="Replace a model with the same id.")] = False,
) -> None:
    """Register a diffusers folder, a .safetensors file, or an upscaler's .pth."""
    record = _services().models.add(path, id, kind, family=family, trigger_words=tuple(trigger or ()),
                                    replace=replace)
    typer.echo(f"added {record.kind.value} {record.id} ({record.format.value}, family {record.family})")


@models_app.command("alias")
def models_alias(alias: str, model_id: str) -> None:
    """Let clients reach MODEL_ID as ALIAS (e.g. stable-diffusion-v1-5)."""
    _services().models.alias(alias, model_id)
    typer.echo(f"{alias} -> {model_id}")


@models_app.command("remove")
def models_remove(model_id: str) -> None:
    """Unregister a model (its files are left alone)."""
    _services().models.remove(model_id)
    typer.echo(f"removed {model_id}")


@models_app.command("export")
def models_export(model_id: str, out: Path) -> None:
    """Write a checkpoint as one self-describing .safetensors file (its configs in the metadata), ready to
    upload anywhere: e.g. `diffusiond models export shapes shapes.safetensors`."""
    import shutil

    from diffusiond.models.files import LocalModelFiles

    services = _services()
    cache = Path(services.settings.home) / "cache" / "models"
    record = LocalModelFiles(services.models, services.blobs, cache).resolve(model_id, ModelKind.CHECKPOINT)
    source = Path(record.path)
    if source.is_dir():
        from diffusiond.engine.single_file import export_single_file

        export_single_file(source, out, write_config=False, embed_family=record.family)
    else:
        shutil.copyfile(source, out)
    typer.echo(f"wrote {out} ({out.stat().st_size:,} bytes, family {record.family})")


@models_app.command("list")
def models_list() -> None:
    """List registered models and their aliases."""
    for record, aliases in _services().models.list():
        extra = f"  aliases: {', '.join(aliases)}" if aliases else ""
        typer.echo(f"{record.kind.value:<11} {record.id:<32} {record.family:<8} {record.format.value}{extra}")


@app.command()
def generate(
    prompt: str,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the PNG.")] = Path("out.png"),
    engine: Annotated[Optional[str], typer.Option(help="Model id or alias (default: the default model).")] = None,  # noqa: UP045
    negative: Annotated[str, typer.Option(help="Negative prompt.")] = "",
    steps: Annotated[int, typer.Option(min=1, max=150)] = 20,
    seed: Annotated[int, typer.Option(help="0 picks a random seed.")] = 0,
    width: Annotated[Optional[int], typer.Option()] = None,  # noqa: UP045
    height: Annotated[Optional[int], typer.Option()] = None,  # noqa: UP045
    cfg_scale: Annotated[float, typer.Option()] = 7.0,
) -> None:
    """Generate one image from a prompt, locally, with a progress bar."""
    from rich.progress import Progress

    from diffusiond.blobs.images import encode_png
    from diffusiond.domain.limits import check_size, limits_for
    from diffusiond.domain.params import Diffusion, GenerateSpec, Txt2Img, WeightedPrompt
    from diffusiond.domain.seeds import random_seed
    from diffusiond.services import build_engine

    services = _services()
    record = services.models.resolve(engine or services.settings.default_model, ModelKind.CHECKPOINT)
    native = limits_for(record.family).native
    w, h = width or native, height or native
    check_size(w, h, record.family)
    seed = seed or random_seed()
    negs = (WeightedPrompt(negative),) if negative else ()
    d = Diffusion(model=record.id, prompts=(WeightedPrompt(prompt),), negative_prompts=negs, width=w, height=h,
                  steps=steps, cfg_scale=cfg_scale)
    runner = build_engine(services.settings, services.models, services.blobs)
    with Progress() as progress:
        task = progress.add_task(f"{record.id} seed {seed}", total=1.0)
        ctx = _CliContext(lambda f: progress.update(task, completed=f))
        started = time.perf_counter()
        images = runner.run(GenerateSpec(stages=(Txt2Img(d),), seed=seed), ctx)
        progress.update(task, completed=1.0)
    output.write_bytes(encode_png(images[0].image))
    typer.echo(f"wrote {output} ({w}x{h}, seed {seed}, {time.perf_counter() - started:.2f} s)")


class _CliContext:
    """The WorkContext of a local CLI generation: progress goes to the bar; nothing cancels."""

    def __init__(self, on_progress: Callable[[float], object]) -> None:
        self.on_progress = on_progress

    def load_image(self, ref: ImageRef) -> Image.Image:
        raise NotImplementedError("the CLI generates from text only")

    def report_progress(self, image_index: int, fraction: float) -> None:
        self.on_progress(fraction)

    def report_metrics(self, metrics: Mapping[str, float]) -> None:
        pass

    def report_preview(self, image: Image.Image) -> None:
        pass

    def is_canceled(self) -> bool:
        return False

    def save_image(self, image: Image.Image, seed: int, finish_reason: str = "SUCCESS",
                   format: ImageFormat = ImageFormat.PNG, *, parameters: str | None = None) -> None:
        raise NotImplementedError("the CLI writes the engine's images itself")

    def save_model_file(self, path: Path, *, name: str, format: str) -> None:
        raise NotImplementedError("the CLI generates images only")

    def save_document(self, name: str, data: object) -> None:
        raise NotImplementedError("the CLI generates images only")

    def save_checkpoint(self, folder: Path) -> None:
        pass

    def load_checkpoint(self, dest: Path) -> bool:
        return False


@train_app.command("shapes")
def train_shapes_cmd(
    out: Annotated[Path, typer.Option(help="Output diffusers folder.")] = Path("shapes-model"),
    seed: Annotated[int, typer.Option(help="Training seed; the same seed gives the same weights.")] = 0,
    unet_steps: Annotated[Optional[int], typer.Option(help="UNet steps (default: the shipped recipe's).")] = None,  # noqa: UP045
    snapshot_every: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Also save checkpoints/step-K every K UNet steps.")] = None,
    vae_from: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Reuse the autoencoder of an earlier run with the same seed (skips that stage).")] = None,
    refine_from: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Start at stage 4b from an earlier run's stage 4a output (its --refine-steps 0 --polish-steps 0 "
             "folder).")] = None,
    polish_from: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Start at stage 4c from an earlier run's stage 4b output (its --polish-steps 0 folder).")] = None,
    refine_steps: Annotated[Optional[int], typer.Option(help="Stage 4b steps; 0 skips it.")] = None,  # noqa: UP045
    polish_steps: Annotated[Optional[int], typer.Option(help="Stage 4c steps; 0 skips it.")] = None,  # noqa: UP045
) -> None:
    """Train the bundled `shapes` model from its synthetic dataset (CPU, under 90 minutes)."""
    from diffusiond.engine.training.shapes_base import train_shapes

    path = train_shapes(out, seed=seed, unet_steps=unet_steps, snapshot_every=snapshot_every, vae_from=vae_from,
                        refine_from=refine_from, polish_from=polish_from, refine_steps=refine_steps,
                        polish_steps=polish_steps)
    typer.echo(f"wrote {path}")


@train_lora_app.command("lora")
def train_lora_cmd(
    images_dir: Annotated[Path, typer.Argument(help="A folder of pictures; `a.txt` beside `a.png` is its caption.")],
    trigger: Annotated[str, typer.Option(help="The word that will call up what the pictures show.")],
    out: Annotated[Path, typer.Option(help="The LoRA file to write (.safetensors); its loss curve goes beside it.")],
    base: Annotated[str, typer.Option(help="Base checkpoint id or alias.")] = "shapes",
    speed: Annotated[TrainingSpeed, typer.Option(help="The preset the other options start from.")] = TrainingSpeed.FAST,
    strength: Annotated[int, typer.Option(min=0, max=10, help="The preset's strength.")] = 5,
    steps: Annotated[Optional[int], typer.Option(help="Training steps (default: the preset's).")] = None,  # noqa: UP045
    rank: Annotated[Optional[int], typer.Option(help="LoRA rank; alpha follows it.")] = None,  # noqa: UP045
    lr: Annotated[Optional[float], typer.Option(help="Learning rate.")] = None,  # noqa: UP045
    batch_size: Annotated[Optional[int], typer.Option(help="Pictures per step.")] = None,  # noqa: UP045
    resolution: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Square training size (default: the base model's native size).")] = None,
    text_encoder: Annotated[Optional[bool], typer.Option(  # noqa: UP045
        "--text-encoder/--no-text-encoder", help="Train the text encoder too (default: the preset's).")] = None,
    seed: Annotated[int, typer.Option(help="0 picks a random seed; the same seed and pictures give the same file, "
                                           "and an interrupted run resumes from its last checkpoint.")] = 0,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (default: DIFFUSIOND_TORCH_THREADS, "  # noqa: UP045
                                                        "else torch's own).")] = None,
    register: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Also register the LoRA under this id in the local server's registry.")] = None,
) -> None:
    """Train a LoRA on a folder of pictures, with the same trainer the server's training jobs use."""
    import dataclasses

    from diffusiond.domain.limits import limits_for
    from diffusiond.domain.seeds import random_seed
    from diffusiond.domain.training import TrainingImage, TrainSpec, preset
    from diffusiond.engine.training.dataset import folder_pictures
    from diffusiond.engine.training.handler import TrainHandler
    from diffusiond.models.files import LocalModelFiles

    services = _services()
    cache = Path(services.settings.home) / "cache"
    resolver = LocalModelFiles(services.models, services.blobs, cache / "models")
    record = resolver.resolve(base, ModelKind.CHECKPOINT)
    settings = preset(strength, speed, resolution or limits_for(record.family).native)
    overrides: dict[str, Any] = {"steps": steps, "learning_rate": lr, "rank": rank, "batch_size": batch_size,
                                 "alpha": float(rank) if rank else None, "train_text_encoder": text_encoder}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    images = tuple(TrainingImage(ImageRef(str(path)), caption) for path, caption in folder_pictures(images_dir))
    spec = TrainSpec(base_model=record.id, images=images, trigger_word=trigger, settings=settings,
                     output_name=out.stem, seed=seed or random_seed())
    threads = threads or services.settings.torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    typer.echo(f"training a LoRA on {len(images)} pictures of {images_dir} for {record.id} ({record.family}): "
               f"{settings.steps} steps x batch {settings.batch_size} at {settings.resolution}px, "
               f"rank {settings.rank}, rate {settings.learning_rate:g}, "
               f"text encoder {'on' if settings.train_text_encoder else 'off'}, seed {spec.seed}")
    started = time.perf_counter()
    with _TrainContext(out, services.uploads, settings.steps) as ctx:
        TrainHandler(resolver, cache, cache / "train", device=services.settings.device).run(spec, ctx)
    typer.echo(f"wrote {out} and {ctx.curve_path} in {time.perf_counter() - started:.0f} s "
               f"(loss {ctx.first_loss:.4f} -> {ctx.last_loss:.4f})")
    if register:
        services.models.add(out, register, ModelKind.LORA, family=record.family, trigger_words=(trigger,),
                            description=f"LoRA trained on {len(images)} pictures by diffusiond train lora",
                            replace=True)
        typer.echo(f"registered lora {register} (family {record.family}, trigger word {trigger})")


class _TrainContext:
    """The WorkContext of `diffusiond train lora`: pictures from local files (checked by the upload
    rules), progress on a bar, the LoRA to `out`, the loss curve beside it, checkpoints in a folder
    beside it (kept until the run completes, so an interrupted run with the same seed resumes)."""

    def __init__(self, out: Path, uploads: UploadRules, steps: int) -> None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.uploads = uploads
        self.checkpoints = out.with_name(out.name + ".checkpoint")
        self.curve_path = out.with_name(out.name + ".loss.png")
        self.bar = tqdm(total=steps, unit="step", dynamic_ncols=True)
        self.first_loss = self.last_loss = float("nan")

    def __enter__(self) -> _TrainContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def load_image(self, ref: ImageRef) -> Image.Image:
        path = Path(ref.blob_key)
        return self.uploads.decode(path.read_bytes(), field=path.name)

    def report_progress(self, image_index: int, fraction: float) -> None:
        pass

    def report_metrics(self, metrics: Mapping[str, float]) -> None:
        self.bar.update(int(metrics["step"]) - self.bar.n)
        self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", eta=f"{metrics['eta_seconds']:.0f}s", refresh=False)

    def report_preview(self, image: Image.Image) -> None:
        pass

    def is_canceled(self) -> bool:
        return False

    def save_image(self, image: Image.Image, seed: int, finish_reason: str = "SUCCESS",
                   format: ImageFormat = ImageFormat.PNG, *, parameters: str | None = None) -> None:
        raise NotImplementedError("a training saves no images")

    def save_model_file(self, path: Path, *, name: str, format: str) -> None:
        import shutil

        shutil.move(path, self.out)
        shutil.rmtree(self.checkpoints, ignore_errors=True)

    def save_document(self, name: str, data: object) -> None:
        from diffusiond.engine.training.loss_curve import draw_loss_curve

        losses = list(data["loss"]) if isinstance(data, dict) else []
        if losses:
            window = min(20, len(losses))
            self.first_loss, self.last_loss = sum(losses[:window]) / window, sum(losses[-window:]) / window
        draw_loss_curve(losses, f"{self.out.name}: loss").save(self.curve_path)

    def save_checkpoint(self, folder: Path) -> None:
        import shutil

        shutil.rmtree(self.checkpoints, ignore_errors=True)
        shutil.copytree(folder, self.checkpoints)

    def load_checkpoint(self, dest: Path) -> bool:
        import shutil

        if not self.checkpoints.is_dir():
            return False
        shutil.copytree(self.checkpoints, dest, dirs_exist_ok=True)
        return True


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()


if __name__ == "__main__":
    main()
