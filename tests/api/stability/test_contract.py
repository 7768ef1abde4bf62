"""Stability v1 contract: every operation through a real `diffusiond serve` on loopback."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import LiveServer

T2I = "/v1/generation/tiny/text-to-image"


def body(**overrides: object) -> dict[str, object]:
    return {"text_prompts": [{"text": "a red circle on a blue background"}], "width": 64, "height": 64,
            "steps": 10, "seed": 1234, **overrides}


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def fixture_image(name: str, size: int = 64) -> bytes:
    """A deterministic picture with structure at every scale (gradients, a disc, stripes)."""
    assert name == "init_image.png"
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([x, y, 1 - x * y], axis=-1) * 200 + 30
    disc = (x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.05
    rgb[disc] = (230, 40, 40)
    rgb[(np.floor(x * 8) % 2 == 0) & (y > 0.8)] = (20, 20, 20)
    return png_bytes(Image.fromarray(rgb.astype(np.uint8)))


def assert_error(r: httpx.Response, status: int, name: str) -> None:
    assert r.status_code == status, r.text
    data = r.json()
    assert data["name"] == name and data["message"] and data["id"], data


# ---- auth ------------------------------------------------------------------------------------------


def test_missing_and_wrong_keys_are_401(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as c:
        assert_error(c.get("/v1/user/balance"), 401, "unauthorized")
        assert_error(c.get("/v1/engines/list", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        assert_error(c.post(T2I, json=body()), 401, "unauthorized")


@pytest.mark.parametrize("header", ["x-api-key", "Authorization"])
def test_key_accepted_as_x_api_key_or_bare_authorization(server: LiveServer, header: str) -> None:
    with httpx.Client(base_url=server.url, headers={header: server.key}) as c:
        assert c.get("/v1/user/balance").status_code == 200


# ---- engines, account, balance ---------------------------------------------------------------------


def test_engines_list_includes_models_and_aliases(server: LiveServer) -> None:
    with server.client() as c:
        engines = c.get("/v1/engines/list").json()
    ids = {e["id"] for e in engines}
    assert {"tiny", "stable-diffusion-v1-5", "esrgan-v1-x2plus", "lanczos"} <= ids
    assert all(set(e) == {"id", "name", "description", "type"} and e["type"] == "PICTURE" for e in engines)


def test_account_and_balance_are_per_tenant(server: LiveServer, new_key: Callable[..., str]) -> None:
    a, b = new_key(credits=5.0), new_key(credits=7.0)
    with server.client(a) as ca, server.client(b) as cb:
        acct_a, acct_b = ca.get("/v1/user/account").json(), cb.get("/v1/user/account").json()
        assert acct_a["id"] != acct_b["id"] and acct_a["organizations"][0]["is_default"] is True
        assert ca.get("/v1/user/balance").json() == {"credits": 5.0}
        assert ca.post(T2I, json=body()).status_code == 200
        spent = 5.0 - ca.get("/v1/user/balance").json()["credits"]
        assert spent > 0
        assert cb.get("/v1/user/balance").json() == {"credits": 7.0}  # B untouched by A's work


def test_request_the_balance_cannot_cover_is_refused_before_work(server: LiveServer,
                                                                 new_key: Callable[..., str]) -> None:
    key = new_key(credits=0.005)
    with server.client(key) as c:
        assert_error(c.post(T2I, json=body()), 402, "insufficient_credits")
        assert c.get("/v1/user/balance").json() == {"credits": 0.005}


# ---- text-to-image ---------------------------------------------------------------------------------


def test_text_to_image_json(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post(T2I, json=body(samples=2), headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    arts = r.json()["artifacts"]
    assert [a["seed"] for a in arts] == [1234, 1235]
    assert all(a["finishReason"] == "SUCCESS" for a in arts)
    imgs = [decode(a["base64"]) for a in arts]
    assert all(i.size == (64, 64) and i.format == "PNG" for i in imgs)
    assert not np.array_equal(np.asarray(imgs[0]), np.asarray(imgs[1]))


def test_text_to_image_png_with_headers_and_same_seed_same_image(server: LiveServer) -> None:
    with server.client() as c:
        r1 = c.post(T2I, json=body(), headers={"Accept": "image/png"})
        r2 = c.post(T2I, json=body(), headers={"Accept": "image/png"})
    assert r1.status_code == 200 and r1.headers["content-type"] == "image/png"
    assert r1.headers["seed"] == "1234" and r1.headers["finish-reason"] == "SUCCESS"
    assert r1.content == r2.content


def test_seed_zero_is_random_and_reported(server: LiveServer) -> None:
    with server.client() as c:
        seeds = [c.post(T2I, json=body(seed=0)).json()["artifacts"][0]["seed"] for _ in range(2)]
    assert all(s > 0 for s in seeds) and seeds[0] != seeds[1]


def test_negative_weight_prompt_and_options_accepted(server: LiveServer) -> None:
    prompts = [{"text": "a red circle", "weight": 1.0}, {"text": "blue", "weight": -0.8}]
    with server.client() as c:
        r = c.post(T2I, json=body(text_prompts=prompts, sampler="K_EULER", cfg_scale=9,
                                   clip_guidance_preset="FAST_BLUE", style_preset="pixel-art"))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("overrides,status,name", [
    ({"width": 65}, 400, "invalid_height_or_width"),
    ({"height": 100}, 400, "invalid_height_or_width"),
    ({"width": 1024, "height": 1024}, 400, "invalid_pixel_count"),
    ({"steps": 5}, 400, "bad_request"),
    ({"cfg_scale": 40}, 400, "bad_request"),
    ({"samples": 11}, 400, "bad_request"),
    ({"sampler": "K_MAGIC"}, 400, "bad_request"),
    ({"text_prompts": []}, 400, "bad_request"),
    ({"text_prompts": [{"text": "x" * 2001}]}, 400, "bad_request"),
    ({"text_prompts": [{"text": "only negative", "weight": -1}]}, 400, "invalid_prompts"),
])
def test_text_to_image_validation(server: LiveServer, overrides: dict[str, object], status: int,
                                  name: str) -> None:
    with server.client() as c:
        assert_error(c.post(T2I, json=body(**overrides)), status, name)


def test_samples_above_one_with_png_is_invalid_samples(server: LiveServer) -> None:
    with server.client() as c:
        assert_error(c.post(T2I, json=body(samples=2), headers={"Accept": "image/png"}), 400, "invalid_samples")


def test_unknown_engine_is_404_not_found(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post("/v1/generation/some-fake-engine/text-to-image", json=body())
    assert_error(r, 404, "not_found")
    assert "some-fake-engine" in r.json()["message"]


def test_alias_reaches_the_local_model(server: LiveServer) -> None:
    with server.client() as c:
        a = c.post("/v1/generation/stable-diffusion-v1-5/text-to-image", json=body(),
                   headers={"Accept": "image/png"})
        b = c.post(T2I, json=body(), headers={"Accept": "image/png"})
    assert a.status_code == 200 and a.content == b.content


# ---- image-to-image --------------------------------------------------------------------------------


def img2img(c: httpx.Client, data: dict[str, str], init: bytes | None = None,
            mime: str = "image/png") -> httpx.Response:
    files = {"init_image": ("init.png", init if init is not None else fixture_image("init_image.png"), mime)}
    fields = {"text_prompts[0][text]": "a green square", "steps": "10", "seed": "5", **data}
    return c.post("/v1/generation/tiny/image-to-image", files=files, data=fields)


def test_image_strength_one_returns_the_init_image(server: LiveServer) -> None:
    init = Image.open(io.BytesIO(fixture_image("init_image.png"))).convert("RGB")
    with server.client() as c:
        r = img2img(c, {"init_image_mode": "IMAGE_STRENGTH", "image_strength": "1.0"})
    assert r.status_code == 200, r.text
    out = decode(r.json()["artifacts"][0]["base64"]).convert("RGB")
    assert out.size == (64, 64)
    assert np.abs(np.asarray(out, float) - np.asarray(init, float)).mean() < 2.0


def test_image_strength_low_changes_the_image(server: LiveServer) -> None:
    init = Image.open(io.BytesIO(fixture_image("init_image.png"))).convert("RGB")
    with server.client() as c:
        r = img2img(c, {"image_strength": "0.0"})
    out = decode(r.json()["artifacts"][0]["base64"]).convert("RGB")
    assert np.abs(np.asarray(out, float) - np.asarray(init, float)).mean() > 5.0


def test_step_schedule_mode(server: LiveServer) -> None:
    with server.client() as c:
        r = img2img(c, {"init_image_mode": "STEP_SCHEDULE", "step_schedule_start": "0.6",
                        "step_schedule_end": "0.1", "text_prompts[1][text]": "blurry",
                        "text_prompts[1][weight]": "-1"})
    assert r.status_code == 200, r.text


def test_image_to_image_input_errors(server: LiveServer) -> None:
    with server.client() as c:
        assert_error(img2img(c, {}, init=b"not an image at all"), 400, "invalid_mime_type")
        assert_error(img2img(c, {}, mime="image/jpeg"), 400, "invalid_mime_type")
        assert_error(img2img(c, {}, init=png_bytes(Image.new("RGB", (70, 64)))), 400, "invalid_height_or_width")
        assert_error(img2img(c, {}, init=b"\x89PNG" + b"\0" * (10 * 1024 * 1024 + 10)), 400, "invalid_file_size")
        r = c.post("/v1/generation/tiny/image-to-image", data={"text_prompts[0][text]": "x"},
                   files={"other": ("x", b"y")})
        assert_error(r, 400, "bad_request")
        assert_error(img2img(c, {"image_strength": "1.5"}), 400, "bad_request")


def test_refused_requests_leave_no_files(server: LiveServer) -> None:
    inputs = server.home / "blobs" / "inputs"
    before = sorted(inputs.rglob("*.png")) if inputs.exists() else []
    with server.client() as c:
        assert img2img(c, {}, init=png_bytes(Image.new("RGB", (70, 64)))).status_code == 400
    after = sorted(inputs.rglob("*.png")) if inputs.exists() else []
    assert after == before


# ---- masking ---------------------------------------------------------------------------------------


def masking(c: httpx.Client, source: str, mask: bytes | None, init: bytes | None = None) -> httpx.Response:
    files = {"init_image": ("init.png", init or fixture_image("init_image.png"), "image/png")}
    if mask is not None:
        files["mask_image"] = ("mask.png", mask, "image/png")
    data = {"mask_source": source, "text_prompts[0][text]": "a galaxy", "steps": "10", "seed": "3"}
    return c.post("/v1/generation/tiny/image-to-image/masking", files=files, data=data)


def half_mask(white_left: bool) -> bytes:
    m = np.zeros((64, 64), np.uint8)
    m[:, :32] = 255
    return png_bytes(Image.fromarray(m if white_left else 255 - m))


@pytest.mark.parametrize("source,white_left", [("MASK_IMAGE_WHITE", True), ("MASK_IMAGE_BLACK", False)])
def test_masking_keeps_the_unmasked_half(server: LiveServer, source: str, white_left: bool) -> None:
    init = np.asarray(Image.open(io.BytesIO(fixture_image("init_image.png"))).convert("RGB"), float)
    with server.client() as c:
        r = masking(c, source, half_mask(white_left))
    assert r.status_code == 200, r.text
    out = np.asarray(decode(r.json()["artifacts"][0]["base64"]).convert("RGB"), float)
    assert np.abs(out[:, 40:] - init[:, 40:]).mean() < 3.0  # right half untouched
    assert np.abs(out[:, :24] - init[:, :24]).mean() > 5.0  # left half repainted


def test_masking_from_init_alpha(server: LiveServer) -> None:
    rgba = np.full((64, 64, 4), 200, np.uint8)
    rgba[..., 3] = 255
    rgba[:, :32, 3] = 0  # transparent left half is repainted
    init = png_bytes(Image.fromarray(rgba, "RGBA"))
    with server.client() as c:
        r = masking(c, "INIT_IMAGE_ALPHA", None, init=init)
    assert r.status_code == 200, r.text
    out = np.asarray(decode(r.json()["artifacts"][0]["base64"]).convert("RGB"), float)
    assert np.abs(out[:, 40:] - 200).mean() < 3.0


def test_masking_errors(server: LiveServer) -> None:
    with server.client() as c:
        assert_error(masking(c, "MASK_IMAGE_WHITE", None), 400, "invalid_mask_image")
        small = png_bytes(Image.new("L", (32, 32)))
        assert_error(masking(c, "MASK_IMAGE_BLACK", small), 400, "invalid_image_dimensions")
        assert_error(masking(c, "MASK_IMAGE_PURPLE", half_mask(True)), 400, "bad_request")


# ---- upscale ---------------------------------------------------------------------------------------


def upscale(c: httpx.Client, data: dict[str, str], size: int = 256, engine: str = "esrgan-v1-x2plus",
            accept: str = "image/png") -> httpx.Response:
    files = {"image": ("init.png", fixture_image("init_image.png", size), "image/png")}
    return c.post(f"/v1/generation/{engine}/image-to-image/upscale", files=files, data=data,
                  headers={"Accept": accept})


@pytest.mark.parametrize("data,expected", [({"width": "1024"}, (1024, 1024)), ({"height": "768"}, (768, 768)),
                                           ({}, (512, 512))])
def test_upscale_sizes(server: LiveServer, data: dict[str, str], expected: tuple[int, int]) -> None:
    with server.client() as c:
        r = upscale(c, data)
    assert r.status_code == 200, r.text
    out = Image.open(io.BytesIO(r.content))
    assert out.size == expected
    src = Image.open(io.BytesIO(fixture_image("init_image.png", 256))).convert("RGB")
    back = np.asarray(out.convert("RGB").resize((256, 256), Image.Resampling.LANCZOS), float)
    assert np.abs(back - np.asarray(src, float)).mean() < 6.0  # still the same picture


def test_upscale_json_and_errors(server: LiveServer) -> None:
    with server.client() as c:
        r = upscale(c, {"width": "512"}, accept="application/json")
        assert r.status_code == 200 and decode(r.json()["artifacts"][0]["base64"]).size == (512, 512)
        assert_error(upscale(c, {"width": "1024", "height": "1024"}), 400, "bad_request")
        assert_error(upscale(c, {"width": "256"}), 400, "bad_request")  # the spec's minimum is 512
        assert_error(upscale(c, {"width": "4096"}, size=512), 400, "invalid_pixel_count")
        assert_error(upscale(c, {}, engine="tiny"), 404, "not_found")  # a checkpoint is not an upscaler
