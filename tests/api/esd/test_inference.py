"""Inference jobs in the seed's own form: A1111 fields through the shared translation, img2img,
hypernetworks, refusals, failures, outputs and the `/inference` error shape."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.api.esd.conftest import Esd, KeyFactory, picture
from tests.api.esd.test_client_sequences import upload_extras

BASE = {"task_type": "txt2img", "prompt": "a red circle", "width": 64, "height": 64, "steps": 3, "seed": 77,
        "sampler_index": "Euler"}


@pytest.fixture(scope="module")
def ready(esd: Esd, endpoint: str, model_files: dict[str, Path]) -> str:
    upload_extras(esd, model_files)
    return endpoint


def run(esd: Esd, endpoint: str, path: str = "inference/run-sagemaker-inference", **fields: Any) -> dict[str, Any]:
    r = esd.post(path, {**BASE, "sagemaker_endpoint": endpoint, **fields})
    assert r.status_code == 200 and r.json()["status"] == "inprogress", r.text
    job = esd.wait_job(r.json()["inference_id"])
    assert job["status"] == "succeed", job
    return job


def images(esd: Esd, job: dict[str, Any]) -> list[bytes]:
    return [httpx.get(u).content for u in esd.get("inference/get-inference-job-image-output",
                                                  jobID=job["InferenceJobId"]).json()]


def info(esd: Esd, job: dict[str, Any]) -> dict[str, Any]:
    url, = esd.get("inference/get-inference-job-param-output", jobID=job["InferenceJobId"]).json()
    return dict(json.loads(json.loads(httpx.get(url).content)["info"]))


def test_the_seed_body_with_a1111_fields(esd: Esd, ready: str) -> None:
    job = run(esd, ready, path="api/inference/run-sagemaker-inference", stable_diffusion_model=["tiny"],
              negative_prompt="blurry", cfg_scale=5.5, batch_size=2, n_iter=2, subseed=9, subseed_strength=0.3,
              seed_resize_from_h=-1, seed_resize_from_w=-1, tiling=True, restore_faces=False,
              denoising_strength=0.75, override_settings={"this": "is ignored, as the seed says"}, script_args=[],
              script_name="", enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos", hr_second_pass_steps=2,
              firstphase_width=0, firstphase_height=0, hr_resize_x=0, hr_resize_y=0)
    assert job["taskType"] == "txt2img" and len(job["image_names"]) == 4
    shot = [Image.open(io.BytesIO(b)) for b in images(esd, job)]
    assert {(i.format, i.size) for i in shot} == {("JPEG", (96, 96))}  # hires fix at 1.5x
    details = info(esd, job)
    assert details["all_seeds"] == [77] * 4 and details["subseed"] == 9 and details["subseed_strength"] == 0.3
    assert details["negative_prompt"] == "blurry" and details["cfg_scale"] == 5.5 and details["steps"] == 3
    assert details["sampler_name"] == "Euler"


def test_img2img_from_a_base64_image(esd: Esd, ready: str) -> None:
    init = "data:image/png;base64," + base64.b64encode(picture((10, 200, 30), size=80)).decode()
    job = run(esd, ready, task_type="img2img", init_images=[init], denoising_strength=0.5, resize_mode=1)
    assert job["taskType"] == "img2img"
    assert Image.open(io.BytesIO(images(esd, job)[0])).size == (64, 64)
    url, = esd.get("inference/get-inference-job-param-output", jobID=job["InferenceJobId"]).json()
    params = json.loads(httpx.get(url).content)["parameters"]
    assert params["init_images"] is None and params["denoising_strength"] == 0.5  # as A1111 echoes it


def test_hypernetworks_apply_to_the_job(esd: Esd, ready: str) -> None:
    plain = images(esd, run(esd, ready))
    listed = images(esd, run(esd, ready, hypernetwork_model=["tinyhn.safetensors"]))
    tagged = images(esd, run(esd, ready, prompt="a red circle <hypernet:tinyhn:1>"))
    off = images(esd, run(esd, ready, prompt="a red circle <hypernet:tinyhn:0>"))
    assert listed != plain and tagged == listed and off == plain


def test_refusals_name_the_field(esd: Esd, ready: str, esd_keys: KeyFactory) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"controlnet_model": ["canny.safetensors"]}, 400, "controlnet_model"),
        ({"ControlNet": {"canny.safetensors": "s3://x"}, "Stable-diffusion": {"tiny": "s3://x"}, "prompt": "x"},
         400, "controlnet_model"),
        ({"task_type": "interrogate_clip"}, 400, "task_type"),
        ({"sagemaker_endpoint": ""}, 400, "sagemaker_endpoint"),
        ({"steps": "many"}, 400, "steps"),
        ({"sampler_index": "Nope"}, 400, "Sampler not found"),
        ({"stable_diffusion_model": ["v1-5-pruned-emaonly.safetensors"]}, 400, "v1-5-pruned-emaonly"),
        ({"lora_model": ["missing-lora"]}, 400, "missing-lora"),
        ({"prompt": "x <lora:missing:1>"}, 400, "missing"),
        ({"hypernetwork_model": ["missing-hn"]}, 400, "missing-hn"),
        ({"styles": ["no-such-style"]}, 400, "no-such-style"),
        ({"width": 65}, 400, "width"),
    ]
    for fields, status, words in cases:
        r = esd.post("inference/run-sagemaker-inference", {**BASE, "sagemaker_endpoint": ready, **fields})
        assert r.status_code == status and words in r.json()["detail"], (fields, r.text)
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    r = esd.http.post(esd.url("inference/run-sagemaker-inference"), content=b"[")
    assert r.status_code == 400 and "detail" in r.json()
    # the client's form with no uploaded config: nothing to run
    fresh = Esd(esd.live, esd_keys())
    r = fresh.post("inference/run-sagemaker-inference", {"Stable-diffusion": {"tiny": "s3://x"}, "Lora": {},
                                                         "sagemaker_endpoint": ready, "task_type": "txt2img"})
    assert r.status_code == 400 and "aigc.json" in r.json()["detail"]


def test_lookups_of_jobs_and_upload_urls(esd: Esd, ready: str) -> None:
    r = esd.get("inference/get-inference-job", jobID="nope")
    assert r.status_code == 404 and r.json() == {"detail": "There is no inference job info item for id: nope"}
    assert esd.get("inference/get-inference-job").status_code == 404
    assert esd.get("inference/get-inference-job-image-output", jobID="nope").json() == []
    assert esd.get("inference/get-inference-job-image-output").json() == []
    assert esd.get("inference/get-inference-job-param-output", jobID="nope").json() == []
    r = esd.get("inference/generate-s3-presigned-url-for-uploading")
    assert r.status_code == 400 and r.json() == {"detail": "Key parameter is required"}
    for key in ("../x.json", "/etc/passwd", "a//b", "a/../../b"):
        assert esd.get("inference/generate-s3-presigned-url-for-uploading", key=key).status_code == 400
    url = esd.get("inference/generate-s3-presigned-url-for-uploading", key="notes/a.json").json()
    assert httpx.put(url, content=b"{}", headers={"Content-Type": "application/json"}).status_code == 401
    assert httpx.put(url, content=b"{}", headers={"Content-Type": "text/plain;charset=UTF-8"}).status_code == 200


def test_a_job_that_fails_on_its_worker_reads_failed(esd: Esd, ready: str) -> None:
    # the tiny LoRA does not fit the bundled shapes model: translation passes, the worker refuses it
    r = esd.post("inference/run-sagemaker-inference", {**BASE, "sagemaker_endpoint": ready,
                                                       "stable_diffusion_model": ["shapes"],
                                                       "prompt": "a red circle <lora:tinylora:1>"})
    assert r.status_code == 200, r.text
    job = esd.wait_job(r.json()["inference_id"])
    assert job["status"] == "failed" and "LoRA" in job["error"] and "completeTime" in job
    assert esd.get("inference/get-inference-job-image-output", jobID=job["InferenceJobId"]).json() == []
