"""`/v1/jobs` contract on a server without workers: shapes, errors, queue, cancel, idempotency."""

from __future__ import annotations

import copy
import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.api.jobs.conftest import KeyFactory, key_factory, png_bytes, txt2img_stages, upload
from tests.conftest import LiveServer


def client(server: LiveServer, key: str) -> httpx.Client:
    return server.client(key)


def submit(c: httpx.Client, request_id: str, stages: list[dict[str, Any]] | None = None,
           **extra: Any) -> httpx.Response:
    body = {"requestId": request_id, "stages": txt2img_stages() if stages is None else stages, **extra}
    return c.post("/v1/jobs", json=body)


def assert_error(r: httpx.Response, status: int, reason: str, mentions: str = "") -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message", "details"} and isinstance(body["code"], int)
    assert body["details"][0]["@type"].endswith("ErrorInfo")
    assert body["details"][0]["reason"] == reason, body
    assert mentions in body["message"], body["message"]


def balance(server: LiveServer, key: str) -> float:
    r = server.client(key).get("/v1/user/balance")
    return float(r.json()["credits"])


def test_create_get_and_list(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    key = queue_key(credits=10)
    c = client(queue_server, key)
    first = submit(c, "a").json()["job"]
    second = submit(c, "b", txt2img_stages(count=2)).json()["job"]
    assert first["status"] == "WAITING" and set(first["waitingInfo"]) == {"queueRank", "queueLen"}
    assert int(second["waitingInfo"]["queueRank"]) == int(first["waitingInfo"]["queueRank"]) + 1
    assert second["credits"] == pytest.approx(2 * first["credits"]) and first["credits"] > 0
    got = c.get(f"/v1/jobs/{first['id']}").json()["job"]
    assert got["id"] == first["id"] and got["requestId"] == "a" and got["status"] == "WAITING"
    listed = c.get("/v1/jobs").json()
    assert [j["id"] for j in listed["jobs"]] == [second["id"], first["id"]] and listed["total"] == 2
    page = c.get("/v1/jobs", params={"pageSize": 1}).json()
    assert [j["id"] for j in page["jobs"]] == [second["id"]] and page["nextPageToken"]
    rest = c.get("/v1/jobs", params={"pageSize": 1, "pageToken": page["nextPageToken"]}).json()
    assert [j["id"] for j in rest["jobs"]] == [first["id"]] and "nextPageToken" not in rest
    c.post(f"/v1/jobs/{first['id']}/cancel")
    canceled = c.get("/v1/jobs", params={"status": "CANCELED"}).json()
    assert [j["id"] for j in canceled["jobs"]] == [first["id"]]
    assert [j["id"] for j in c.get("/v1/jobs", params={"status": "WAITING"}).json()["jobs"]] == [second["id"]]
    assert balance(queue_server, key) == pytest.approx(10 - second["credits"])


def test_cancel_queued_releases_credits(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    key = queue_key(credits=5)
    c = client(queue_server, key)
    job = submit(c, "c1").json()["job"]
    assert balance(queue_server, key) == pytest.approx(5 - job["credits"])
    answer = c.post(f"/v1/jobs/{job['id']}/cancel").json()
    done = answer["job"]
    assert answer["jobId"] == job["id"]
    assert done["status"] == "CANCELED" and done["failedInfo"]["code"] == "CANCELED" and done["credits"] == 0
    assert balance(queue_server, key) == pytest.approx(5)
    assert c.post(f"/v1/jobs/{job['id']}/cancel").json()["job"]["status"] == "CANCELED"  # idempotent
    assert c.delete(f"/v1/jobs/{job['id']}").status_code == 200


def test_credits_endpoint_prices_without_running(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    key = queue_key(credits=5)
    c = client(queue_server, key)
    price = c.post("/v1/jobs/credits", json={"stages": txt2img_stages(count=3, steps=10)}).json()["credits"]
    assert price > 0 and balance(queue_server, key) == pytest.approx(5)
    assert c.get("/v1/jobs").json()["total"] == 0
    job = submit(c, "p", txt2img_stages(count=3, steps=10)).json()["job"]
    assert job["credits"] == pytest.approx(price)


def test_idempotency(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    key = queue_key(credits=5)
    c = client(queue_server, key)
    a = submit(c, "same").json()["job"]
    # The same body spelled differently (numbers as numbers, snake_case) is the same request.
    stages = txt2img_stages()
    stages[1] = {"type": "DIFFUSION", "diffusion": {"width": 64, "height": 64, "prompts": [{"text": "a red circle"}],
                                                    "sd_model": "tiny", "steps": 2, "cfg_scale": 5}}
    stages[0]["inputInitialize"] = {"seed": 7, "count": 1}
    assert submit(c, "same", stages).json()["job"]["id"] == a["id"]
    assert_error(submit(c, "same", txt2img_stages(prompt="a blue square")), 409, "idempotency_conflict", "same")
    # Another tenant may use the same requestId.
    other = client(queue_server, queue_key(credits=5))
    assert submit(other, "same").json()["job"]["id"] != a["id"]
    assert balance(queue_server, key) == pytest.approx(5 - a["credits"])


BACKENDS = ["queue_server", pytest.param("pg_queue_server", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_twenty_concurrent_identical_submissions_make_one_job_and_one_charge(
        backend: str, request: pytest.FixtureRequest) -> None:
    queue_server: LiveServer = request.getfixturevalue(backend)
    queue_key = next(key_factory(queue_server))
    key = queue_key(credits=5)

    def one(_: int) -> str:
        with client(queue_server, key) as c:
            r = submit(c, "race")
            assert r.status_code == 200, r.text
            return str(r.json()["job"]["id"])

    with ThreadPoolExecutor(20) as pool:
        ids = set(pool.map(one, range(20)))
    assert len(ids) == 1
    c = client(queue_server, key)
    assert c.get("/v1/jobs").json()["total"] == 1
    job = c.get(f"/v1/jobs/{ids.pop()}").json()["job"]
    assert balance(queue_server, key) == pytest.approx(5 - job["credits"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_balance_never_goes_negative_under_concurrent_submissions(
        backend: str, request: pytest.FixtureRequest) -> None:
    queue_server: LiveServer = request.getfixturevalue(backend)
    queue_key = next(key_factory(queue_server))
    c = client(queue_server, queue_key(credits=1))
    price = c.post("/v1/jobs/credits", json={"stages": txt2img_stages(size=256, steps=30)}).json()["credits"]
    key = queue_key(credits=price * 3.5)

    def one(i: int) -> int:
        with client(queue_server, key) as cc:
            return submit(cc, f"n{i}", txt2img_stages(size=256, steps=30)).status_code

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(one, range(10)))
    assert sorted(codes) == [200] * 3 + [402] * 7
    assert balance(queue_server, key) == pytest.approx(price * 0.5)


@pytest.mark.parametrize(("patch", "status", "reason", "mentions"), [
    ({"inputInitialize": {"count": "0"}}, 400, "invalid_samples", "count"),
    ({"inputInitialize": {"count": 99}}, 400, "invalid_samples", "count"),
    ({"inputInitialize": {"count": "many"}}, 400, "invalid_samples", "count"),
    ({"diffusion": {"width": "60"}}, 400, "invalid_height_or_width", "increments"),
    ({"diffusion": {"height": "wide"}}, 400, "invalid_height_or_width", "height"),
    ({"diffusion": {"enableElla": True}}, 400, "unsupported_feature", "enableElla"),
    ({"diffusion": {"useHunyuanDit": True}}, 400, "unsupported_feature", "useHunyuanDit"),
    ({"diffusion": {"enablePix2pix": True}}, 400, "unsupported_feature", "enablePix2pix"),
    ({"diffusion": {"layerDiffusion": {"enable": True, "weight": 1}}}, 400, "unsupported_feature", "layerDiffusion"),
    ({"diffusion": {"animateDiff": {"args": [{"videoLength": 16, "fps": 8}]}}}, 400, "unsupported_feature",
     "animateDiff"),
    ({"diffusion": {"controlnet": {"args": [{"preprocessor": "canny"}]}}}, 400, "unsupported_feature", "controlnet"),
    ({"diffusion": {"clipEncoderName": "t5"}}, 400, "unsupported_feature", "clipEncoderName"),
    ({"diffusion": {"lora": {"items": [{"loraModel": "tiny", "blockWeight": "1,0"}]}}}, 400, "unsupported_feature",
     "blockWeight"),
    ({"diffusion": {"lora": {"items": [{"loraModel": "no-such-lora"}]}}}, 400, "invalid_model", "no-such-lora"),
    ({"diffusion": {"sdModel": "no-such-model"}}, 400, "invalid_model", "no-such-model"),
    ({"diffusion": {"sdVae": "animevae.pt"}}, 400, "invalid_model", "animevae.pt"),
    ({"diffusion": {"sampler": "DPM fast"}}, 400, "invalid_sampler", "DPM fast"),
    ({"diffusion": {"steps": 1000}}, 400, "invalid_steps", "steps"),
    ({"diffusion": {"prompts": []}}, 400, "invalid_prompts", "prompts"),
    ({"diffusion": {"cfgScal": 7}}, 400, "unknown_field", "cfgScal"),
])
def test_invalid_requests_are_refused_and_change_nothing(
        queue_server: LiveServer, queue_key: KeyFactory, patch: dict[str, Any], status: int, reason: str,
        mentions: str) -> None:
    key = queue_key(credits=5)
    c = client(queue_server, key)
    stages = copy.deepcopy(txt2img_stages())
    for block, fields in patch.items():
        target = stages[0] if block == "inputInitialize" else stages[1]
        target[block].update(fields)  # type: ignore[attr-defined]
    assert_error(submit(c, "bad", stages), status, reason, mentions)
    assert c.get("/v1/jobs").json()["total"] == 0 and balance(queue_server, key) == pytest.approx(5)


@pytest.mark.parametrize(("stages", "reason", "mentions"), [
    ([{"type": "IMAGE_TO_ANIMATE_DIFF", "imageToAnimateDiff": {}}], "unsupported_feature", "IMAGE_TO_ANIMATE_DIFF"),
    ([{"type": "DIFFUSION", "imageToUpscaler": {}}], "invalid_params", "stages[0]"),
    ([{"type": "IMAGE_TO_UPSCALER", "imageToUpscaler": {"hrScale": 2}}], "missing_input_image", "needs an image"),
    ([{"type": "INPUT_INITIALIZE", "inputInitialize": {"seed": 1}}], "invalid_params", "stages"),
    ([], "invalid_params", "stages"),
])
def test_invalid_stage_lists(queue_server: LiveServer, queue_key: KeyFactory, stages: list[dict[str, Any]],
                             reason: str, mentions: str) -> None:
    assert_error(submit(client(queue_server, queue_key()), "bad", stages), 400, reason, mentions)


def test_adetailer_and_upscaler_names_are_checked(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    c = client(queue_server, queue_key())
    ad = {"type": "IMAGE_TO_ADETAILER", "imageToAdetailer": {"args": [{"adModel": "face_yolov8n.pt"}]}}
    assert_error(submit(c, "ad", [*txt2img_stages(), ad]), 400, "invalid_model", "face_yolov8n.pt")
    ad["imageToAdetailer"]["args"][0] = {"adModel": "shapes", "adUseNoiseMultiplier": "true"}  # type: ignore[index]
    assert_error(submit(c, "ad2", [*txt2img_stages(), ad]), 400, "unsupported_feature", "adUseNoiseMultiplier")
    up = {"type": "IMAGE_TO_UPSCALER", "imageToUpscaler": {"hrUpscaler": "4x-UltraSharp", "hrScale": 2}}
    assert_error(submit(c, "up", [*txt2img_stages(), up]), 400, "invalid_model", "4x-UltraSharp")
    ok_ad = {"type": "IMAGE_TO_ADETAILER", "imageToAdetailer": {"args": [{
        "adModel": "shapes", "adPrompt": [{"text": "a green square"}], "adConfidence": 0.3, "adDilateErode": "4",
        "adMaskMergeInvert": "Merge", "adDenoisingStrength": 0.5, "adInpaintOnlyMasked": "true",
        "adUseSteps": "true", "adSteps": "3", "adUseCfgScale": "false", "adCfgScale": 0}]}}
    ok_up = {"type": "IMAGE_TO_UPSCALER", "imageToUpscaler": {"hrUpscaler": "lanczos", "hrResizeX": 128,
                                                              "hrResizeY": 96, "hrSecondPassSteps": "2",
                                                              "denoisingStrength": 0.3}}
    r = submit(c, "ok", [*txt2img_stages(), ok_up, ok_ad])
    assert r.status_code == 200, r.text


def test_notify_url_is_checked_at_submit(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    c = client(queue_server, queue_key())
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://[::1]/hook",
                "http://192.168.0.1/", "gopher://example.com/"):
        assert_error(submit(c, "n", notifyUrl=url), 400, "invalid_notify_url", "notifyUrl")
    assert c.get("/v1/jobs").json()["total"] == 0
    # 127.0.0.1 is on this server's DIFFUSIOND_WEBHOOK_ALLOW_HOSTS (the receivers of the tests).
    assert submit(c, "n", notifyUrl="http://127.0.0.1:9/hook").status_code == 200


def test_auth_and_tenancy(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    r = httpx.post(queue_server.url + "/v1/jobs", json={"requestId": "x", "stages": txt2img_stages()})
    assert_error(r, 401, "unauthorized")
    mine = client(queue_server, queue_key())
    job = submit(mine, "t").json()["job"]
    theirs = client(queue_server, queue_key())
    assert_error(theirs.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert_error(theirs.post(f"/v1/jobs/{job['id']}/cancel"), 404, "not_found")
    assert_error(theirs.get(f"/v1/jobs/{job['id']}/events"), 404, "not_found")
    assert theirs.get("/v1/jobs").json()["total"] == 0
    assert_error(submit(client(queue_server, queue_key(credits=0)), "poor"), 402, "insufficient_credits")


def test_admin_endpoints(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    user = queue_key(credits=1)
    uc = client(queue_server, user)
    mine = uc.get("/v1/account/webhook-secret").json()
    assert mine["webhookSecret"].startswith("whsec_")
    assert_error(uc.post(f"/v1/admin/tenants/{mine['tenantId']}/credits", json={"credits": 5}), 403,
                 "permission_denied")
    admin = client(queue_server, queue_key(admin=True))
    r = admin.post(f"/v1/admin/tenants/{mine['tenantId']}/credits", json={"credits": 5})
    assert r.json() == {"tenantId": mine["tenantId"], "credits": 6.0}
    rotated = admin.post(f"/v1/admin/tenants/{mine['tenantId']}/webhook-secret/rotate").json()
    assert rotated["webhookSecret"] != mine["webhookSecret"]
    assert uc.get("/v1/account/webhook-secret").json()["webhookSecret"] == rotated["webhookSecret"]
    assert_error(admin.post("/v1/admin/tenants/tenant-nope/webhook-secret/rotate"), 404, "not_found")


# ---- resources -----------------------------------------------------------------------------------


def test_two_step_upload_then_img2img(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    c = client(queue_server, queue_key())
    created = c.post("/v1/resource/image", json={"expireSec": 600}).json()
    assert created["status"] == "PENDING" and created["putUrl"] and created["headers"]["Content-Type"]
    put = httpx.put(created["putUrl"], content=png_bytes((64, 48), fmt="JPEG"), headers={"Content-Type": "image/jpeg"})
    assert put.status_code == 200, put.text
    assert put.json()["meta"]["image"] == {"format": "png", "width": 64, "height": 48}
    again = httpx.put(created["putUrl"], content=png_bytes(), headers={"Content-Type": "image/png"})
    assert_error(again, 400, "resource_uploaded")
    stages = [{"type": "INPUT_INITIALIZE", "inputInitialize": {"imageResourceId": created["resourceId"]}},
              {"type": "DIFFUSION", "diffusion": {"prompts": [{"text": "x"}], "denoisingStrength": 0.5,
                                                  "steps": 2}}]
    job = submit(c, "i2i", stages)
    assert job.status_code == 200, job.text
    # Another tenant cannot use the resource.
    other = client(queue_server, queue_key())
    assert_error(submit(other, "i2i", stages), 400, "invalid_resource", created["resourceId"])
    assert_error(other.get(f"/v1/resource/image/{created['resourceId']}"), 404, "not_found")


def test_put_url_signature_is_checked(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    c = client(queue_server, queue_key())
    url = c.post("/v1/resource/image").json()["putUrl"]
    for bad in (url.replace("&s=", "&s=x"), url.replace("&e=", "&e=1"), url.split("?")[0]):
        r = httpx.put(bad, content=png_bytes())
        assert r.status_code in (400, 401), r.text


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge image, with a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("data", "mime", "status", "reason"), [
    (png_bytes(), "image/jpeg", 400, "invalid_mime_type"),
    (b"GIF89a" + b"\x00" * 100, "image/gif", 400, "invalid_mime_type"),
    (b"not an image at all", "image/png", 400, "invalid_mime_type"),
    (bomb_png(30000, 30000), "image/png", 400, "invalid_image_dimensions"),
    (png_bytes((4100, 8)), "image/png", 400, "invalid_image_dimensions"),
    (b"\x89PNG" + b"\x00" * (10 * 1024 * 1024), "image/png", 413, "invalid_file_size"),
])
def test_hostile_uploads_are_refused(queue_server: LiveServer, queue_key: KeyFactory, data: bytes, mime: str,
                                     status: int, reason: str) -> None:
    c = client(queue_server, queue_key())
    assert_error(c.post("/v1/resource/image/upload", files={"file": ("f", data, mime)}), status, reason)
    tenant = c.get("/v1/account/webhook-secret").json()["tenantId"]
    services = queue_server.services()
    try:
        from diffusiond.store.tables import ResourceRow

        with services.db.session() as s:  # a refused one-step upload leaves nothing behind
            assert s.query(ResourceRow).filter(ResourceRow.tenant_id == tenant).count() == 0
    finally:
        services.db.dispose()
    url = c.post("/v1/resource/image").json()["putUrl"]
    assert_error(httpx.put(url, content=data, headers={"Content-Type": mime}), status, reason)


def test_uploads_are_reencoded(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("secret", "x" * 100)
    buf = io.BytesIO()
    Image.new("RGB", (40, 32), (1, 2, 3)).save(buf, format="PNG", pnginfo=info)
    c = client(queue_server, queue_key())
    for data, mime in ((buf.getvalue(), "image/png"), (png_bytes(fmt="WEBP"), "image/webp")):
        rid = upload(c, data, mime)
        services = queue_server.services()
        try:
            from diffusiond.store.tables import ResourceRow

            with services.db.session() as s:
                row = s.get(ResourceRow, rid)
                assert row is not None and row.blob_key is not None
                stored = services.blobs.get(row.blob_key)
        finally:
            services.db.dispose()
        img = Image.open(io.BytesIO(stored))
        assert img.format == "PNG" and "secret" not in img.info


def test_lora_and_embedding_items_become_refs(queue_server: LiveServer, queue_key: KeyFactory,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    from diffusiond.domain.models import ModelKind
    from diffusiond.domain.params import EmbeddingRef, LoraMix, LoraRef, Txt2Img
    from diffusiond.domain.spec_codec import spec_from_json
    from diffusiond.store.tables import JobRow
    from diffusiond.testing.tiny_models import save_tiny_embedding, save_tiny_lora

    root = tmp_path_factory.mktemp("adapters")
    services = queue_server.services()
    try:
        services.models.add(save_tiny_lora(root / "l.safetensors"), "style-lora", ModelKind.LORA, family="tiny",
                            replace=True)
        services.models.add(save_tiny_embedding(root / "e.safetensors"), "emb-x", ModelKind.EMBEDDING,
                            family="tiny", replace=True)
        c = client(queue_server, queue_key())
        stages = txt2img_stages()
        stages[1]["diffusion"].update({  # type: ignore[attr-defined]
            "lora": {"items": [{"loraModel": "style-lora", "weight": "0.7"}]},
            "embedding": {"items": [{"model": "emb-x"}]}, "sampler": "DPM++ 2M Karras", "clipSkip": 2})
        job = submit(c, "lora", stages).json()["job"]
        with services.db.session() as s:
            row = s.get(JobRow, job["id"])
            assert row is not None
            spec = spec_from_json(row.spec)
        stage = spec.stages[0]
        assert isinstance(stage, Txt2Img)
        assert stage.diffusion.loras == (LoraRef("style-lora", 0.7),)
        assert stage.diffusion.embeddings == (EmbeddingRef("emb-x", token="emb-x"),)
        assert (stage.diffusion.sampler.value, stage.diffusion.schedule.value) == ("K_DPMPP_2M", "karras")  # type: ignore[union-attr]
        assert stage.diffusion.clip_skip == 2 and spec.seed == 7
        assert stage.diffusion.lora_mix is LoraMix.MERGED  # A1111's way unless asked
        stages[1]["diffusion"]["lora"]["mix"] = "composed"  # type: ignore[index]
        job = submit(c, "lora-composed", stages).json()["job"]
        with services.db.session() as s:
            row = s.get(JobRow, job["id"])
            assert row is not None
            composed = spec_from_json(row.spec).stages[0]
        assert isinstance(composed, Txt2Img) and composed.diffusion.lora_mix is LoraMix.COMPOSED
        stages[1]["diffusion"]["lora"]["mix"] = "blend"  # type: ignore[index]
        assert_error(submit(c, "lora-blend", stages), 400, "invalid_params", "mix")
    finally:
        services.db.dispose()


def test_oversized_and_malformed_bodies(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    c = client(queue_server, queue_key())
    huge = {"requestId": "h", "stages": txt2img_stages(prompt="x" * 20000) * 100}
    assert_error(c.post("/v1/jobs", json=huge), 413, "invalid_file_size", "body")
    r = c.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_params", "JSON")
    assert_error(c.post("/v1/jobs", json={"stages": txt2img_stages()}), 400, "invalid_params", "requestId")


def test_openapi_documents_the_seed_request_body(queue_server: LiveServer) -> None:
    spec = httpx.get(queue_server.url + "/openapi.json").json()
    body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"requestId", "stages", "notifyUrl"} and "requestId" in body["required"]
    stage = body["properties"]["stages"]["items"]["properties"]
    assert {"inputInitialize", "diffusion", "imageToUpscaler", "imageToAdetailer", "imageToInpaint"} <= set(stage)
    for path in ("/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/events", "/v1/jobs/credits",
                 "/v1/resource/image", "/v1/resource/image/upload"):
        assert path in spec["paths"]


def test_upscaler_names_and_scale_precedence(queue_server: LiveServer, queue_key: KeyFactory) -> None:
    c = client(queue_server, queue_key())

    def price(**fields: Any) -> float:
        stage = {"type": "IMAGE_TO_UPSCALER", "imageToUpscaler": fields}
        r = c.post("/v1/jobs/credits", json={"stages": [*txt2img_stages(), stage]})
        assert r.status_code == 200, r.text
        return float(r.json()["credits"])

    by_scale = price(hrUpscaler="Lanczos", hrScale=2)
    assert price(hrUpscaler="None", hrScale="2", hrResizeX=512, hrResizeY=512) == by_scale  # hrScale wins
    assert price(hrUpscaler="lanczos", hrResizeX=512, hrResizeY=512) > by_scale
