"""The EKS `v1alpha1`/`v1alpha2` API through a real server: every task type and version, every URL
form, the 400 texts, 401 and 429, idempotent ids, the task folder and its `.out`, and callbacks."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from standardwebhooks import Webhook

from diffusiond.auth.keys import CreatedKey
from diffusiond.testing import shapes_checks as checks
from diffusiond.webhooks.signing import public_secret
from tests.api.eks.conftest import ImageServer, picture
from tests.conftest import LiveServer
from tests.webhooks.receiver import Receiver

SMALL = {"prompt": "a red circle on a blue background", "steps": 12, "width": 64, "height": 64, "seed": 4}


@pytest.fixture
def tenant(eks_server: LiveServer) -> Iterator[CreatedKey]:
    services = eks_server.services()
    yield services.keys.create("eks", credits_milli=100_000)
    services.db.dispose()


def client(server: LiveServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"x-api-key": key}, timeout=60)


def v2(task_id: str, content: dict[str, Any], tasktype: str = "text-to-image", **meta: Any) -> dict[str, Any]:
    metadata = {"id": task_id, "runtime": "sdruntime", "tasktype": tasktype, "prefix": "output", "context": "",
                **meta}
    return {"task": {"metadata": metadata, "content": {"alwayson_scripts": {}, **content}}}


def wait_task(c: httpx.Client, task_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = c.get(f"/v1alpha2/tasks/{task_id}").json()
        if status["status"] in ("completed", "failed"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish: {status}")


def folder_files(location: str) -> dict[str, str]:
    """name -> signed URL of every file `output_location` lists (no key needed: the URL is signed)."""
    listing = httpx.get(location)
    assert listing.status_code == 200, listing.text
    return {f["name"]: f["url"] for f in listing.json()["files"]}


def test_text_to_image_writes_the_folder_and_calls_back(eks_server: LiveServer, tenant: CreatedKey,
                                                         receiver: Receiver) -> None:
    # callbacks: one through the admin API, one in an SNS envelope through the CLI
    with eks_server.client() as admin:
        r = admin.post(f"/v1/admin/tenants/{tenant.tenant_id}/callbacks", json={"url": receiver.url + "/plain"})
        assert r.status_code == 200, r.text
    cli = subprocess.run([sys.executable, "-m", "diffusiond.cli", "callbacks", "add", tenant.tenant_id,
                          receiver.url + "/sns", "--sns"], env={**eks_env(eks_server)}, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    with client(eks_server, tenant.key) as c:
        r = c.post(eks_server.url + "//v1alpha2/", json=v2("t2i-a", SMALL, context={"abc": 123}))
        assert r.status_code == 200, r.text
        accepted = r.json()
        assert set(accepted) == {"id", "runtime", "output_location", "id_task"}
        assert accepted["id"] == accepted["id_task"] == "t2i-a" and accepted["runtime"] == "sdruntime"
        status = wait_task(c, "t2i-a")
    assert status["status"] == "completed" and status["progress"] == 1.0
    files = folder_files(accepted["output_location"])
    [png] = [n for n in files if n.endswith(".png")]
    [out] = [n for n in files if n.endswith(".out")]
    rand = re.fullmatch(r"t2i-a-([0-9a-f]{4})-1\.png", png)
    assert rand is not None and out == f"t2i-a-{rand.group(1)}.out"
    image = Image.open(io.BytesIO(httpx.get(files[png]).content))
    reading = checks.read_image(image)
    assert (reading.background, reading.color) == ("blue", "red")
    result = httpx.get(files[out]).json()
    assert result["images"] == [""] and result["info"] == ""
    params = result["parameters"]
    assert params["id_task"] == "t2i-a" and params["image_seed"] == "4" and params["error_msg"] == ""
    assert params["prompt"] == SMALL["prompt"] and params["steps"] == 12
    # both callbacks, signed, once each
    got = wait_callbacks(receiver, 2)
    by_path = {g.path: g for g in got}
    plain = Webhook(public_secret(tenant_secret(eks_server, tenant.tenant_id))).verify(by_path["/plain"].body,
                                                                                        by_path["/plain"].headers)
    assert plain["id"] == "t2i-a" and plain["result"] is True and plain["status"] == "completed"
    assert plain["context"] == {"abc": 123} and plain["runtime"] == "sdruntime"
    assert plain["output_url"].split("?")[0].endswith(f"/{out}") and len(plain["image_url"]) == 1
    assert httpx.get(plain["image_url"][0]).content[:8] == b"\x89PNG\r\n\x1a\n"
    sns = by_path["/sns"]
    assert sns.headers["x-amz-sns-message-type"] == "Notification"
    envelope = json.loads(sns.body)
    assert envelope["Type"] == "Notification" and envelope["Timestamp"]
    assert json.loads(envelope["Message"])["id"] == "t2i-a"


def eks_env(server: LiveServer) -> dict[str, str]:
    import os

    return {**os.environ, **server.env, "DIFFUSIOND_HOME": str(server.home), "HF_HUB_OFFLINE": "1"}


def tenant_secret(server: LiveServer, tenant_id: str) -> str:
    services = server.services()
    try:
        return services.tenants.get(tenant_id).webhook_secret
    finally:
        services.db.dispose()


def wait_callbacks(receiver: Receiver, n: int, timeout: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(receiver.snapshot()) < n:
        time.sleep(0.1)
    time.sleep(0.3)  # nothing more should come
    got = receiver.snapshot()
    assert len(got) == n, [g.body for g in got]
    return got


@pytest.mark.parametrize("path", ["/v1alpha2", "/v1alpha2/", "//v1alpha2/", "//v1alpha2"])
def test_every_v1alpha2_url_form(eks_server: LiveServer, tenant: CreatedKey, path: str) -> None:
    with client(eks_server, tenant.key) as c:
        r = c.post(eks_server.url + path, json=v2(f"form{path.count('/')}{len(path)}", {**SMALL, "steps": 2}))
    assert r.status_code == 200 and r.json()["id"] == f"form{path.count('/')}{len(path)}", r.text


@pytest.mark.parametrize("path", ["/v1alpha1", "/v1alpha1/", "//v1alpha1/", "//v1alpha1"])
def test_v1alpha1_sample_shape(eks_server: LiveServer, tenant: CreatedKey, path: str) -> None:
    task_id = f"v1-{path.count('/')}{len(path)}"
    body = {"alwayson_scripts": {"task": "text-to-image", "sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors",
                                 "id_task": task_id, "save_dir": "outputs"}, **SMALL}
    with client(eks_server, tenant.key) as c:
        r = c.post(eks_server.url + path, json=body)
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"id_task", "sd_model_checkpoint", "output_location"}
        assert r.json()["sd_model_checkpoint"] == "v1-5-pruned-emaonly.safetensors"
        assert wait_task(c, task_id)["status"] == "completed"
    assert any(n.endswith("-1.png") for n in folder_files(r.json()["output_location"]))


def test_image_links_in_every_form(eks_server: LiveServer, tenant: CreatedKey, images: ImageServer) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(picture()).decode()
    i2i = {**SMALL, "denoising_strength": 0.3}
    forms = {
        "link": v2("i2i-link", {**i2i, "alwayson_scripts": {"image_link": images.url + "/cat.png"}}, "image-to-image"),
        "init": v2("i2i-init", {**i2i, "init_images": [images.url + "/cat.png"]}, "image-to-image"),
        "data": v2("i2i-data", {**i2i, "init_images": [data_url]}, "image-to-image"),
        "extra": v2("extra", {"image": images.url + "/cat.png", "upscaler_1": "Lanczos", "upscaling_resize": 2},
                    "extra-single-image"),
    }
    with client(eks_server, tenant.key) as c:
        for body in forms.values():
            assert c.post("/v1alpha2", json=body).status_code == 200
        for name, body in forms.items():
            task_id = body["task"]["metadata"]["id"]
            status = wait_task(c, task_id)
            assert status["status"] == "completed", (name, status)
            image = Image.open(io.BytesIO(httpx.get(status["images"][0]).content))
            if name == "extra":
                assert image.size == (128, 128)
                assert httpx.get(status["output_url"]).json()["parameters"]["html_info"]
            else:
                assert checks.read_image(image).background == "blue", name


@pytest.mark.parametrize(("link", "says"), [
    ("http://10.1.2.3/cat.png", "private"),  # not allowed by the guard
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("s3://some-bucket/cat.png", "s3://"),  # the local blob store has no bucket
    ("/redirect", "10.1.2.3"),  # a redirect is checked again
    ("/big", "more than"),  # bigger than DIFFUSIOND_FETCH_MAX_BYTES
    ("ftp://example.com/cat.png", "only http"),
])
def test_links_the_guard_refuses_fail_the_task(eks_server: LiveServer, tenant: CreatedKey, images: ImageServer,
                                               link: str, says: str) -> None:
    url = images.url + link if link.startswith("/") else link
    task_id = f"bad-{abs(hash(link)) % 10**8}"
    with client(eks_server, tenant.key) as c:
        r = c.post("/v1alpha2", json=v2(task_id, {**SMALL, "init_images": [url]}, "image-to-image"))
        assert r.status_code == 200, r.text
        status = wait_task(c, task_id)
    assert status["status"] == "failed" and says in status["error"]["message"], status
    result = httpx.get(status["output_url"]).json()
    assert result["parameters"]["id_task"] == task_id and says in result["parameters"]["error_msg"]


STRUCTURE = "Incorrect payload structure, "


@pytest.mark.parametrize(("path", "body", "text"), [
    ("/v1alpha2", {}, STRUCTURE + "task is missing"),
    ("/v1alpha2", {"task": {"content": {}}}, STRUCTURE + "tasktype is missing"),
    ("/v1alpha2", {"task": {"metadata": {"id": "a", "runtime": "sdruntime"}}}, STRUCTURE + "content is missing"),
    ("/v1alpha2", {"task": {"metadata": {"id": "a", "tasktype": "text-to-image"}, "content": {}}},
     STRUCTURE + "runtime is missing"),
    ("/v1alpha2", {"task": {"metadata": {"runtime": "r", "tasktype": "t"}, "content": {}}},
     STRUCTURE + "id is missing"),
    ("/v1alpha2", {"task": {}}, STRUCTURE + "content is missing"),  # the last failing check wins
    ("/v1alpha2", v2("a b", {}), STRUCTURE + "invalid id format"),
    ("/v1alpha2", v2("a", {}, prefix="../up"), STRUCTURE + "invalid prefix format"),
    ("/v1alpha2", v2("a", {}, runtime="nope"), STRUCTURE + "runtime 'nope' is not configured"),
    ("/v1alpha2", v2("a", {}, tasktype="pipeline"), "ComfyUI pipelines are not supported"),
    ("/v1alpha2", v2("a", {}, runtime="comfy", tasktype="pipeline"), "ComfyUI pipelines are not supported"),
    ("/v1alpha2", v2("a", {}, tasktype="draw-me"), STRUCTURE + "invalid tasktype 'draw-me'"),
    ("/v1alpha1", {"prompt": "x"}, STRUCTURE + "id_task is missing"),
    ("/v1alpha1", {"alwayson_scripts": {}}, STRUCTURE + "id_task is missing"),
    ("/v1alpha1", {"alwayson_scripts": {"id_task": "a", "sd_model_checkpoint": "m"}}, STRUCTURE + "task is missing"),
    ("/v1alpha1", {"alwayson_scripts": {"id_task": "a", "task": "text-to-image"}},
     STRUCTURE + "sd_model_checkpoint is missing"),
])
def test_structure_errors_are_plain_text(eks_server: LiveServer, tenant: CreatedKey, path: str, body: Any,
                                         text: str) -> None:
    with client(eks_server, tenant.key) as c:
        r = c.post(path, json=body)
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith(text) if text.startswith(STRUCTURE) else text in r.text, r.text


def test_bad_json_and_no_key(eks_server: LiveServer, tenant: CreatedKey) -> None:
    with client(eks_server, tenant.key) as c:
        r = c.post("/v1alpha2", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "Expecting property name" in r.text
    r = httpx.post(eks_server.url + "/v1alpha2", json=v2("x", SMALL))
    assert r.status_code == 401 and r.json() == {"message": "Unauthorized"}
    r = httpx.post(eks_server.url + "/v1alpha2", json=v2("x", SMALL), headers={"x-api-key": "sk-wrong"})
    assert r.status_code == 401


def test_task_ids_are_idempotent(eks_server: LiveServer, tenant: CreatedKey) -> None:
    body = v2("same-id", {**SMALL, "steps": 2})
    with client(eks_server, tenant.key) as c:
        first = c.post("/v1alpha2", json=body)
        again = c.post("/v1alpha2/", json=body)
        assert first.status_code == again.status_code == 200
        created = c.get("/v1alpha2/tasks/same-id").json()["created_at"]
        other = c.post("/v1alpha2", json=v2("same-id", {**SMALL, "prompt": "something else"}))
        assert other.status_code == 409 and "already used with a different body" in other.text
        assert c.get("/v1alpha2/tasks/same-id").json()["created_at"] == created
        assert c.get("/v1alpha2/tasks/never-sent").status_code == 404


def test_dynamic_model_switch_and_failed_task(eks_server: LiveServer, tenant: CreatedKey, receiver: Receiver) -> None:
    with eks_server.client() as admin:
        admin.post(f"/v1/admin/tenants/{tenant.tenant_id}/callbacks", json={"url": receiver.url})
    tiny = {**SMALL, "steps": 2, "alwayson_scripts": {"sd_model_checkpoint": "tiny"}}
    with client(eks_server, tenant.key) as c:
        for task_id, runtime in (("on-dynamic", "dynamic"), ("on-fixed", "sdruntime")):
            assert c.post("/v1alpha2", json=v2(task_id, tiny, runtime=runtime)).status_code == 200
        c.post("/v1alpha2", json=v2("no-model", {**tiny, "alwayson_scripts": {"sd_model_checkpoint": "gone"}},
                                    runtime="dynamic"))
        models = {}
        for task_id in ("on-dynamic", "on-fixed"):
            status = wait_task(c, task_id)
            png = Image.open(io.BytesIO(httpx.get(status["images"][0]).content))
            models[task_id] = re.search(r"Model: (\w+)", png.text["parameters"]).group(1)  # type: ignore[union-attr]
        assert models == {"on-dynamic": "tiny", "on-fixed": "shapes"}
        failed = wait_task(c, "no-model")
    assert failed["status"] == "failed" and failed["error"]["code"] == "model_not_found" and failed["images"] == []
    callbacks = {json.loads(g.body)["id"]: json.loads(g.body) for g in wait_callbacks(receiver, 3)}
    assert callbacks["no-model"]["result"] is False and callbacks["no-model"]["image_url"] == []
    assert "gone" in httpx.get(callbacks["no-model"]["output_url"]).json()["parameters"]["error_msg"]


def test_a_task_that_fails_in_the_worker_leaves_its_result_file(eks_server: LiveServer, tenant: CreatedKey) -> None:
    with client(eks_server, tenant.key) as c:
        body = v2("worker-fails", {**SMALL, "sampler_name": "DDIM", "scheduler": "karras"})
        assert c.post("/v1alpha2", json=body).status_code == 200
        status = wait_task(c, "worker-fails")
    assert status["status"] == "failed" and status["error"]["code"] == "invalid_sampler_schedule"
    files = folder_files(status["output_location"])
    assert list(files) == [status["output_url"].split("?")[0].rsplit("/", 1)[1]]  # the .out only, no image
    assert "karras" in httpx.get(status["output_url"]).json()["parameters"]["error_msg"]


def test_burst_of_50_then_429(eks_server: LiveServer, tenant: CreatedKey) -> None:
    """A key made with `keys create --rate --burst`: 50 at once pass, the 51st waits (a slow refill
    keeps the count exact); the server's defaults are the same burst at 30 a second."""
    made = subprocess.run([sys.executable, "-m", "diffusiond.cli", "keys", "create", "--name", "burst", "--tenant",
                           tenant.tenant_id, "--rate", "0.01", "--burst", "50"], env=eks_env(eks_server),
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    with client(eks_server, made.stdout.strip()) as c:
        codes = [c.get("/v1alpha2/tasks/none").status_code for _ in range(50)]
        refused = c.get("/v1alpha2/tasks/none")
    assert codes == [404] * 50
    assert refused.status_code == 429 and refused.json() == {"message": "Too Many Requests"}
    assert int(refused.headers["retry-after"]) >= 1


def test_thirty_a_second_sustained_all_pass(eks_server: LiveServer, tenant: CreatedKey) -> None:
    with client(eks_server, tenant.key) as c:
        start = time.monotonic()
        codes = []
        for i in range(90):  # three seconds at 30/s: the burst alone would not cover it
            time.sleep(max(0.0, start + i / 30 - time.monotonic()))
            codes.append(c.get("/v1alpha2/tasks/none").status_code)
    assert set(codes) == {404}


def test_callbacks_admin_api(eks_server: LiveServer, tenant: CreatedKey) -> None:
    base = f"/v1/admin/tenants/{tenant.tenant_id}/callbacks"
    with eks_server.client() as admin, client(eks_server, tenant.key) as user:
        made = admin.post(base, json={"url": "http://127.0.0.1:9/hook", "format": "sns"}).json()
        assert made["format"] == "sns" and made["dialect"] == "eks"
        assert admin.post(base, json={"url": "http://127.0.0.1:9/hook"}).status_code == 409
        assert admin.post(base, json={"url": "http://10.0.0.1/hook"}).status_code == 400  # the SSRF guard
        assert [c["id"] for c in admin.get(base).json()["callbacks"]] == [made["id"]]
        assert user.get(base).status_code == 403
        assert admin.delete(f"{base}/{made['id']}").json() == {"callbacks": []}
        assert admin.delete(f"{base}/{made['id']}").status_code == 404
