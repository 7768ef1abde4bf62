"""A1111 txt2img/img2img requests -> core GenerateSpecs, for every dialect that takes them.

    spec = txt2img_spec(body, lookups)      # Txt2ImgRequest -> GenerateSpec
    spec = img2img_spec(body, lookups)      # Img2ImgRequest -> GenerateSpec
    spec = extras_spec(body, image, lookups)  # ExtrasRequest (+ its stored image) -> an upscale
    info = processed_info(body, spec, ...)  # A1111's `info` object for the finished job

`Lookups` is all a dialect provides: the tenant's models, its settings (A1111 options, with the
model a request runs on by default), its textual inversions, prompt styles and a way to store an
input image. Translation validates everything before anything runs; a field whose feature this
server does not have is refused with a message that names it (code `unsupported_feature`), never
dropped. Error codes a dialect may map to its own statuses: `sampler_not_found`, `model_not_found`,
`script_not_found`, `init_image_not_found`, `invalid_encoded_image`, `unsupported_feature`,
`invalid_params` (and the core's size codes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from diffusiond.api.vocabulary import a1111
from diffusiond.api.vocabulary.a1111_schemas import ExtrasRequest, Img2ImgRequest, ProcessingRequest, Txt2ImgRequest
from diffusiond.domain.errors import InvalidParams, NotFound
from diffusiond.domain.infotext import SAMPLER_TITLES, infotext
from diffusiond.domain.limits import MAX_IMAGES_PER_JOB, UPSCALE_MAX_PIXELS, check_size
from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.domain.params import (
    Diffusion,
    EmbeddingRef,
    GenerateSpec,
    ImageFormat,
    ImageRef,
    Img2Img,
    Inpaint,
    LoraRef,
    Sampler,
    Schedule,
    Stage,
    Txt2Img,
    Upscale,
    WeightedPrompt,
)
from diffusiond.domain.pricing import upscale_size
from diffusiond.domain.seeds import MAX_SEED, random_seed

# A1111 settings (`/sdapi/v1/options`, `override_settings`) and their defaults. Those in APPLIED
# change what a generation does here; the others are accepted and kept (they steer A1111's UI and
# file saving, which this server does not have). UNSUPPORTED settings change generation in A1111 in
# ways this server cannot: their default is accepted, any other value refused.
APPLIED: dict[str, Any] = {
    "sd_model_checkpoint": None,  # None: the dialect's default model
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "eta_noise_seed_delta": 0,
    "samples_format": "png",
    "live_previews_enable": True,
    "show_progress_every_n_steps": 10,
}
ACCEPTED: dict[str, Any] = {
    "sd_checkpoint_hash": None, "sd_vae_checkpoint_cache": 0, "sd_checkpoint_cache": 0,
    "outdir_samples": "", "outdir_txt2img_samples": "outputs/txt2img-images",
    "outdir_img2img_samples": "outputs/img2img-images", "outdir_extras_samples": "outputs/extras-images",
    "samples_save": True, "grid_save": True, "save_images_add_number": True, "jpeg_quality": 80,
    "webp_lossless": False, "enable_pnginfo": True, "save_txt": False, "export_for_4chan": True,
    "samples_filename_pattern": "", "return_grid": True, "do_not_show_images": False,
    "js_modal_lightbox": True, "show_progressbar": True, "live_previews_image_format": "png",
    "show_progress_type": "Full", "live_preview_refresh_period": 1000, "interrogate_keep_models_in_memory": False,
    "sd_vae_as_default": True, "upscaler_for_img2img": None, "face_restoration_model": "CodeFormer",
    "face_restoration": False, "api_enable_requests": True, "api_forbid_local_requests": True,
    "api_useragent": "", "sd_lora": "None", "lora_preferred_name": "Alias from file",
    "add_model_hash_to_info": True, "add_model_name_to_info": True, "add_version_to_infotext": True,
    "disable_weights_auto_swap": True, "hires_fix_refiner_pass": "second pass",
    "hide_samplers": [], "sd_unet": "Automatic", "keyedit_precision_attention": 0.1,
}
UNSUPPORTED: dict[str, Any] = {
    "sd_hypernetwork": "None", "emphasis": "None", "img2img_fix_steps": False, "initial_noise_multiplier": 1.0,
    "eta_ddim": 0.0, "eta_ancestral": 1.0, "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0,
    "s_min_uncond": 0.0, "token_merging_ratio": 0.0, "token_merging_ratio_hr": 0.0, "randn_source": "CPU",
    "sgm_noise_multiplier": False, "always_discard_next_to_last_sigma": False, "upcast_attn": False,
    "img2img_color_correction": False, "inpainting_mask_weight": 1.0, "comma_padding_backtrack": 20,
    "use_old_emphasis_implementation": False, "enable_quantization": False, "pad_cond_uncond": False,
}
DEFAULT_OPTIONS: dict[str, Any] = {**APPLIED, **ACCEPTED, **UNSUPPORTED}
NO_VAE = ("automatic", "none", "auto", "")
FORMATS = {"png": ImageFormat.PNG, "jpg": ImageFormat.JPEG, "jpeg": ImageFormat.JPEG, "webp": ImageFormat.WEBP}
HIRES_DEFAULT_STRENGTH = 0.7
_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]$")
_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class Lookups:
    """What translation needs from the platform, scoped to the caller's tenant.

    `resolve` raises NotFound for a model the tenant cannot use. `options` are the tenant's A1111
    settings (`sd_model_checkpoint` None: `default_model`). `embeddings` maps each textual-inversion
    word to its model id. `styles` maps a prompt style's name to its (prompt, negative prompt)
    templates. `image(data, field, size, resize_mode)` decodes, validates, resizes (A1111's resize
    modes; size None keeps it) and stores one input image given as base64 or a data URL.
    """

    resolve: Callable[[str, ModelKind], ModelRecord]
    default_model: str
    image: Callable[[str, str, tuple[int, int] | None, int], ImageRef]
    options: Mapping[str, Any] = field(default_factory=dict)
    embeddings: Callable[[], Mapping[str, str]] = dict
    styles: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def unsupported(name: str, why: str = "this feature is not supported by this server") -> InvalidParams:
    return InvalidParams(f"{name}: {why}", code="unsupported_feature", field=name)


def invalid(name: str, message: str, code: str = "invalid_params") -> InvalidParams:
    return InvalidParams(f"{name}: {message}", code=code, field=name)


# ---- the two entry points ---------------------------------------------------------------------------


def txt2img_spec(body: Txt2ImgRequest, lookups: Lookups) -> GenerateSpec:
    """The GenerateSpec of an A1111 txt2img request: a text-to-image stage, then the hires fix."""
    check_common(body)
    if body.firstpass_image:
        raise unsupported("firstpass_image")
    if body.firstphase_width or body.firstphase_height:
        raise unsupported("firstphase_width", "the old hires fix size fields are not supported; use hr_resize_x/y")
    settings = merged_settings(body, lookups)
    d = diffusion_of(body, lookups, settings)
    stages: list[Stage] = [Txt2Img(d)]
    if body.enable_hr:
        stages.append(hires_stage(body, d, lookups, settings))
    return spec_of(body, stages, settings)


def img2img_spec(body: Img2ImgRequest, lookups: Lookups) -> GenerateSpec:
    """The GenerateSpec of an A1111 img2img request: img2img, or inpainting when a mask is given."""
    check_common(body)
    if not body.init_images:
        raise InvalidParams("Init image not found", code="init_image_not_found", field="init_images")
    if len(body.init_images) > 1:
        raise unsupported("init_images", "one init image per request is supported (got "
                                         f"{len(body.init_images)})")
    if body.resize_mode not in (0, 1, 2):
        raise unsupported("resize_mode", f"resize mode {body.resize_mode} is not supported (0, 1 and 2 are)")
    if body.latent_mask:
        raise unsupported("latent_mask")
    if body.initial_noise_multiplier not in (None, 1.0):
        raise unsupported("initial_noise_multiplier")
    if body.subseed_strength:
        raise unsupported("subseed_strength", "variation seeds apply to txt2img only")
    strength = body.denoising_strength if body.denoising_strength is not None else 0.75
    if not 0.0 <= strength <= 1.0:
        raise invalid("denoising_strength", "must be between 0 and 1")
    settings = merged_settings(body, lookups)
    d = diffusion_of(body, lookups, settings)
    size = (d.width, d.height)
    stage: Stage
    if body.mask:
        stage = inpaint_stage(body, d, lookups, strength)
    else:
        init = lookups.image(body.init_images[0], "init_images", size, body.resize_mode)
        stage = Img2Img(d, init=init, strength=strength)
    return spec_of(body, [stage], settings)


def inpaint_stage(body: Img2ImgRequest, d: Diffusion, lookups: Lookups, strength: float) -> Inpaint:
    assert body.init_images and body.mask
    blur = body.mask_blur if body.mask_blur is not None else body.mask_blur_x
    if body.mask_blur is None and body.mask_blur_x != body.mask_blur_y:
        raise unsupported("mask_blur_x", "different horizontal and vertical mask blurs are not supported")
    if not 0 <= blur <= 64:
        raise invalid("mask_blur", "must be between 0 and 64")
    fill = a1111.FILL_CODES.get(body.inpainting_fill)
    if fill is None:
        raise invalid("inpainting_fill", "must be 0 (fill), 1 (original), 2 (latent noise) or 3 (latent nothing)")
    if not 0 <= body.inpaint_full_res_padding <= 256:
        raise invalid("inpaint_full_res_padding", "must be between 0 and 256")
    if body.inpainting_mask_invert not in (0, 1):
        raise invalid("inpainting_mask_invert", "must be 0 or 1")
    # "Only masked" repaints a crop at the requested size and keeps the init image's own size.
    size = None if body.inpaint_full_res else (d.width, d.height)
    init = lookups.image(body.init_images[0], "init_images", size, body.resize_mode)
    mask = lookups.image(body.mask, "mask", size or init.size, body.resize_mode if size else 0)
    return Inpaint(d, init=init, mask=mask, strength=max(strength, 0.01), mask_blur=blur, fill=fill,
                   only_masked=body.inpaint_full_res, only_masked_padding=body.inpaint_full_res_padding,
                   invert=bool(body.inpainting_mask_invert))


# ---- shared parts ----------------------------------------------------------------------------------


def check_common(body: ProcessingRequest) -> None:
    """Fields whose features this server does not have, refused by name."""
    if body.script_name and body.script_name.strip().lower() not in ("", "none"):
        raise InvalidParams(f"Script '{body.script_name}' not found", code="script_not_found", field="script_name")
    for name in body.alwayson_scripts:
        raise InvalidParams(f"always on script {name} not found", code="script_not_found", field="alwayson_scripts")
    if body.restore_faces:
        raise unsupported("restore_faces", "face restoration is not available on this server")
    if body.refiner_checkpoint and body.refiner_checkpoint.strip().lower() not in ("", "none"):
        raise unsupported("refiner_checkpoint")
    if body.infotext:
        raise unsupported("infotext", "filling a request from an infotext is not supported; send the fields")
    if max(body.seed_resize_from_h, body.seed_resize_from_w) > 0:
        raise unsupported("seed_resize_from_w", "resizing the seed's noise is not supported")
    for name, value, default in (("s_churn", body.s_churn, 0.0), ("s_tmin", body.s_tmin, 0.0),
                                 ("s_noise", body.s_noise, 1.0), ("s_min_uncond", body.s_min_uncond, 0.0)):
        if value is not None and value != default:
            raise unsupported(name, f"only the default ({default:g}) is supported")
    if min(body.batch_size, body.n_iter) < 1 or body.batch_size * body.n_iter > MAX_IMAGES_PER_JOB:
        raise invalid("batch_size", f"n_iter x batch_size must be between 1 and {MAX_IMAGES_PER_JOB}",
                      "invalid_samples")
    if not -1 <= body.seed <= MAX_SEED:
        raise invalid("seed", f"must be between -1 and {MAX_SEED}", "invalid_seed")
    if not -1 <= body.subseed <= MAX_SEED:
        raise invalid("subseed", f"must be between -1 and {MAX_SEED}", "invalid_seed")
    if not 0.0 <= body.subseed_strength <= 1.0:
        raise invalid("subseed_strength", "must be between 0 and 1")
    if not 1 <= body.steps <= 150:
        raise invalid("steps", "must be between 1 and 150", "invalid_steps")
    if not 0.0 <= body.cfg_scale <= 35.0:
        raise invalid("cfg_scale", "must be between 0 and 35", "invalid_cfg_scale")


def merged_settings(body: ProcessingRequest, lookups: Lookups) -> dict[str, Any]:
    """The tenant's settings with the request's `override_settings` on top (checked)."""
    overrides = dict(body.override_settings or {})
    for key, value in overrides.items():
        if key in UNSUPPORTED and value != UNSUPPORTED[key]:
            raise unsupported(f"override_settings.{key}", f"only the default ({UNSUPPORTED[key]!r}) is supported")
        if key not in DEFAULT_OPTIONS:
            raise invalid(f"override_settings.{key}", "not a setting this server knows")
    return {**DEFAULT_OPTIONS, **lookups.options, **overrides}


def spec_of(body: ProcessingRequest, stages: list[Stage], settings: Mapping[str, Any]) -> GenerateSpec:
    fmt = FORMATS.get(str(settings.get("samples_format") or "png").lower())
    if fmt is None:
        raise invalid("samples_format", "must be png, jpg or webp")
    seed = 0 if body.seed in a1111.RANDOM_SEEDS else body.seed  # 0: the job service picks one
    return GenerateSpec(stages=tuple(stages), count=body.batch_size * body.n_iter, seed=seed, output_format=fmt)


def checkpoint(lookups: Lookups, title: str | None, name: str) -> ModelRecord:
    """A checkpoint by A1111 title ("name [hash]" or the bare name) or diffusiond id/alias."""
    wanted = _TITLE_HASH.sub("", (title or "").strip()) or lookups.default_model
    for candidate in dict.fromkeys((wanted, wanted.rsplit("/", 1)[-1])):
        try:
            return lookups.resolve(candidate, ModelKind.CHECKPOINT)
        except NotFound:
            continue
    raise InvalidParams(f"{name}: Model not found: {wanted}", code="model_not_found", field=name)


def sampler_of(name: str | None, scheduler: str | None, where: str) -> tuple[Sampler | None, Schedule]:
    found = a1111.sampler_and_schedule(name)
    if found is None:
        raise InvalidParams("Sampler not found", code="sampler_not_found", field=where)
    sampler, schedule = found
    if scheduler is not None and scheduler.strip().lower() not in ("", "automatic"):
        named = a1111.schedule_named(scheduler)
        if named is None:
            raise unsupported("scheduler", f"schedule type {scheduler!r} is not supported "
                                           "(automatic, uniform, karras and exponential are)")
        schedule = named
    return sampler, schedule or Schedule.DEFAULT


def diffusion_of(body: ProcessingRequest, lookups: Lookups, settings: Mapping[str, Any]) -> Diffusion:
    """Model, prompts (styles, LoRA tags, embeddings), sampler, size and the rest of one request."""
    model = checkpoint(lookups, settings.get("sd_model_checkpoint"), "sd_model_checkpoint")
    try:
        check_size(body.width, body.height, model.family)
    except InvalidParams as e:
        raise InvalidParams(f"width/height: {e.message}", code=e.code, field="width") from None
    sampler, schedule = sampler_of(body.sampler_name or body.sampler_index, body.scheduler, "sampler_name")
    check_eta(body.eta, sampler)
    prompt, negative = apply_styles(body.prompt, body.negative_prompt, body.styles or [], lookups)
    positive, negatives, loras, embeddings = prompts_of(prompt, negative, body.disable_extra_networks, lookups)
    clip_skip = int(settings.get("CLIP_stop_at_last_layers") or 1)
    if not 1 <= clip_skip <= 12:
        raise invalid("CLIP_stop_at_last_layers", "must be between 1 and 12", "invalid_clip_skip")
    vae_name = str(settings.get("sd_vae") or "Automatic")
    vae = None
    if vae_name.strip().lower() not in NO_VAE:
        try:
            vae = lookups.resolve(vae_name, ModelKind.VAE).id
        except NotFound:
            raise invalid("sd_vae", f"VAE {vae_name!r} is not installed on this server", "model_not_found") from None
    subseed = body.subseed
    if body.subseed_strength and subseed == -1:
        subseed = random_seed()
    return Diffusion(
        model=model.id, prompts=positive, negative_prompts=negatives, width=body.width, height=body.height,
        steps=body.steps, cfg_scale=body.cfg_scale, sampler=sampler, schedule=schedule, clip_skip=clip_skip,
        eta_noise_seed_delta=int(settings.get("eta_noise_seed_delta") or 0), loras=loras, embeddings=embeddings,
        vae=vae, subseed=max(subseed, 0) if body.subseed_strength else 0, subseed_strength=body.subseed_strength,
        tiling=bool(body.tiling),
    )


def check_eta(eta: float | None, sampler: Sampler | None) -> None:
    """`eta` is honoured where it is the sampler's own (DDIM 0, ancestral 1); it does not affect the others."""
    if eta is None:
        return
    ancestral = sampler in (Sampler.K_EULER_ANCESTRAL, Sampler.K_DPM_2_ANCESTRAL, Sampler.K_DPMPP_2S_ANCESTRAL)
    if (sampler is Sampler.DDIM and eta != 0.0) or (ancestral and eta != 1.0):
        raise unsupported("eta", "only the sampler's default eta (DDIM 0, ancestral samplers 1) is supported")


def apply_styles(prompt: str, negative: str, names: Sequence[str], lookups: Lookups) -> tuple[str, str]:
    """A1111's prompt styles: a style with `{prompt}` wraps the text, any other is appended."""
    for name in names:
        style = lookups.styles.get(name)
        if style is None:
            raise invalid("styles", f"style {name!r} not found (see /sdapi/v1/prompt-styles)")
        prompt, negative = _apply(style[0], prompt), _apply(style[1], negative)
    return prompt, negative


def _apply(style: str, text: str) -> str:
    if not style:
        return text
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    return f"{text}, {style}" if text.strip() else style


def prompts_of(prompt: str, negative: str, plain: bool, lookups: Lookups) -> tuple[
        tuple[WeightedPrompt, ...], tuple[WeightedPrompt, ...], tuple[LoraRef, ...], tuple[EmbeddingRef, ...]]:
    """The prompt without its `<lora:NAME:WEIGHT>` tags, the LoRAs they name, and the textual
    inversions whose words appear in either prompt. `plain` (disable_extra_networks) keeps tags as text."""
    loras: list[LoraRef] = []
    if not plain:
        prompt, loras = extra_networks(prompt, lookups)
        negative, _ = extra_networks(negative, lookups, where="negative_prompt")
    known = lookups.embeddings() if (prompt or negative) else {}
    embeddings = tuple(EmbeddingRef(model_id, token=word) for word, model_id in known.items()
                       if _has_word(prompt, word) or _has_word(negative, word))
    negatives = (WeightedPrompt(negative),) if negative.strip() else ()
    return (WeightedPrompt(prompt),), negatives, tuple(loras), embeddings


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def extra_networks(text: str, lookups: Lookups, where: str = "prompt") -> tuple[str, list[LoraRef]]:
    """Strip A1111's extra-network tags; `<lora:NAME:W>` (and `<lyco:...>`) become LoRA references."""
    loras: list[LoraRef] = []

    def take(match: re.Match[str]) -> str:
        kind, args = match.group(1).lower(), [a.strip() for a in match.group(2).split(":")]
        if kind not in ("lora", "lyco"):
            raise unsupported(where, f"<{kind}:...> tags are not supported (only <lora:NAME:WEIGHT>)")
        loras.append(LoraRef(lora_id(args[0], lookups, where), lora_weight(args[1:], where)))
        return ""

    stripped = _NETWORK_TAG.sub(take, text)
    if not loras:
        return stripped, loras
    return re.sub(r"\s+,", ",", re.sub(r"\s{2,}", " ", stripped)).strip(" ,"), loras


def lora_id(name: str, lookups: Lookups, where: str) -> str:
    try:
        return lookups.resolve(name, ModelKind.LORA).id
    except NotFound:
        raise invalid(where, f"LoRA {name!r} is not installed on this server (see /sdapi/v1/loras)",
                      "model_not_found") from None


def lora_weight(args: list[str], where: str) -> float:
    """`W`, or `te=W` / `unet=W`; a text-encoder weight other than the UNet's is not supported."""
    named: dict[str, str] = {}
    positional: list[str] = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep:
            named[key.strip().lower()] = value
        else:
            positional.append(arg)
    te = named.get("te", positional[0] if positional else "1")
    unet = named.get("unet", positional[1] if len(positional) > 1 else te)
    if set(named) - {"te", "unet"} or len(positional) > 2:
        raise unsupported(where, "LoRA tags take <lora:NAME:WEIGHT> (dynamic and block weights are not supported)")
    try:
        te_w, unet_w = float(te), float(unet)
    except ValueError:
        raise invalid(where, f"LoRA weight {te!r} is not a number") from None
    if te_w != unet_w:
        raise unsupported(where, "separate text-encoder and UNet LoRA weights are not supported")
    return te_w


def hires_stage(body: Txt2ImgRequest, d: Diffusion, lookups: Lookups, settings: Mapping[str, Any]) -> Upscale:
    """The hires fix: upscale the first pass, then re-diffuse at the new size."""
    name = body.hr_upscaler or "Latent"
    if name.strip().lower().startswith("latent"):
        raise unsupported("hr_upscaler", f"{name!r}: latent upscaling is not supported; name a pixel upscaler "
                                         "such as 'Lanczos' or one from /sdapi/v1/upscalers")
    try:
        upscaler = lookups.resolve(a1111.upscaler_id(name), ModelKind.UPSCALER).id
    except NotFound:
        raise invalid("hr_upscaler", f"upscaler {name!r} not found (see /sdapi/v1/upscalers)",
                      "model_not_found") from None
    width, height, scale = hires_size(body)
    model = d.model
    if body.hr_checkpoint_name and body.hr_checkpoint_name.strip() not in ("", "Use same checkpoint"):
        model = checkpoint(lookups, body.hr_checkpoint_name, "hr_checkpoint_name").id
    try:
        check_size(width, height, lookups.resolve(model, ModelKind.CHECKPOINT).family)
    except InvalidParams as e:
        raise InvalidParams(f"hires fix size {width}x{height}: {e.message}", code=e.code, field="hr_scale") from None
    sampler, schedule = d.sampler, d.schedule
    if body.hr_sampler_name and body.hr_sampler_name != "Use same sampler":
        sampler, schedule = sampler_of(body.hr_sampler_name, body.hr_scheduler, "hr_sampler_name")
    elif body.hr_scheduler and body.hr_scheduler != "Use same scheduler":
        sampler, schedule = sampler_of(SAMPLER_TITLES.get(d.sampler) if d.sampler else None, body.hr_scheduler,
                                       "hr_scheduler")
    hires = replace(d, model=model, width=width, height=height, steps=body.hr_second_pass_steps or body.steps,
                    sampler=sampler, schedule=schedule, subseed=0, subseed_strength=0.0)
    if body.hr_prompt or body.hr_negative_prompt:
        positive, negatives, loras, embeddings = prompts_of(body.hr_prompt or body.prompt,
                                                            body.hr_negative_prompt or body.negative_prompt,
                                                            body.disable_extra_networks, lookups)
        hires = replace(hires, prompts=positive, negative_prompts=negatives, loras=loras, embeddings=embeddings)
    strength = body.denoising_strength if body.denoising_strength is not None else HIRES_DEFAULT_STRENGTH
    if not 0.0 <= strength <= 1.0:
        raise invalid("denoising_strength", "must be between 0 and 1")
    return Upscale(upscaler=upscaler, scale=scale, width=None if scale else width, height=None if scale else height,
                   hires=hires, hires_strength=strength)


def hires_size(body: Txt2ImgRequest) -> tuple[int, int, float | None]:
    """(width, height, scale) of the second pass, as A1111 sizes it; scale None when sized by pixels."""
    w, h = body.width, body.height
    rx, ry = body.hr_resize_x, body.hr_resize_y
    if rx == 0 and ry == 0:
        if not 0 < body.hr_scale <= 8:
            raise invalid("hr_scale", "must be in (0, 8]", "invalid_height_or_width")
        return int(w * body.hr_scale), int(h * body.hr_scale), body.hr_scale
    if rx < 0 or ry < 0:
        raise invalid("hr_resize_x", "must not be negative", "invalid_height_or_width")
    if ry == 0:
        return rx, rx * h // w, None
    if rx == 0:
        return ry * w // h, ry, None
    if rx * h != ry * w:
        raise unsupported("hr_resize_x", "a hires size of another aspect ratio (A1111 crops) is not supported")
    return rx, ry, None


# ---- answers ---------------------------------------------------------------------------------------


def request_echo(body: ProcessingRequest) -> dict[str, Any]:
    """The request as A1111 echoes it in `parameters` (every field, defaults included)."""
    return body.echo() if isinstance(body, Img2ImgRequest) else body.model_dump()


def processed_info(body: ProcessingRequest, spec: GenerateSpec, *, model_name: str, job_timestamp: str,
                   version: str) -> dict[str, Any]:
    """A1111's `info` object (Processed.js) for a job's spec, its seeds as the job ran them."""
    found = next((s for s in spec.stages if isinstance(s, Txt2Img | Img2Img | Inpaint)), None)
    d = found.diffusion if found is not None else None
    n = spec.count
    seeds = spec.image_seeds()
    subseeds = [d.subseed + i for i in range(n)] if d is not None and d.subseed_strength else [body.subseed] * n
    strength = found.strength if isinstance(found, Img2Img | Inpaint) else body.denoising_strength
    return {
        "prompt": body.prompt, "all_prompts": [body.prompt] * n, "negative_prompt": body.negative_prompt,
        "all_negative_prompts": [body.negative_prompt] * n, "seed": seeds[0] if seeds else spec.seed,
        "all_seeds": seeds, "subseed": subseeds[0] if subseeds else -1, "all_subseeds": subseeds,
        "subseed_strength": body.subseed_strength, "width": body.width, "height": body.height,
        "sampler_name": SAMPLER_TITLES.get(d.sampler, "Automatic") if d is not None and d.sampler else "Automatic",
        "cfg_scale": body.cfg_scale, "steps": body.steps, "batch_size": body.batch_size,
        "restore_faces": False, "face_restoration_model": None, "sd_model_name": model_name,
        "sd_model_hash": None, "sd_vae_name": d.vae if d is not None else None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": strength,
        "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [infotext(spec, i) or "" for i in range(n)], "styles": body.styles or [],
        "job_timestamp": job_timestamp, "clip_skip": d.clip_skip if d is not None else 1,
        "is_using_inpainting_conditioning": False, "version": version,
    }


# ---- extras (upscaling) ------------------------------------------------------------------------------


def extras_spec(body: ExtrasRequest, image: ImageRef, lookups: Lookups) -> GenerateSpec:
    """The upscale job of an A1111 extras request, for one stored input image."""
    if body.gfpgan_visibility > 0 or body.codeformer_visibility > 0:
        raise unsupported("gfpgan_visibility", "face restoration is not available on this server")
    if body.upscaler_2 not in ("", "None") and body.extras_upscaler_2_visibility > 0:
        raise unsupported("upscaler_2", "blending a second upscaler is not supported")
    wanted = a1111.upscaler_id(body.upscaler_1)
    try:
        upscaler = lookups.resolve(wanted, ModelKind.UPSCALER).id
    except NotFound:
        raise invalid("upscaler_1", f"upscaler {body.upscaler_1!r} is not installed on this server (register it "
                                    f"as model id {wanted!r}; see /sdapi/v1/upscalers)", "model_not_found") from None
    if body.resize_mode == 0:
        if not 0 < body.upscaling_resize <= 8:
            raise invalid("upscaling_resize", "must be in (0, 8]", "invalid_height_or_width")
        stage = Upscale(upscaler=upscaler, init=image, scale=body.upscaling_resize)
    elif body.resize_mode == 1:
        w, h = body.upscaling_resize_w, body.upscaling_resize_h
        if w < 1 or h < 1:
            raise invalid("upscaling_resize_w", "must be positive", "invalid_height_or_width")
        if body.upscaling_crop and image.size and w * image.size[1] != h * image.size[0]:
            raise unsupported("upscaling_crop", "cropping to another aspect ratio is not supported")
        stage = Upscale(upscaler=upscaler, init=image, width=w, height=h)
    else:
        raise invalid("resize_mode", "must be 0 (scale by) or 1 (scale to)")
    out = upscale_size(image.size or (512, 512), stage)
    if out[0] * out[1] > UPSCALE_MAX_PIXELS:
        raise InvalidParams(f"the upscaled image would be {out[0]}x{out[1]}, more than {UPSCALE_MAX_PIXELS:,} "
                            "pixels", code="invalid_height_or_width", field="upscaling_resize")
    return GenerateSpec(stages=(stage,), count=1)


def extras_info(body: ExtrasRequest) -> str:
    """A1111's `html_info` of an extras result."""
    how = f"by: {body.upscaling_resize:g}" if body.resize_mode == 0 else \
        f"to: {body.upscaling_resize_w}x{body.upscaling_resize_h}"
    return f"<p>Postprocess upscale {how}, Postprocess upscaler: {body.upscaler_1}</p>"
