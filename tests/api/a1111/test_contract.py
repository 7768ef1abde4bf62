"""A1111 `/sdapi/v1` through a real server, with requests shaped as existing clients send them."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffusiond.testing import shapes_checks as checks
from tests.api.a1111.conftest import KeyFactory, b64_png, basic, decode
from tests.conftest import LiveServer

# What webuiapi and the A1111 UI send: every field, defaults included.
FULL_TXT2IMG: dict[str, Any] = {
    "enable_hr": False, "denoising_strength": 0.7, "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2,
    "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, "hr_sampler_name": "",
    "hr_scheduler": "", "hr_prompt": "", "hr_negative_prompt": "", "prompt": "a red circle on a blue background",
    "styles": [], "seed": 11, "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0,
    "seed_resize_from_w": 0, "sampler_name": "Euler a", "scheduler": "automatic", "batch_size": 1, "n_iter": 1,
    "steps": 20, "cfg_scale": 7.0, "width": 64, "height": 64, "restore_faces": False, "tiling": False,
    "do_not_save_samples": False, "do_not_save_grid": False, "negative_prompt": "", "eta": 1.0,
    "s_min_uncond": 0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1, "override_settings": {},
    "override_settings_restore_afterwards": True, "script_args": [], "sampler_index": "Euler a",
    "script_name": None, "send_images": True, "save_images": False, "alwayson_scripts": {},
    "refiner_checkpoint": None, "refiner_switch_at": None, "disable_extra_networks": False, "comments": {},
    "force_task_id": None, "infotext": None, "a_field_from_a_newer_client": 1,
}


def max_diff(a: str, b: str) -> int:
    return int(np.abs(np.asarray(decode(a), dtype=np.int16) - np.asarray(decode(b), dtype=np.int16)).max())


def txt2img(c: Any, **fields: Any) -> dict[str, Any]:
    r = c.post("/txt2img", json={**FULL_TXT2IMG, **fields})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_full_client_body_draws_what_the_prompt_says(a1111_server: LiveServer, a1111_key: KeyFactory) -> None:
    with basic(a1111_server, a1111_key()) as c:
        body = txt2img(c)
        info = json.loads(body["info"])
        image = decode(body["images"][0])
        reading = checks.read_image(image)
        assert image.size == (64, 64) and reading.background == "blue" and reading.color == "red"
        assert info["all_seeds"] == [11] and info["sd_model_name"] == "shapes" and info["sampler_name"] == "Euler a"
        assert set(info) >= {"infotexts", "all_prompts", "job_timestamp", "clip_skip", "version", "all_subseeds"}
        assert body["parameters"]["scheduler"] == "automatic"
        assert "a_field_from_a_newer_client" not in body["parameters"]
        # the PNG carries the infotext, and png-info reads it back
        assert image.text["parameters"] == info["infotexts"][0]
        back = c.post("/png-info", json={"image": "data:image/png;base64," + body["images"][0]}).json()
        assert back["info"] == info["infotexts"][0]
        assert back["parameters"]["Seed"] == "11" and back["parameters"]["Prompt"] == FULL_TXT2IMG["prompt"]
        assert (back["parameters"]["Size-1"], back["parameters"]["Size-2"]) == (64, 64)
        # the same request again gives the same picture
        assert txt2img(c)["images"][0] == body["images"][0]


def test_batches_random_seeds_and_variation_seeds(a1111_server: LiveServer, a1111_key: KeyFactory) -> None:
    with basic(a1111_server, a1111_key()) as c:
        body = txt2img(c, seed=-1, n_iter=2, batch_size=2, sampler_name="Euler", steps=8)
        seeds = json.loads(body["info"])["all_seeds"]
        assert len(body["images"]) == 4 and seeds == [seeds[0] + i for i in range(4)] and seeds[0] > 0
        plain = txt2img(c, seed=seeds[1], sampler_name="Euler", steps=8)["images"][0]
        assert max_diff(plain, body["images"][1]) <= 2  # a reported seed reproduces its image (batch float noise)
        varied = txt2img(c, seed=5, subseed=9, subseed_strength=1.0, batch_size=2, sampler_name="Euler", steps=8)
        info = json.loads(varied["info"])
        assert info["all_seeds"] == [5, 5] and info["all_subseeds"] == [9, 10]
        same = txt2img(c, seed=9, sampler_name="Euler", steps=8)["images"][0]
        assert max_diff(varied["images"][0], same) <= 2  # the subseed's own noise


def test_img2img_with_a_data_url_and_inpainting(a1111_server: LiveServer, a1111_key: KeyFactory) -> None:
    with basic(a1111_server, a1111_key()) as c:
        source = decode(txt2img(c, prompt="a large green square on a white background")["images"][0])
        data_url = "data:image/png;base64," + b64_png(source)
        r = c.post("/img2img", json={"init_images": [data_url], "prompt": "a large green square on a white background",
                                     "denoising_strength": 0.2, "width": 64, "height": 64, "steps": 20, "seed": 3,
                                     "include_init_images": False})
        assert r.status_code == 200, r.text
        out = decode(r.json()["images"][0])
        assert checks.read_image(out).background == checks.read_image(source).background
        assert r.json()["parameters"]["init_images"] is None
        # inpaint the right half only: the left half comes back as it was
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (32, 0, 64, 64))
        r = c.post("/img2img", json={"init_images": [b64_png(source)], "mask": b64_png(mask), "mask_blur": 0,
                                     "inpainting_fill": 1, "inpaint_full_res": False, "denoising_strength": 1.0,
                                     "prompt": "a red circle on a black background", "width": 64, "height": 64,
                                     "steps": 20, "seed": 4})
        assert r.status_code == 200, r.text
        painted = decode(r.json()["images"][0])
        left = checks.box_mask(64, 64, (0, 0, 30, 64))
        assert checks.mean_abs_diff(painted, source, left) < 2
        assert checks.mean_abs_diff(painted, source, ~checks.box_mask(64, 64, (0, 0, 34, 64))) > 10


def test_lora_tags_and_embedding_words_change_the_image(a1111_server: LiveServer, a1111_key: KeyFactory) -> None:
    tiny = {"override_settings": {"sd_model_checkpoint": "tiny"}, "width": 64, "height": 64, "steps": 4,
            "sampler_name": "Euler", "seed": 8}
    with basic(a1111_server, a1111_key()) as c:
        plain = txt2img(c, prompt="a cat", **tiny)["images"][0]
        with_lora = txt2img(c, prompt="a cat <lora:tiny-lora:1.0>", **tiny)
        assert with_lora["images"][0] != plain
        assert "<lora:tiny-lora:1>" in json.loads(with_lora["info"])["infotexts"][0]
        zero = txt2img(c, prompt="a cat <lora:tiny-lora:0>", **tiny)["images"][0]
        assert decode(zero).tobytes() == decode(plain).tobytes()
        embedded = txt2img(c, prompt="a tinyemb cat", **tiny)["images"][0]
        assert decode(embedded).tobytes() != decode(txt2img(c, prompt="a word cat", **tiny)["images"][0]).tobytes()
        r = c.post("/txt2img", json={**FULL_TXT2IMG, **tiny, "prompt": "a cat <lora:nope:1>"})
        assert r.status_code == 404 and "nope" in r.json()["errors"]


@pytest.mark.parametrize(("path", "fields", "status", "detail"), [
    ("/txt2img", {"sampler_name": "No Such Sampler"}, 404, "Sampler not found"),
    ("/txt2img", {"script_name": "x/y/z plot"}, 422, "Script 'x/y/z plot' not found"),
    ("/txt2img", {"alwayson_scripts": {"controlnet": {"args": []}}}, 422, "always on script controlnet not found"),
    ("/txt2img", {"restore_faces": True}, 400, "restore_faces"),
    ("/txt2img", {"enable_hr": True}, 400, "latent upscaling"),
    ("/txt2img", {"steps": "many"}, 422, "steps"),
    ("/img2img", {}, 404, "Init image not found"),
    ("/img2img", {"init_images": ["data:image/png;base64,bm90IGFuIGltYWdl"]}, 400, "not a valid PNG"),
    ("/img2img", {"init_images": ["data:image/png,x"]}, 400, "Invalid encoded image"),
])
def test_errors_in_a1111_shape(a1111_server: LiveServer, a1111_key: KeyFactory, path: str, fields: dict[str, Any],
                               status: int, detail: str) -> None:
    with basic(a1111_server, a1111_key()) as c:
        body = {"prompt": "x", "width": 64, "height": 64, "steps": 2, **fields}
        r = c.post(path, json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "detail", "body", "errors"}
    assert detail in r.json()["detail"] + r.json()["errors"]


def test_http_basic_and_its_refusal(a1111_server: LiveServer, a1111_key: KeyFactory) -> None:
    import httpx

    key = a1111_key()
    for auth in (None, ("user", "wrong")):
        r = httpx.get(a1111_server.url + "/sdapi/v1/options", auth=auth)
        assert r.status_code == 401 and r.json() == {"detail": "Incorrect username or password"}
        assert r.headers["www-authenticate"] == "Basic"
    # every dialect takes the key as a Basic password
    assert httpx.get(a1111_server.url + "/v1/user/balance", auth=("me", key)).status_code == 200


def test_options_are_per_tenant(a1111_server: LiveServer, a1111_key: KeyFactory) -> None:
    with basic(a1111_server, a1111_key()) as a, basic(a1111_server, a1111_key()) as b:
        titles = [m["title"] for m in a.get("/sd-models").json()]
        assert {"shapes", "tiny"} <= set(titles)
        assert a.post("/options", json={"sd_model_checkpoint": "tiny", "CLIP_stop_at_last_layers": 2}).json() is None
        assert a.get("/options").json()["sd_model_checkpoint"] == "tiny"
        assert b.get("/options").json()["sd_model_checkpoint"] == "shapes"
        assert json.loads(txt2img(a, steps=2)["info"])["sd_model_name"] == "tiny"
        assert json.loads(txt2img(b, steps=2)["info"])["sd_model_name"] == "shapes"
        r = a.post("/options", json={"sd_model_checkpoint": "missing.safetensors"})
        assert r.status_code == 404 and a.get("/options").json()["sd_model_checkpoint"] == "tiny"
        # override_settings_restore_afterwards false keeps the override (for this tenant)
        txt2img(b, steps=2, override_settings={"sd_model_checkpoint": "tiny"},
                override_settings_restore_afterwards=False)
        assert b.get("/options").json()["sd_model_checkpoint"] == "tiny"


@pytest.mark.parametrize(("route", "kind"), [
    ("samplers", list), ("schedulers", list), ("upscalers", list), ("latent-upscale-modes", list),
    ("sd-models", list), ("sd-vae", list), ("loras", list), ("embeddings", dict), ("hypernetworks", list),
    ("scripts", dict), ("script-info", list), ("prompt-styles", list), ("face-restorers", list), ("memory", dict),
    ("cmd-flags", dict), ("extensions", list), ("options", dict), ("progress", dict), ("realesrgan-models", list),
])
def test_read_routes(a1111_server: LiveServer, a1111_key: KeyFactory, route: str, kind: type) -> None:
    with basic(a1111_server, a1111_key()) as c:
        r = c.get(f"/{route}")
    assert r.status_code == 200 and isinstance(r.json(), kind), r.text
    if route == "samplers":
        assert {"Euler a", "DPM++ 2M", "DDIM"} <= {s["name"] for s in r.json()}
    if route == "loras":
        assert [x["name"] for x in r.json()] == ["tiny-lora"]
    if route == "embeddings":
        assert list(r.json()["loaded"]) == ["tinyemb"]


@pytest.mark.parametrize("route", ["refresh-checkpoints", "refresh-vae", "refresh-loras", "unload-checkpoint",
                                   "reload-checkpoint", "skip", "interrupt"])
def test_control_routes_answer_json(a1111_server: LiveServer, a1111_key: KeyFactory, route: str) -> None:
    with basic(a1111_server, a1111_key()) as c:
        r = c.post(f"/{route}", json={})
    assert r.status_code == 200 and r.json() in (None, {})


def test_extras_upscale(a1111_server: LiveServer, a1111_key: KeyFactory) -> None:
    image = Image.new("RGB", (32, 48), (200, 10, 10))
    with basic(a1111_server, a1111_key()) as c:
        one = c.post("/extra-single-image", json={"image": b64_png(image), "upscaler_1": "Lanczos",
                                                  "upscaling_resize": 2})
        assert one.status_code == 200, one.text
        assert decode(one.json()["image"]).size == (64, 96) and "upscale" in one.json()["html_info"]
        batch = c.post("/extra-batch-images", json={"imageList": [{"data": b64_png(image), "name": "a"}] * 2,
                                                    "resize_mode": 1, "upscaling_resize_w": 64,
                                                    "upscaling_resize_h": 96, "upscaler_1": "None"})
        assert batch.status_code == 200 and [decode(i).size for i in batch.json()["images"]] == [(64, 96)] * 2
        r = c.post("/extra-single-image", json={"image": b64_png(image), "upscaler_1": "SwinIR 4x"})
        assert r.status_code == 404 and "SwinIR 4x" in r.json()["errors"]


def test_progress_preview_and_interrupt(a1111_server: LiveServer, a1111_key: KeyFactory) -> None:
    """A long generation shows progress and a live preview, and an interrupt ends it with no images."""
    key = a1111_key()
    answer: dict[str, Any] = {}

    def long_run() -> None:
        with basic(a1111_server, key) as c:
            answer["r"] = c.post("/txt2img", json={"prompt": "a circle", "width": 256, "height": 256, "steps": 150,
                                                   "sampler_name": "Euler"})

    thread = threading.Thread(target=long_run)
    thread.start()
    with basic(a1111_server, key) as c:
        deadline = time.monotonic() + 120
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline and not seen.get("current_image"):
            seen = c.get("/progress").json()
            time.sleep(0.3)
        assert seen["progress"] > 0 and seen["state"]["sampling_steps"] == 150
        preview = decode(seen["current_image"])
        assert preview.size == (256, 256)
        assert c.post("/interrupt", json={}).json() == {}
    thread.join(120)
    r = answer["r"]
    assert r.status_code == 200 and r.json()["images"] == []


def test_an_existing_client_unmodified(a1111_server: LiveServer, a1111_key: KeyFactory) -> None:
    webuiapi = pytest.importorskip("webuiapi")
    api = webuiapi.WebUIApi(host="127.0.0.1", port=a1111_server.port)
    api.set_auth("user", a1111_key())
    result = api.txt2img(prompt="a yellow triangle on a purple background", width=64, height=64, steps=20, seed=2)
    assert checks.read_image(result.image).background == "purple" and result.info["all_seeds"] == [2]
    again = api.img2img(images=[result.image], prompt="a yellow triangle on a purple background", width=64,
                        height=64, steps=20, denoising_strength=0.2, seed=3)
    assert np.asarray(again.image).shape == (64, 64, 3)
    assert [m["title"] for m in api.get_sd_models()] and api.get_options()["sd_model_checkpoint"] == "shapes"
    api.util_set_model("shapes")  # refresh, list, compare titles, set options: the worker's model switch
