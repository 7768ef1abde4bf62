"""`/v1/jobs` requests -> core JobSpecs.

Stages run in the order given, each on the previous stage's images. A field whose feature this
server does not have yet is refused with a 400 that names it (`unsupported_feature`), never ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from diffusiond.api.jobs import schemas as w
from diffusiond.api.vocabulary import a1111
from diffusiond.domain.errors import InvalidParams, NotFound
from diffusiond.domain.limits import MAX_COUNT, UPSCALE_MAX_PIXELS, check_size
from diffusiond.domain.models import ModelKind, ModelRecord
from diffusiond.domain.params import (
    Adetailer,
    AdetailerRegion,
    Diffusion,
    EmbeddingRef,
    GenerateSpec,
    ImageRef,
    Img2Img,
    Inpaint,
    LoraMix,
    LoraRef,
    Sampler,
    Schedule,
    Stage,
    Txt2Img,
    Upscale,
    WeightedPrompt,
)
from diffusiond.domain.pricing import upscale_size


@dataclass(frozen=True)
class Resource:
    ref: ImageRef
    width: int
    height: int


@dataclass(frozen=True)
class Lookups:
    """What translation needs from the platform: models, the tenant's resources, detectors."""

    resolve: Callable[[str, ModelKind], ModelRecord]
    resource: Callable[[str], Resource]
    detector_known: Callable[[str], bool]
    default_model: str


@dataclass
class _State:
    seed: int = 0
    count: int = 1
    init: Resource | None = None
    size: tuple[int, int] | None = None  # the current image size, None before the first image
    diffusion: Diffusion | None = None  # the latest diffusion settings, inherited by later stages
    stages: list[Stage] = field(default_factory=list)


def request_hash(body: w.JobCreate) -> str:
    """A digest of what the request asks for (not how it was spelled), for idempotency."""
    canonical = body.model_dump(mode="json", exclude={"request_id"}, exclude_none=True)
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def unsupported(where: str, what: str) -> InvalidParams:
    return InvalidParams(f"{where}.{what}: this feature is not supported by this server yet",
                         code="unsupported_feature", field=what)


def invalid(where: str, message: str, code: str = "invalid_params") -> InvalidParams:
    return InvalidParams(f"{where}: {message}", code=code, field=where.rsplit(".", 1)[-1])


def translate(body: w.StagesIn, lookups: Lookups) -> GenerateSpec:
    """The GenerateSpec a request describes, validated against the models and resources it names."""
    st = _State()
    for i, stage in enumerate(body.stages):
        where = f"stages[{i}]"
        kind = stage_kind(stage, where)
        if kind is w.StageType.INPUT_INITIALIZE:
            assert stage.input_initialize is not None
            if i != 0:
                raise invalid(where, "inputInitialize must be the first stage")
            input_initialize(st, stage.input_initialize, lookups, f"{where}.inputInitialize")
        elif kind is w.StageType.DIFFUSION:
            assert stage.diffusion is not None
            diffusion_stage(st, stage.diffusion, lookups, f"{where}.diffusion")
        elif kind is w.StageType.IMAGE_TO_UPSCALER:
            assert stage.image_to_upscaler is not None
            upscaler_stage(st, stage.image_to_upscaler, lookups, f"{where}.imageToUpscaler")
        elif kind is w.StageType.IMAGE_TO_INPAINT:
            assert stage.image_to_inpaint is not None
            inpaint_stage(st, stage.image_to_inpaint, lookups, f"{where}.imageToInpaint")
        elif kind is w.StageType.IMAGE_TO_ADETAILER:
            assert stage.image_to_adetailer is not None
            adetailer_stage(st, stage.image_to_adetailer, lookups, f"{where}.imageToAdetailer")
    if not st.stages:
        raise invalid("stages", "at least one stage that makes or changes an image is required")
    seed = 0 if st.seed in a1111.RANDOM_SEEDS else st.seed  # 0: the job service picks one
    return GenerateSpec(stages=tuple(st.stages), count=st.count, seed=seed, init=st.init.ref if st.init else None)


def stage_kind(stage: w.StageIn, where: str) -> w.StageType:
    blocks = {
        w.StageType.INPUT_INITIALIZE: stage.input_initialize, w.StageType.DIFFUSION: stage.diffusion,
        w.StageType.IMAGE_TO_UPSCALER: stage.image_to_upscaler,
        w.StageType.IMAGE_TO_ADETAILER: stage.image_to_adetailer,
        w.StageType.IMAGE_TO_INPAINT: stage.image_to_inpaint,
        w.StageType.IMAGE_TO_ANIMATE_DIFF: stage.image_to_animate_diff,
    }
    present = [k for k, v in blocks.items() if v is not None]
    kind = stage.type if stage.type is not w.StageType.DEFAULT else (present[0] if len(present) == 1 else None)
    if kind is w.StageType.IMAGE_TO_ANIMATE_DIFF:
        raise unsupported(where, "IMAGE_TO_ANIMATE_DIFF")
    if kind is None or present != [kind]:
        raise invalid(where, f"a stage of type {stage.type.value} needs exactly its own block "
                             f"(got {', '.join(k.value for k in present) or 'none'})")
    return kind


def input_initialize(st: _State, block: w.InputInitializeIn, lookups: Lookups, where: str) -> None:
    if block.count < 1 or block.count > MAX_COUNT:
        raise InvalidParams(f"{where}.count: sample count must be between 1 and {MAX_COUNT}",
                            code="invalid_samples", field="count")
    if block.seed < -1 or block.seed >= 2**32:
        raise invalid(f"{where}.seed", "must be between -1 and 4294967295", "invalid_seed")
    st.seed, st.count = block.seed, block.count
    if block.image_resource_id:
        st.init = lookups.resource(block.image_resource_id)
        st.size = (st.init.width, st.init.height)


def check_unsupported(d: w.DiffusionIn, where: str) -> None:
    flags = {"enableElla": d.enable_ella, "enablePix2pix": d.enable_pix2pix, "useHunyuanDit": d.use_hunyuan_dit,
             "v1Clip": d.v1_clip}
    for name, value in flags.items():
        if value:
            raise unsupported(where, name)
    if d.controlnet is not None and d.controlnet.args:
        raise unsupported(where, "controlnet")
    if d.animate_diff is not None and d.animate_diff.args:
        raise unsupported(where, "animateDiff")
    if d.layer_diffusion is not None and d.layer_diffusion.enable:
        raise unsupported(where, "layerDiffusion")
    for name, text in (("clipEncoderName", d.clip_encoder_name), ("modelAccessKey", d.model_access_key)):
        if text:
            raise unsupported(where, name)


def prompts(value: w.Prompts, where: str, *, required: bool) -> tuple[WeightedPrompt, ...]:
    items = [w.PromptIn(text=value)] if isinstance(value, str) else list(value or [])
    out = tuple(WeightedPrompt(p.text, p.weight) for p in items if p.text.strip())
    if any(p.weight <= 0 for p in out):
        raise invalid(where, "prompt weights must be positive", "invalid_prompts")
    if required and not out:
        raise invalid(where, "at least one non-empty prompt is required", "invalid_prompts")
    return out


def sampler_of(name: str | None, where: str) -> tuple[Sampler | None, Schedule | None]:
    """A1111/TensorArt sampler names ("DPM++ 2M Karras") -> sampler and schedule."""
    found = a1111.sampler_and_schedule(name)
    if found is None:
        raise invalid(where, f"unknown or unsupported sampler {name!r}", "invalid_sampler")
    return found


def resolve(lookups: Lookups, model_id: str, kind: ModelKind, where: str) -> ModelRecord:
    try:
        return lookups.resolve(model_id, kind)
    except NotFound:
        raise invalid(where, f"{kind.value} {model_id!r} is not installed on this server", "invalid_model") from None


def loras(block: w.LoraIn | None, lookups: Lookups, where: str) -> tuple[LoraRef, ...]:
    out = []
    for i, item in enumerate(block.items if block else []):
        at = f"{where}.lora.items[{i}]"
        if item.block_weight:
            raise unsupported(at, "blockWeight")
        if item.lora_access_key:
            raise unsupported(at, "loraAccessKey")
        out.append(LoraRef(resolve(lookups, item.lora_model, ModelKind.LORA, f"{at}.loraModel").id, item.weight))
    return tuple(out)


def embeddings(block: w.EmbeddingIn | None, lookups: Lookups, where: str) -> tuple[EmbeddingRef, ...]:
    out = []
    for i, item in enumerate(block.items if block else []):
        at = f"{where}.embedding.items[{i}]"
        if item.embedding_access_key:
            raise unsupported(at, "embeddingAccessKey")
        if item.weight != 1.0:
            raise unsupported(at, "weight")
        record = resolve(lookups, item.model, ModelKind.EMBEDDING, f"{at}.model")
        out.append(EmbeddingRef(record.id, token=item.model))
    return tuple(out)


def diffusion_of(d: w.DiffusionIn, lookups: Lookups, where: str, *, base: Diffusion | None,
                 size: tuple[int, int] | None) -> Diffusion:
    """Core settings from a diffusion block; unset fields inherit `base` (an earlier stage's)."""
    check_unsupported(d, where)
    model_id = d.sd_model or (base.model if base else lookups.default_model)
    model = resolve(lookups, model_id, ModelKind.CHECKPOINT, f"{where}.sdModel")
    width = d.width or (size[0] if size else base.width if base else 512)
    height = d.height or (size[1] if size else base.height if base else 512)
    try:
        check_size(width, height, model.family)
    except InvalidParams as e:
        raise InvalidParams(f"{where}: {e.message}", code=e.code, field="width") from None
    sampler, schedule = sampler_of(d.sampler, f"{where}.sampler")
    if d.schedule_name is not None:
        schedule = a1111.schedule_named(d.schedule_name)
        if schedule is None:
            raise invalid(f"{where}.scheduleName", f"unknown schedule {d.schedule_name!r}", "invalid_schedule")
    steps = d.steps or (base.steps if base else 30)
    if not 1 <= steps <= 150:
        raise invalid(f"{where}.steps", "must be between 1 and 150", "invalid_steps")
    cfg = d.cfg_scale if d.cfg_scale is not None else (base.cfg_scale if base else 7.0)
    if not 0 <= cfg <= 35:
        raise invalid(f"{where}.cfgScale", "must be between 0 and 35", "invalid_cfg_scale")
    clip_skip = d.clip_skip or (base.clip_skip if base else 1)
    if not 1 <= clip_skip <= 12:
        raise invalid(f"{where}.clipSkip", "must be between 1 and 12", "invalid_clip_skip")
    vae = None
    if d.sd_vae and d.sd_vae.strip().lower() not in ("automatic", "none", "auto"):
        vae = resolve(lookups, d.sd_vae, ModelKind.VAE, f"{where}.sdVae").id
    positive = prompts(d.prompts, f"{where}.prompts", required=base is None)
    return Diffusion(
        model=model.id, prompts=positive or (base.prompts if base else ()),
        negative_prompts=prompts(d.negative_prompts, f"{where}.negativePrompts", required=False)
        or (base.negative_prompts if base and d.negative_prompts is None else ()),
        width=width, height=height, steps=steps, cfg_scale=cfg,
        sampler=sampler or (base.sampler if base and not d.sampler else None),
        schedule=schedule or (base.schedule if base and not d.sampler else Schedule.DEFAULT),
        clip_skip=clip_skip, eta_noise_seed_delta=d.eta_noise_seed_delta or 0,
        loras=loras(d.lora, lookups, where) if d.lora is not None else (base.loras if base else ()),
        lora_mix=LoraMix(d.lora.mix.value) if d.lora is not None else (base.lora_mix if base else LoraMix.MERGED),
        embeddings=embeddings(d.embedding, lookups, where) if d.embedding is not None
        else (base.embeddings if base else ()),
        vae=vae or (base.vae if base and not d.sd_vae else None),
    )


def strength_of(value: float | None, default: float, where: str) -> float:
    strength = default if value is None else value
    if not 0.0 <= strength <= 1.0:
        raise invalid(where, "must be between 0 and 1", "invalid_denoising_strength")
    return strength


def diffusion_stage(st: _State, block: w.DiffusionIn, lookups: Lookups, where: str) -> None:
    d = diffusion_of(block, lookups, where, base=None, size=st.size)
    if st.size is None:  # nothing to start from: text to image
        st.stages.append(Txt2Img(d))
    else:
        strength = strength_of(block.denoising_strength, 0.75, f"{where}.denoisingStrength")
        init = st.init.ref if st.init is not None and not st.stages else None
        st.stages.append(Img2Img(d, init=init, strength=strength))
    st.diffusion, st.size = d, (d.width, d.height)


def need_image(st: _State, where: str) -> tuple[int, int]:
    if st.size is None:
        raise invalid(where, "needs an image: put a diffusion stage or inputInitialize.imageResourceId first",
                      "missing_input_image")
    return st.size


def upscaler_stage(st: _State, block: w.ImageToUpscalerIn, lookups: Lookups, where: str) -> None:
    size = need_image(st, where)
    name = a1111.upscaler_id(block.hr_upscaler)
    upscaler = resolve(lookups, name, ModelKind.UPSCALER, f"{where}.hrUpscaler")
    if block.hr_scale is not None and not 0 < block.hr_scale <= 8:
        raise invalid(f"{where}.hrScale", "must be in (0, 8]", "invalid_height_or_width")
    # As in the seed's API: hrScale, when given, wins over hrResizeX/Y.
    sized = block.hr_scale is None
    stage = Upscale(upscaler=upscaler.id, init=first_init(st), width=(block.hr_resize_x or None) if sized else None,
                    height=(block.hr_resize_y or None) if sized else None, scale=block.hr_scale)
    out = upscale_size(size, stage)
    if out[0] * out[1] > UPSCALE_MAX_PIXELS or min(out) < 1:
        raise InvalidParams(f"{where}: the upscaled image would be {out[0]}x{out[1]}; at most "
                            f"{UPSCALE_MAX_PIXELS:,} pixels", code="invalid_height_or_width", field="hrScale")
    if block.diffusion is not None or block.hr_second_pass_steps:
        base = st.diffusion
        if block.diffusion is None and base is None:
            raise invalid(f"{where}.hrSecondPassSteps", "a second pass needs diffusion settings", "invalid_params")
        d = diffusion_of(block.diffusion or w.DiffusionIn(), lookups, f"{where}.diffusion", base=base,
                         size=out) if block.diffusion is not None or base is None else base
        d = replace(d, width=out[0], height=out[1], steps=block.hr_second_pass_steps or d.steps)
        strength = strength_of(block.denoising_strength, 0.35, f"{where}.denoisingStrength")
        stage = replace(stage, hires=d, hires_strength=strength)
    st.stages.append(stage)
    st.size = out


def first_init(st: _State) -> ImageRef | None:
    """The uploaded init image for the first image stage; later stages take the previous output."""
    return st.init.ref if st.init is not None and not st.stages else None


def inpaint_stage(st: _State, block: w.ImageToInpaintIn, lookups: Lookups, where: str) -> None:
    size = need_image(st, where)
    if block.resize_mode not in (None, "DEFAULT", "JUST_RESIZE"):
        raise unsupported(where, f"resizeMode={block.resize_mode}")
    fill = (block.inpainting_fill or "DEFAULT").upper()
    if fill not in a1111.FILLS:
        raise invalid(f"{where}.inpaintingFill", f"unknown fill {block.inpainting_fill!r}", "invalid_params")
    mask = lookups.resource(block.mask_image_resource_id)
    if block.diffusion is None and st.diffusion is None:
        raise invalid(f"{where}.diffusion", "an inpaint stage needs diffusion settings (prompts, model)")
    dblock = block.diffusion or w.DiffusionIn()
    d = diffusion_of(dblock, lookups, f"{where}.diffusion", base=st.diffusion, size=size)
    d = replace(d, width=size[0], height=size[1]) if not (dblock.width or dblock.height) else d
    strength = strength_of(dblock.denoising_strength, 0.75, f"{where}.diffusion.denoisingStrength")
    blur = block.mask_blur or 0
    padding = block.inpaint_full_res_padding if block.inpaint_full_res_padding is not None else 32
    if not 0 <= blur <= 64 or not 0 <= padding <= 256:
        raise invalid(where, "maskBlur must be 0..64 and inpaintFullResPadding 0..256")
    stage = Inpaint(d, init=first_init(st), mask=mask.ref, strength=max(strength, 0.01), mask_blur=blur,
                    fill=a1111.FILLS[fill], only_masked=bool(block.inpaint_full_res), only_masked_padding=padding,
                    invert=bool(block.inpaint_mask_invert))
    st.stages.append(stage)
    st.diffusion = st.diffusion or d


def adetailer_stage(st: _State, block: w.ImageToAdetailerIn, lookups: Lookups, where: str) -> None:
    size = need_image(st, where)
    base = st.diffusion
    if block.diffusion is not None:
        base = diffusion_of(block.diffusion, lookups, f"{where}.diffusion", base=base, size=size)
    if base is None:
        raise invalid(f"{where}.diffusion", "an adetailer stage needs diffusion settings (prompts, model)")
    regions = tuple(adetailer_region(a, base, lookups, f"{where}.args[{i}]") for i, a in enumerate(block.args))
    if first_init(st) is not None:
        raise invalid(where, "adetailer cannot be the first image stage; add a diffusion stage before it")
    st.stages.append(Adetailer(regions))


def adetailer_region(a: w.AdetailerArgIn, base: Diffusion, lookups: Lookups, where: str) -> AdetailerRegion:
    if a.ad_use_noise_multiplier:
        raise unsupported(where, "adUseNoiseMultiplier")
    if not lookups.detector_known(a.ad_model):
        raise invalid(f"{where}.adModel", f"detector {a.ad_model!r} is not installed on this server",
                      "invalid_model")
    model = base.model
    if a.ad_use_checkpoint and a.ad_checkpoint:
        model = resolve(lookups, a.ad_checkpoint, ModelKind.CHECKPOINT, f"{where}.adCheckpoint").id
    sampler, schedule = (base.sampler, base.schedule)
    if a.ad_use_sampler:
        picked, sched = sampler_of(a.ad_sampler, f"{where}.adSampler")
        sampler, schedule = picked, sched or Schedule.DEFAULT
    width, height = base.width, base.height
    if a.ad_use_inpaint_width_height:
        width, height = a.ad_inpaint_width or width, a.ad_inpaint_height or height
    steps = a.ad_steps if a.ad_use_steps and a.ad_steps else base.steps
    cfg = a.ad_cfg_scale if a.ad_use_cfg_scale and a.ad_cfg_scale is not None else base.cfg_scale
    clip_skip = a.ad_clip_skip if a.ad_use_clip_skip and a.ad_clip_skip else base.clip_skip
    d = replace(
        base, model=model, width=width, height=height, steps=steps, cfg_scale=cfg, clip_skip=clip_skip,
        sampler=sampler, schedule=schedule,
        prompts=prompts(a.ad_prompt, f"{where}.adPrompt", required=False) or base.prompts,
        negative_prompts=prompts(a.ad_negative_prompt, f"{where}.adNegativePrompt", required=False)
        or base.negative_prompts,
        loras=loras(a.lora, lookups, where) if a.lora is not None else base.loras,
        lora_mix=LoraMix(a.lora.mix.value) if a.lora is not None else base.lora_mix,
    )
    check_size(d.width, d.height, resolve(lookups, model, ModelKind.CHECKPOINT, f"{where}.adCheckpoint").family)
    merge = a1111.MASK_MERGE.get((a.ad_mask_merge_invert or "None").strip().lower())
    if merge is None:
        raise invalid(f"{where}.adMaskMergeInvert", f"unknown value {a.ad_mask_merge_invert!r}")
    confidence = a.ad_confidence if a.ad_confidence is not None else 0.3
    if not 0.0 <= confidence <= 1.0:
        raise invalid(f"{where}.adConfidence", "must be between 0 and 1")
    dilation = a.ad_dilate_erode if a.ad_dilate_erode is not None else 4
    if not -128 <= dilation <= 128:
        raise invalid(f"{where}.adDilateErode", "must be between -128 and 128")
    padding = a.ad_inpaint_only_masked_padding if a.ad_inpaint_only_masked_padding is not None else 32
    return AdetailerRegion(
        detector=a.ad_model, diffusion=d, confidence=confidence, dilation=dilation, mask_merge=merge,
        strength=max(strength_of(a.ad_denoising_strength, 0.4, f"{where}.adDenoisingStrength"), 0.01),
        padding=padding, only_masked=a.ad_inpaint_only_masked is not False,
    )
