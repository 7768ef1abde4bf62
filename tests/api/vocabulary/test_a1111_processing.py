"""A1111 txt2img/img2img bodies -> GenerateSpecs, against an in-memory model table."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from diffusiond.api.vocabulary.a1111_images import resize_image
from diffusiond.api.vocabulary.a1111_processing import Lookups, img2img_spec, processed_info, txt2img_spec
from diffusiond.api.vocabulary.a1111_schemas import Img2ImgRequest, Txt2ImgRequest
from diffusiond.domain.errors import InvalidParams, NotFound
from diffusiond.domain.models import ModelFormat, ModelKind, ModelRecord
from diffusiond.domain.params import ImageFormat, ImageRef, Img2Img, Inpaint, InpaintFill, Sampler, Schedule, Upscale

MODELS = {
    ("shapes", ModelKind.CHECKPOINT): "shapes", ("other.safetensors", ModelKind.CHECKPOINT): "other",
    ("sharp", ModelKind.LORA): "sharp", ("lanczos", ModelKind.UPSCALER): "lanczos",
}


def lookups(options: dict[str, Any] | None = None) -> tuple[Lookups, list[tuple[str, tuple[int, int] | None, int]]]:
    images: list[tuple[str, tuple[int, int] | None, int]] = []

    def resolve(name: str, kind: ModelKind) -> ModelRecord:
        if (name, kind) not in MODELS:
            raise NotFound(name)
        return ModelRecord(MODELS[(name, kind)], kind, ModelFormat.DIFFUSERS, "/x", family="shapes")

    def image(data: str, field: str, size: tuple[int, int] | None, mode: int) -> ImageRef:
        images.append((field, size, mode))
        return ImageRef(f"inputs/t/{field}.png", *(size or (64, 64)))

    return Lookups(resolve=resolve, default_model="shapes", image=image, options=options or {},
                   embeddings=lambda: {"starry": "starry-emb"}, styles={"framed": ("{prompt}, framed", "ugly")}), images


def t2i(**fields: Any) -> Txt2ImgRequest:
    return Txt2ImgRequest.model_validate({"prompt": "a red circle", "width": 64, "height": 64, "steps": 20, **fields})


def test_a_client_s_full_txt2img_body() -> None:
    body = t2i(seed=-1, sampler_name="DPM++ 2M", scheduler="Karras", n_iter=2, batch_size=3, cfg_scale=5,
               negative_prompt="blurry <lora:sharp:0.5>", tiling=True, styles=["framed"],
               override_settings={"CLIP_stop_at_last_layers": 2,
                                  "sd_model_checkpoint": "other.safetensors [abcdef1234]"},
               prompt="a starry red circle <lora:sharp:0.8>", unknown_field="ignored", sampler_index="Euler a")
    spec = txt2img_spec(body, lookups()[0])
    assert spec.count == 6 and spec.seed == 0 and spec.output_format is ImageFormat.PNG
    d = spec.stages[0].diffusion  # type: ignore[union-attr]
    assert d.model == "other" and d.clip_skip == 2 and d.tiling and d.cfg_scale == 5
    assert (d.sampler, d.schedule) == (Sampler.K_DPMPP_2M, Schedule.KARRAS)
    assert d.prompts[0].text == "a starry red circle, framed" and d.negative_prompts[0].text == "blurry, ugly"
    assert [(lo.model_id, lo.weight) for lo in d.loras] == [("sharp", 0.8)]
    assert [(e.model_id, e.token) for e in d.embeddings] == [("starry-emb", "starry")]


def test_variation_seeds_and_random_subseed() -> None:
    d = txt2img_spec(t2i(seed=5, subseed=-1, subseed_strength=0.3), lookups()[0]).stages[0].diffusion  # type: ignore[union-attr]
    assert d.subseed > 0 and d.subseed_strength == 0.3
    plain = txt2img_spec(t2i(seed=5, subseed=9), lookups()[0]).stages[0].diffusion  # type: ignore[union-attr]
    assert plain.subseed_strength == 0 and plain.subseed == 0


def test_hires_fix() -> None:
    spec = txt2img_spec(t2i(enable_hr=True, hr_upscaler="Lanczos", hr_scale=2, hr_second_pass_steps=5,
                            denoising_strength=0.4, hr_prompt="a blue circle"), lookups()[0])
    up = spec.stages[1]
    assert isinstance(up, Upscale) and up.scale == 2 and up.hires is not None
    assert (up.hires.width, up.hires.height, up.hires.steps, up.hires_strength) == (128, 128, 5, 0.4)
    assert up.hires.prompts[0].text == "a blue circle"
    sized = txt2img_spec(t2i(enable_hr=True, hr_upscaler="None", hr_resize_x=128), lookups()[0]).stages[1]
    assert isinstance(sized, Upscale) and (sized.width, sized.height, sized.scale) == (128, 128, None)


@pytest.mark.parametrize(("fields", "code", "mentions"), [
    ({"sampler_name": "Bogus"}, "sampler_not_found", "Sampler not found"),
    ({"script_name": "x/y plot"}, "script_not_found", "Script 'x/y plot' not found"),
    ({"alwayson_scripts": {"ADetailer": {"args": []}}}, "script_not_found", "always on script ADetailer"),
    ({"restore_faces": True}, "unsupported_feature", "restore_faces"),
    ({"enable_hr": True}, "unsupported_feature", "latent upscaling"),
    ({"prompt": "x <hypernet:h:1>"}, "unsupported_feature", "hypernet"),
    ({"prompt": "x <lora:missing:1>"}, "model_not_found", "missing"),
    ({"override_settings": {"sd_model_checkpoint": "nope"}}, "model_not_found", "Model not found"),
    ({"override_settings": {"eta_ancestral": 0.5}}, "unsupported_feature", "eta_ancestral"),
    ({"override_settings": {"made_up": 1}}, "invalid_params", "made_up"),
    ({"scheduler": "align_your_steps"}, "unsupported_feature", "align_your_steps"),
    ({"width": 70}, "invalid_height_or_width", "width"),
    ({"n_iter": 4, "batch_size": 5}, "invalid_samples", "n_iter"),
    ({"s_churn": 1.0}, "unsupported_feature", "s_churn"),
    ({"styles": ["nope"]}, "invalid_params", "nope"),
])
def test_refusals_name_the_field(fields: dict[str, Any], code: str, mentions: str) -> None:
    with pytest.raises(InvalidParams) as e:
        txt2img_spec(t2i(**fields), lookups()[0])
    assert e.value.code == code and mentions in e.value.message


def test_img2img_and_inpaint() -> None:
    look, images = lookups({"samples_format": "webp"})
    spec = img2img_spec(Img2ImgRequest.model_validate(
        {"init_images": ["data:image/png;base64,AAAA"], "width": 64, "height": 128, "denoising_strength": 0.3,
         "resize_mode": 1}), look)
    stage = spec.stages[0]
    assert isinstance(stage, Img2Img) and stage.strength == 0.3 and spec.output_format is ImageFormat.WEBP
    assert images == [("init_images", (64, 128), 1)]
    inpaint = img2img_spec(Img2ImgRequest.model_validate(
        {"init_images": ["x"], "mask": "y", "width": 64, "height": 64, "inpainting_fill": 2, "mask_blur": 3,
         "inpaint_full_res": False, "inpainting_mask_invert": 1}), look).stages[0]
    assert isinstance(inpaint, Inpaint) and inpaint.fill is InpaintFill.LATENT_NOISE and inpaint.invert
    assert inpaint.mask_blur == 3 and not inpaint.only_masked
    with pytest.raises(InvalidParams, match="Init image not found"):
        img2img_spec(Img2ImgRequest.model_validate({"width": 64, "height": 64}), look)


def test_info_lists_seeds_and_infotexts() -> None:
    body = t2i(seed=7, n_iter=2)
    spec = txt2img_spec(body, lookups()[0])
    info = processed_info(body, spec, model_name="shapes", job_timestamp="20260101000000", version="x")
    assert info["all_seeds"] == [7, 8] and info["seed"] == 7 and len(info["infotexts"]) == 2
    assert "Seed: 8" in info["infotexts"][1] and info["sampler_name"] == "Euler"


def test_resize_modes() -> None:
    image = Image.new("RGB", (100, 50), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 50))  # a blue band on the left
    assert resize_image(0, image, 64, 64).getpixel((2, 32)) == (0, 0, 255)  # stretched: the band stays
    assert resize_image(1, image, 64, 64).getpixel((2, 32))[0] > 200  # cropped: the band is cut off
    filled = resize_image(2, image, 64, 64)  # fitted: bands above and below repeat the edge rows
    assert filled.size == (64, 64) and filled.getpixel((40, 2))[0] > 200


def test_data_urls_and_plain_base64_decode_alike() -> None:
    from diffusiond.api.vocabulary.a1111_images import decode_base64

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    raw = base64.b64encode(buf.getvalue()).decode()
    assert decode_base64(raw, "x") == decode_base64("data:image/png;base64," + raw, "x") == buf.getvalue()
    with pytest.raises(InvalidParams, match="Invalid encoded image"):
        decode_base64("data:image/png,notbase64", "x")
