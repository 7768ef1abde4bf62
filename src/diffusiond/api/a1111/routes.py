"""AUTOMATIC1111 `/sdapi/v1` routes: parse, authorise, submit one job and wait for it, render.

Generations go through the core's queue like every other dialect's (A1111 itself runs one at a
time under a global lock). Settings (`options`) are per tenant. Errors use A1111's body
`{error, detail, body, errors}`; a failed HTTP Basic login answers as `--api-auth` does.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from diffusiond.api.a1111 import schemas as s
from diffusiond.api.a1111.translate import (
    DIALECT,
    VERSION,
    check_options,
    images_b64,
    info_json,
    job_timestamp,
    lookups,
    options,
    styles,
)
from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.edge import Dialect, Upload
from diffusiond.api.errors import dialect_route
from diffusiond.api.openapi import error_responses
from diffusiond.api.vocabulary.a1111_images import InputImages, decode_base64
from diffusiond.api.vocabulary.a1111_processing import (
    Lookups,
    extras_info,
    extras_spec,
    img2img_spec,
    processed_info,
    request_echo,
    txt2img_spec,
)
from diffusiond.api.vocabulary.a1111_schemas import (
    ExtrasBatchImagesRequest,
    ExtrasSingleImageRequest,
    Img2ImgRequest,
    ProcessingRequest,
    Txt2ImgRequest,
)
from diffusiond.auth.keys import Principal
from diffusiond.blobs.images import png_text
from diffusiond.domain.errors import DomainError, InvalidParams, NotFound, Unauthorized
from diffusiond.domain.infotext import SAMPLER_TITLES, parse
from diffusiond.domain.jobs import Job, JobStatus
from diffusiond.domain.limits import MAX_INPUT_IMAGES
from diffusiond.domain.models import ModelKind
from diffusiond.domain.params import GenerateSpec, ImageRef
from diffusiond.domain.spec_codec import generate_spec_from_json
from diffusiond.queue.waiting import wait_for_job
from diffusiond.queue.worker import preview_key
from diffusiond.services import Services

# A1111's statuses for the errors it has; the rest are 400 (A1111 would often answer 500).
STATUS = {"sampler_not_found": 404, "model_not_found": 404, "init_image_not_found": 404,
          "script_not_found": 422, "bad_request": 422, "not_found": 404}
DETAILS = {"sampler_not_found": "Sampler not found", "init_image_not_found": "Init image not found",
           "model_not_found": "Model not found", "invalid_encoded_image": "Invalid encoded image"}
LIVE_PREVIEW_SECONDS = 1.0


def render_error(request: Request, err: DomainError) -> Response:
    if isinstance(err, Unauthorized):
        return JSONResponse({"detail": "Incorrect username or password"}, status_code=401,
                            headers={"WWW-Authenticate": "Basic"})
    status = STATUS.get(err.code, err.status)
    if status >= 500 and (err.code.startswith("invalid_") or err.code == "unsupported_feature"):
        status = 400
    detail = DETAILS.get(err.code, err.message)
    body = s.A1111Error(error=type(err).__name__ if err.code != "bad_request" else "RequestValidationError",
                       detail=detail, errors=err.message)
    headers = {"Retry-After": "1"} if status == 429 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.A1111Error, "description": why} for code, why in (
        (400, "a value this server cannot honour"), (401, "no or a wrong key (HTTP Basic password)"),
        (402, "not enough credits"), (404, "unknown sampler, model or init image"), (413, "too large"),
        (422, "invalid body, or an unknown script"), (500, "the generation failed"),
        (504, "the generation did not finish in time"))
}
ERRORS.update(error_responses(s.A1111Error, 429))
router = APIRouter(prefix="/sdapi/v1", tags=["a1111"], route_class=dialect_route(render_error),
                   responses=ERRORS)
# Images come inline, base64 in JSON: those routes' bodies are bounded as JSON plus that many images.
EDGE = Dialect("a1111", ("/sdapi/v1",), render_error, uploads=(
    Upload("POST", "/sdapi/v1/img2img", files=MAX_INPUT_IMAGES + 1, json=True),
    Upload("POST", "/sdapi/v1/extra-single-image", json=True),
    Upload("POST", "/sdapi/v1/extra-batch-images", files=MAX_INPUT_IMAGES, json=True),
    Upload("POST", "/sdapi/v1/png-info", json=True),
))


# ---- generation -------------------------------------------------------------------------------------


@router.post("/txt2img", response_model=s.ImagesResponse)
async def txt2img(body: Txt2ImgRequest, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Text to image (and the hires fix), as A1111 answers it."""
    return await generate(services, principal, body, partial(txt2img_spec, body))


@router.post("/img2img", response_model=s.ImagesResponse)
async def img2img(body: Img2ImgRequest, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Image to image, or inpainting when `mask` is given."""
    return await generate(services, principal, body, partial(img2img_spec, body))


async def generate(services: Services, principal: Principal, body: ProcessingRequest,
                   translate: Callable[[Lookups], GenerateSpec]) -> Response:
    images = InputImages(services.uploads, services.blobs, principal.tenant_id)
    opts = await run_in_threadpool(options, services, principal.tenant_id)

    def spec() -> GenerateSpec:
        return live_previews(translate(lookups(services, principal, images, opts)), opts)

    job = await submit(services, principal, images, spec)
    job = await wait_for_job(services.jobs, services.events, principal.tenant_id, job.id,
                             services.settings.sync_timeout_seconds)
    if body.override_settings and not body.override_settings_restore_afterwards:
        await run_in_threadpool(keep_overrides, services, principal, body.override_settings)
    return await run_in_threadpool(render_images, services, body, job, opts)


def live_previews(spec: GenerateSpec, opts: dict[str, Any]) -> GenerateSpec:
    return replace(spec, preview_seconds=LIVE_PREVIEW_SECONDS) if opts.get("live_previews_enable") else spec


def keep_overrides(services: Services, principal: Principal, overrides: dict[str, Any]) -> None:
    """`override_settings_restore_afterwards: false`: the overrides stay, as in A1111 (this tenant's only)."""
    checked = check_options(services, principal, overrides)
    services.tenants.update_dialect_settings(principal.tenant_id, DIALECT, checked)


async def submit(services: Services, principal: Principal, images: InputImages,
                 translate: Callable[[], GenerateSpec]) -> Job:
    """Translate (storing input images) and submit, in a worker thread; a refusal leaves no files."""
    def run() -> Job:
        try:
            spec = translate()
            return services.jobs.submit(principal.tenant_id, spec, dialect=DIALECT)
        except BaseException:
            images.discard()
            raise

    return await run_in_threadpool(run)


def check_done(job: Job) -> None:
    if job.status is JobStatus.SUCCEEDED or job.status is JobStatus.CANCELED:
        return
    err = DomainError(job.error_message or f"generation {job.status.value}", code=job.error_code or "server_error")
    err.status = 400 if (job.error_code or "").startswith("invalid_") else 500
    raise err


def render_images(services: Services, body: ProcessingRequest, job: Job, opts: dict[str, Any]) -> Response:
    """A1111's answer: base64 images (none after an interrupt), the request echoed, `info` as JSON text."""
    check_done(job)
    spec = generate_spec_from_json(job.spec_json)
    model = str(opts.get("sd_model_checkpoint") or services.settings.default_model)
    info = processed_info(body, spec, model_name=model, job_timestamp=job_timestamp(job), version=VERSION)
    if job.status is JobStatus.CANCELED:
        info["all_seeds"], info["infotexts"] = info["all_seeds"][:0], []
    encoded = images_b64(services, job) if body.send_images and job.status is JobStatus.SUCCEEDED else []
    answer = s.ImagesResponse(images=encoded, parameters=request_echo(body), info=info_json(info))
    return Response(answer.model_dump_json(), media_type="application/json")


@router.post("/extra-single-image", response_model=s.ExtrasSingleImageResponse)
async def extra_single_image(body: ExtrasSingleImageRequest, principal: PrincipalDep,
                             services: ServicesDep) -> s.ExtrasSingleImageResponse:
    """Upscale one image."""
    images = await extras(services, principal, body, [body.image])
    return s.ExtrasSingleImageResponse(html_info=extras_info(body), image=images[0])


@router.post("/extra-batch-images", response_model=s.ExtrasBatchImagesResponse)
async def extra_batch_images(body: ExtrasBatchImagesRequest, principal: PrincipalDep,
                             services: ServicesDep) -> s.ExtrasBatchImagesResponse:
    """Upscale several images (one job each, run through the same queue)."""
    images = await extras(services, principal, body, [f.data for f in body.imageList])
    return s.ExtrasBatchImagesResponse(html_info=extras_info(body), images=images)


async def extras(services: Services, principal: Principal, body: Any, data: list[str]) -> list[str]:
    if not data or not all(data):
        raise InvalidParams("image: an image is required", code="init_image_not_found", field="image")
    stored = InputImages(services.uploads, services.blobs, principal.tenant_id)
    look = lookups(services, principal, stored, {})

    def translate(item: str) -> GenerateSpec:
        ref: ImageRef = stored(item, "image", None, 0)
        return extras_spec(body, ref, look)

    jobs = [await submit(services, principal, stored, partial(translate, item)) for item in data]
    out: list[str] = []
    for job in jobs:
        done = await wait_for_job(services.jobs, services.events, principal.tenant_id, job.id,
                                  services.settings.sync_timeout_seconds)
        check_done(done)
        out += await run_in_threadpool(images_b64, services, done)
    return out


@router.post("/png-info", response_model=s.PNGInfoResponse)
def png_info(body: s.PNGInfoRequest, principal: PrincipalDep, services: ServicesDep) -> s.PNGInfoResponse:
    """The generation parameters an image carries (its `parameters` text chunk), raw and parsed."""
    if not body.image.strip():
        raise InvalidParams("image: Request body is empty", field="image")
    data = decode_base64(body.image, "image")
    services.uploads.decode(data, field="image")  # refuses what is not an image, within the upload limits
    items: dict[str, Any] = png_text(data)
    info = items.pop("parameters", "")
    return s.PNGInfoResponse(info=info, items=items, parameters=parse(info) if info else {})


# ---- the queue: progress, interrupt, skip -----------------------------------------------------------


def running(services: Services, tenant_id: str) -> list[Job]:
    jobs, _ = services.jobs.list(tenant_id, status=JobStatus.RUNNING, dialect=DIALECT, limit=10)
    return jobs


@router.get("/progress", response_model=s.ProgressResponse)
def progress(principal: PrincipalDep, services: ServicesDep,
             skip_current_image: bool = Query(default=False)) -> s.ProgressResponse:
    """The caller's generation in progress (its A1111 jobs only), with the latest live preview."""
    active = running(services, principal.tenant_id)
    queued, _ = services.jobs.list(principal.tenant_id, status=JobStatus.QUEUED, dialect=DIALECT, limit=100)
    if not active:
        return s.ProgressResponse(progress=0.0, eta_relative=0.0, state=s.ProgressState(job_count=len(queued)))
    job = active[-1]  # the oldest running
    spec = generate_spec_from_json(job.spec_json)
    steps = next((st.diffusion.steps for st in spec.stages if hasattr(st, "diffusion")), 0)
    done = job.overall_progress
    elapsed = time.time() - (job.started_at or job.created_at).timestamp()
    eta = elapsed / done - elapsed if done > 0 else 0.0
    image = None
    if not skip_current_image:
        try:
            image = base64.b64encode(services.blobs.get(preview_key(job.tenant_id, job.id))).decode()
        except NotFound:
            image = None
    state = s.ProgressState(job=f"task({job.id})", job_count=len(active) + len(queued),
                            job_timestamp=job_timestamp(job), sampling_step=round(done * steps),
                            sampling_steps=steps)
    return s.ProgressResponse(progress=done, eta_relative=max(eta, 0.0), state=state, current_image=image)


@router.post("/interrupt")
def interrupt(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """Stop the caller's running and queued A1111 generations; their requests answer with no images."""
    jobs = running(services, principal.tenant_id)
    jobs += services.jobs.list(principal.tenant_id, status=JobStatus.QUEUED, dialect=DIALECT, limit=100)[0]
    for job in jobs:
        cancel(services, principal, job)
    return {}


@router.post("/skip")
def skip(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """Stop the caller's running A1111 generation (its whole batch: a job is one unit here)."""
    for job in running(services, principal.tenant_id):
        cancel(services, principal, job)
    return {}


def cancel(services: Services, principal: Principal, job: Job) -> None:
    with contextlib.suppress(InvalidParams):  # it finished meanwhile
        services.jobs.cancel(principal.tenant_id, job.id)


# ---- settings and checkpoints ---------------------------------------------------------------------


@router.get("/options", response_model=dict[str, Any])
def get_options(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """Every setting, as this tenant set them."""
    return options(services, principal.tenant_id)


@router.post("/options", response_model=None)
async def set_options(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Change settings for this tenant only (a checkpoint must be one `sd-models` lists)."""
    try:
        changes = json.loads(await request.body() or b"{}")
    except ValueError:
        raise InvalidParams("body: not valid JSON", code="bad_request") from None
    if not isinstance(changes, dict):
        raise InvalidParams("body: a JSON object of settings is required", code="bad_request")
    checked = await run_in_threadpool(check_options, services, principal, changes)
    await run_in_threadpool(services.tenants.update_dialect_settings, principal.tenant_id, DIALECT, checked)
    return JSONResponse(None)


@router.post("/refresh-checkpoints", response_model=None)
def refresh_checkpoints(principal: PrincipalDep) -> Response:
    """Checkpoints are read from the registry on every request: nothing to refresh."""
    return JSONResponse(None)


@router.post("/refresh-vae", response_model=None)
def refresh_vae(principal: PrincipalDep) -> Response:
    return JSONResponse(None)


@router.post("/refresh-loras", response_model=None)
def refresh_loras(principal: PrincipalDep) -> Response:
    return JSONResponse(None)


@router.post("/unload-checkpoint", response_model=dict[str, Any])
def unload_checkpoint(principal: PrincipalDep) -> dict[str, Any]:
    """Workers keep the models their queue needs warm; shared by tenants, so never unloaded on request."""
    return {}


@router.post("/reload-checkpoint", response_model=dict[str, Any])
def reload_checkpoint(principal: PrincipalDep) -> dict[str, Any]:
    return {}


@router.get("/sd-models", response_model=list[s.SDModelItem])
def sd_models(principal: PrincipalDep, services: ServicesDep) -> list[s.SDModelItem]:
    """Checkpoints by every name (id and aliases); a `title` is what `options` accepts back."""
    out: list[s.SDModelItem] = []
    for record, aliases in services.models.list(ModelKind.CHECKPOINT, tenant_id=principal.tenant_id):
        for name in (record.id, *aliases):
            out.append(s.SDModelItem(title=name, model_name=os.path.splitext(name)[0], filename=record.path))
    return out


@router.get("/sd-vae", response_model=list[s.SDVaeItem])
def sd_vae(principal: PrincipalDep, services: ServicesDep) -> list[s.SDVaeItem]:
    return [s.SDVaeItem(model_name=r.id, filename=r.path)
            for r, _ in services.models.list(ModelKind.VAE, tenant_id=principal.tenant_id)]


@router.get("/loras", response_model=list[s.LoraItem])
def loras(principal: PrincipalDep, services: ServicesDep) -> list[s.LoraItem]:
    """LoRAs a prompt may name with `<lora:NAME:WEIGHT>`."""
    return [s.LoraItem(name=name, alias=name, path=r.path)
            for r, aliases in services.models.list(ModelKind.LORA, tenant_id=principal.tenant_id)
            for name in (r.id, *aliases)]


@router.get("/embeddings", response_model=s.EmbeddingsResponse)
def embeddings(principal: PrincipalDep, services: ServicesDep) -> s.EmbeddingsResponse:
    """Textual inversions: their names, used as words in a prompt."""
    loaded = {name: s.EmbeddingItem(sd_checkpoint_name=r.family)
              for r, aliases in services.models.list(ModelKind.EMBEDDING, tenant_id=principal.tenant_id)
              for name in (r.id, *aliases)}
    return s.EmbeddingsResponse(loaded=loaded, skipped={})


@router.get("/hypernetworks", response_model=list[s.HypernetworkItem])
def hypernetworks(principal: PrincipalDep) -> list[s.HypernetworkItem]:
    """None: hypernetworks are not supported."""
    return []


@router.get("/samplers", response_model=list[s.SamplerItem])
def samplers(principal: PrincipalDep) -> list[s.SamplerItem]:
    """Sampler names `sampler_name` takes (with " Karras" or " Exponential" where the sampler allows it)."""
    return [s.SamplerItem(name=title, aliases=[sampler.value.lower()]) for sampler, title in SAMPLER_TITLES.items()]


@router.get("/schedulers", response_model=list[s.SchedulerItem])
def schedulers(principal: PrincipalDep) -> list[s.SchedulerItem]:
    return [s.SchedulerItem(name=name, label=label) for name, label in (
        ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"), ("exponential", "Exponential"))]


@router.get("/upscalers", response_model=list[s.UpscalerItem])
def upscalers(principal: PrincipalDep, services: ServicesDep) -> list[s.UpscalerItem]:
    """"None" and "Lanczos" (a resize) and every registered upscaler network."""
    out = [s.UpscalerItem(name="None"), s.UpscalerItem(name="Lanczos", scale=4)]
    for record, aliases in services.models.list(ModelKind.UPSCALER, tenant_id=principal.tenant_id):
        if record.id != "lanczos":
            out += [s.UpscalerItem(name=name, model_name=record.id, model_path=record.path) for name in (record.id,
                                                                                                          *aliases)]
    return out


@router.get("/latent-upscale-modes", response_model=list[s.LatentUpscalerModeItem])
def latent_upscale_modes(principal: PrincipalDep) -> list[s.LatentUpscalerModeItem]:
    """None: the hires fix upscales pixels here, never latents."""
    return []


@router.get("/realesrgan-models", response_model=list[s.UpscalerItem])
def realesrgan_models(principal: PrincipalDep, services: ServicesDep) -> list[s.UpscalerItem]:
    return [u for u in upscalers(principal, services) if u.model_name]


@router.get("/face-restorers", response_model=list[s.FaceRestorerItem])
def face_restorers(principal: PrincipalDep) -> list[s.FaceRestorerItem]:
    """None: face restoration is not available."""
    return []


@router.get("/prompt-styles", response_model=list[s.PromptStyleItem])
def prompt_styles(principal: PrincipalDep) -> list[s.PromptStyleItem]:
    """Styles `styles` may name: `{prompt}` marks where the request's prompt goes."""
    return [s.PromptStyleItem(name=name, prompt=p, negative_prompt=n) for name, (p, n) in styles().items()]


@router.get("/scripts", response_model=s.ScriptsList)
def scripts(principal: PrincipalDep) -> s.ScriptsList:
    """No scripts: `script_name` and `alwayson_scripts` are refused by name."""
    return s.ScriptsList()


@router.get("/script-info", response_model=list[s.ScriptInfo])
def script_info(principal: PrincipalDep) -> list[s.ScriptInfo]:
    return []


@router.get("/extensions", response_model=list[s.ExtensionItem])
def extensions(principal: PrincipalDep) -> list[s.ExtensionItem]:
    return []


@router.get("/memory", response_model=s.MemoryResponse)
def memory(principal: PrincipalDep) -> s.MemoryResponse:
    """This server's RAM (from the OS); GPU memory is the workers' business."""
    page, pages = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")
    free = os.sysconf("SC_AVPHYS_PAGES") * page
    total = page * pages
    return s.MemoryResponse(ram={"free": free, "used": total - free, "total": total},
                            cuda={"error": "GPU memory is reported by the workers, not this API"})


@router.get("/cmd-flags", response_model=dict[str, Any])
def cmd_flags(principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The A1111 flags this server's behaviour corresponds to."""
    settings = services.settings
    return {"api": True, "nowebui": True, "api_auth": None, "listen": settings.host != "127.0.0.1",
            "port": settings.port, "skip_torch_cuda_test": True, "no_half": False, "lowvram": False,
            "medvram": False, "api_log": False, "device_id": None}
