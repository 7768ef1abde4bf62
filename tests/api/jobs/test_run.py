"""`/v1/jobs` end to end with a worker and the tiny model: stages, pixels, SSE, webhooks, cancel."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from standardwebhooks import Webhook

from tests.api.jobs.conftest import KeyFactory, sse_events, txt2img_stages, upload, wait_job
from tests.conftest import REPO, LiveServer
from tests.webhooks.receiver import Receiver

MASK_BOX = (32, 40, 96, 88)  # in the 128x128 upscaled image
SHAPES_READY = (REPO / "src" / "diffusiond" / "bundled" / "shapes" / "model_index.json").is_file()
# Pixel checks run on the tiny random model always, and on the bundled model once it is built.
MODELS = ["tiny", pytest.param("shapes", marks=pytest.mark.skipif(not SHAPES_READY,
                                                                   reason="the bundled shapes model is not built"))]


def mask_png() -> bytes:
    mask = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(mask).rectangle((MASK_BOX[0], MASK_BOX[1], MASK_BOX[2] - 1, MASK_BOX[3] - 1), fill=255)
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue()


def fetch_image(url: str) -> Image.Image:
    r = httpx.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    image.load()
    return image


def upscale_stage(**fields: Any) -> dict[str, Any]:
    return {"type": "IMAGE_TO_UPSCALER", "imageToUpscaler": {"hrUpscaler": "lanczos", **fields}}


def inpaint_stage(mask_id: str) -> dict[str, Any]:
    return {"type": "IMAGE_TO_INPAINT", "imageToInpaint": {
        "maskImageResourceId": mask_id, "maskBlur": 0, "inpaintingFill": "ORIGINAL", "inpaintFullRes": False,
        "inpaintMaskInvert": 0, "diffusion": {"prompts": [{"text": "a green square"}], "steps": "3",
                                              "denoisingStrength": 0.95}}}


@pytest.mark.parametrize("model", MODELS)
def test_generate_upscale_inpaint_with_sse_and_one_signed_terminal_webhook(
        work_server: LiveServer, work_key: KeyFactory, model: str) -> None:
    receiver = Receiver().start()
    try:
        key = work_key(credits=10)
        c = work_server.client(key)
        secret = c.get("/v1/account/webhook-secret").json()["webhookSecret"]
        mask_id = upload(c, mask_png())
        stages = [*txt2img_stages(steps=3, seed=5, model=model), upscale_stage(hrResizeX=128, hrResizeY=128),
                  inpaint_stage(mask_id)]
        job = c.post("/v1/jobs", json={"requestId": f"three-{model}", "stages": stages,
                                       "notifyUrl": receiver.url + "/hook"}).json()["job"]
        events = sse_events(c, job["id"])
        statuses = [e["status"] for e in events]
        assert statuses[-1] == "SUCCESS" and "RUNNING" in statuses
        progress = [e["runningInfo"]["processingImages"][0]["progress"] for e in events if e["status"] == "RUNNING"]
        assert progress == sorted(progress)
        final = events[-1]
        (image,) = final["successInfo"]["images"]
        assert image["meta"]["image"] == {"format": "png", "width": 128, "height": 128}
        assert int(image["expiredIn"]) > time.time() * 1000 and final["successInfo"]["videos"] == []
        assert final["credits"] == pytest.approx(job["credits"])
        out = fetch_image(image["url"])
        assert out.size == (128, 128)

        # The same seed without the inpaint stage: only the masked box may differ.
        before_job = c.post("/v1/jobs", json={"requestId": f"two-{model}", "stages": stages[:3]}).json()["job"]
        before = wait_job(c, before_job["id"], {"SUCCESS", "FAILED"})
        assert before["status"] == "SUCCESS", before
        base = fetch_image(before["successInfo"]["images"][0]["url"])
        diff = np.abs(np.asarray(out, dtype=np.int16) - np.asarray(base.convert("RGB"), dtype=np.int16)).max(-1)
        inside = np.zeros((128, 128), dtype=bool)
        inside[MASK_BOX[1]:MASK_BOX[3], MASK_BOX[0]:MASK_BOX[2]] = True
        assert int(diff[~inside].max()) <= 1 and float(diff[inside].mean()) > 5

        # Webhooks: every status change, one terminal, all signed with the tenant's secret.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any('"SUCCESS"' in r.body for r in receiver.snapshot()):
            time.sleep(0.1)
        time.sleep(1.0)
        got = [Webhook(secret).verify(r.body, r.headers) for r in receiver.snapshot()]
        assert [g["data"]["job"]["status"] for g in got if g["data"]["job"]["id"] == job["id"]].count("SUCCESS") == 1
        assert {g["type"] for g in got} == {"job.queued", "job.running", "job.succeeded"}
        terminal = next(g for g in got if g["type"] == "job.succeeded")["data"]["job"]
        assert fetch_image(terminal["successInfo"]["images"][0]["url"]).size == (128, 128)
    finally:
        receiver.stop()


def test_output_urls_are_signed_and_tenant_bound(work_server: LiveServer, work_key: KeyFactory) -> None:
    c = work_server.client(work_key())
    job = c.post("/v1/jobs", json={"requestId": "u", "stages": txt2img_stages(steps=2)}).json()["job"]
    done = wait_job(c, job["id"], {"SUCCESS", "FAILED"})
    url = done["successInfo"]["images"][0]["url"]
    assert fetch_image(url).size == (64, 64)
    mine = c.get("/v1/account/webhook-secret").json()["tenantId"]
    theirs = work_server.client(work_key()).get("/v1/account/webhook-secret").json()["tenantId"]
    expires = url.split("&e=")[1].split("&")[0]
    # A bad signature, another tenant's URL and a changed expiry: one answer, 404 in the /v1/jobs shape.
    for bad in (url.replace("&s=", "&s=A"), url.replace(f"t={mine}", f"t={theirs}"),
                url.replace(f"&e={expires}", f"&e={int(expires) + 1}"), url.replace("&s=", "&s=%C3%A9")):
        r = httpx.get(bad)
        assert r.status_code == 404 and r.json()["details"][0]["reason"] == "not_found", r.text


def test_upscaler_scale_with_a_second_pass_and_adetailer(work_server: LiveServer, work_key: KeyFactory) -> None:
    c = work_server.client(work_key())
    stages = [*txt2img_stages(steps=2), upscale_stage(hrScale="1.5", hrSecondPassSteps="2", denoisingStrength=0.3),
              {"type": "IMAGE_TO_ADETAILER", "imageToAdetailer": {"args": [{
                  "adModel": "shapes", "adPrompt": [{"text": "a yellow star"}], "adConfidence": 0.0,
                  "adUseSteps": "true", "adSteps": "2", "adDenoisingStrength": 0.5}]}}]
    job = c.post("/v1/jobs", json={"requestId": "s", "stages": stages}).json()["job"]
    done = wait_job(c, job["id"], {"SUCCESS", "FAILED"})
    assert done["status"] == "SUCCESS", done
    assert fetch_image(done["successInfo"]["images"][0]["url"]).size == (96, 96)


@pytest.mark.parametrize("model", MODELS)
def test_adetailer_on_an_uploaded_picture_repaints_only_the_shapes(
        work_server: LiveServer, work_key: KeyFactory, model: str) -> None:
    picture = Image.new("RGB", (64, 64), (30, 60, 200))
    ImageDraw.Draw(picture).rectangle((10, 12, 30, 28), fill=(230, 220, 40))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    c = work_server.client(work_key())
    rid = upload(c, buf.getvalue())
    stages = [{"type": "INPUT_INITIALIZE", "inputInitialize": {"imageResourceId": rid, "seed": 9}},
              {"type": "DIFFUSION", "diffusion": {"prompts": [{"text": "x"}], "denoisingStrength": 0, "steps": 2,
                                                  "sdModel": model}},
              {"type": "IMAGE_TO_ADETAILER", "imageToAdetailer": {"args": [{
                  "adModel": "shapes", "adPrompt": [{"text": "a red circle"}], "adDilateErode": 2,
                  "adDenoisingStrength": 0.9, "adInpaintOnlyMaskedPadding": 8}]}}]
    job = c.post("/v1/jobs", json={"requestId": "ad", "stages": stages}).json()["job"]
    done = wait_job(c, job["id"], {"SUCCESS", "FAILED"})
    assert done["status"] == "SUCCESS", done
    out = fetch_image(done["successInfo"]["images"][0]["url"])
    diff = np.abs(np.asarray(out.convert("RGB"), dtype=np.int16) - np.asarray(picture, dtype=np.int16)).max(-1)
    region = np.zeros((64, 64), dtype=bool)
    grow = 2 + 3 * 4  # dilation 2, then a Gaussian mask blur of radius 4 (A1111's default) fades out by 3 radii
    region[max(12 - grow, 0): 29 + grow, max(10 - grow, 0): 31 + grow] = True
    assert int(diff[~region].max()) <= 1 and float(diff[12:29, 10:31].mean()) > 5


def test_cancel_a_running_job_stops_it_and_releases_credits(work_server: LiveServer, work_key: KeyFactory) -> None:
    key = work_key(credits=100)
    c = work_server.client(key)
    start = c.get("/v1/user/balance").json()["credits"]
    long = c.post("/v1/jobs", json={"requestId": "long",
                                    "stages": txt2img_stages(size=128, steps=150, count=2)}).json()["job"]
    queued = c.post("/v1/jobs", json={"requestId": "next", "stages": txt2img_stages(steps=2)}).json()["job"]
    running = wait_job(c, long["id"], {"RUNNING"}, timeout=60)
    deadline = time.monotonic() + 60
    while running["runningInfo"]["processingImages"][0]["progress"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        running = c.get(f"/v1/jobs/{long['id']}").json()["job"]
    assert len(running["runningInfo"]["processingImages"]) == 2
    waiting = c.get(f"/v1/jobs/{queued['id']}").json()["job"]
    assert waiting["status"] == "WAITING" and waiting["waitingInfo"]["queueRank"] == "1"
    c.post(f"/v1/jobs/{long['id']}/cancel")
    t0 = time.monotonic()
    done = wait_job(c, long["id"], {"CANCELED", "SUCCESS", "FAILED"}, timeout=30)
    assert done["status"] == "CANCELED" and time.monotonic() - t0 < 15
    assert wait_job(c, queued["id"], {"SUCCESS", "FAILED"})["status"] == "SUCCESS"
    spent = c.get(f"/v1/jobs/{queued['id']}").json()["job"]["credits"]
    assert c.get("/v1/user/balance").json()["credits"] == pytest.approx(start - spent)
