"""Custom-model API contract: every operation through a real `diffusiond serve` on loopback.

The server generates (one worker, the bundled `shapes` model at 64x64) but has no training worker,
so trainings stay queued until a test moves them by hand (`HandTrainer`, through the real job
service); the real trainer's end-to-end test is `test_training_e2e.py`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from diffusiond.domain.jobs import JobKind, JobStatus
from diffusiond.domain.params import ImageRef
from diffusiond.domain.pricing import training_cost
from diffusiond.domain.spec_codec import spec_from_json
from diffusiond.domain.training import TrainingImage, TrainingSpeed, TrainSpec, preset
from diffusiond.services import Services
from diffusiond.store.tables import DatasetRow, JobRow
from tests.api.custom.conftest import BASE, Api, HandTrainer, KeyFactory, assert_error, decode, key_factory, picture
from tests.conftest import LiveServer, free_port, prepare_home

TRIGGER = re.compile(r"^[A-Z]{3}[0-9]{2}[A-Z]{2}$")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("custom-contract")
    prepare_home(home, tiny_sd_dir)  # `tiny` too: a second base family, for mixing refusals
    server = LiveServer(home=home, port=free_port(),
                        env={"DIFFUSIOND_WORKERS": "1", "DIFFUSIOND_TRAINING_WORKERS": "0",
                             "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    server.start()
    yield server
    server.stop()
    log = (home / "server.log").read_text()
    assert "unhandled error" not in log, log[-3000:]  # every refusal above was an expected one


@pytest.fixture(scope="module")
def services(live: LiveServer) -> Iterator[Services]:
    """The server's database and blobs, from the test process (no workers)."""
    s = live.services()
    yield s
    s.db.dispose()


@pytest.fixture(scope="module")
def new_key(live: LiveServer) -> Iterator[KeyFactory]:
    yield from key_factory(live)


@pytest.fixture
def api(live: LiveServer, new_key: KeyFactory) -> Iterator[Api]:
    """A fresh tenant with 100 credits."""
    with live.client(new_key()) as c:
        yield Api(c)


def balance(api: Api) -> float:
    return float(api.c.get("/v1/user/balance").json()["credits"])


def job_count(services: Services) -> int:
    with services.db.read() as s:
        return s.query(JobRow).count()


# ---- auth --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("POST", "/models"), ("GET", "/models/x"), ("PATCH", "/models/x"), ("DELETE", "/models/x"),
    ("POST", "/models/x/data"), ("GET", "/models/x/data"), ("GET", "/models/x/data/y"), ("PUT", "/models/x/data/y"),
    ("DELETE", "/models/x/data/y"), ("POST", "/models/x/trainings"), ("GET", "/models/x/trainings"),
    ("GET", "/models/x/trainings/y"), ("POST", "/models/x/trainings/y/cancel"), ("DELETE", "/models/x/trainings/y"),
    ("POST", "/predictions"), ("GET", "/predictions/x"), ("DELETE", "/predictions/x"),
])
def test_every_operation_needs_a_key(live: LiveServer, method: str, path: str) -> None:
    with httpx.Client(base_url=live.url) as c:
        assert_error(c.request(method, BASE + path, json={}), 401, "unauthorized")
        assert_error(c.request(method, BASE + path, json={}, headers={"x-api-key": "sk-wrong"}), 401, "unauthorized")


# ---- models ------------------------------------------------------------------------------------------


def test_create_get_rename_and_soft_delete_a_model(api: Api, services: Services) -> None:
    r = api.c.post(f"{BASE}/models", json={"displayName": "Summer Collection Style Model",
                                           "customModelType": "style"})
    assert r.status_code == 200
    model = r.json()
    assert model["displayName"] == "Summer Collection Style Model" and model["customModelType"] == "style"
    assert model["imageCount"] == 0 and model["id"] and model["createdAt"].endswith("Z")
    model_id = model["id"]
    assert api.c.get(f"{BASE}/models/{model_id}").json() == model
    renamed = api.c.patch(f"{BASE}/models/{model_id}", json={"updatedDisplayName": "Summer Dresses Style Model"})
    assert renamed.status_code == 200 and renamed.json() == {**model, "displayName": "Summer Dresses Style Model"}
    assert api.c.get(f"{BASE}/models/{model_id}").json()["displayName"] == "Summer Dresses Style Model"
    # display names need not be unique
    assert api.create_model("Summer Dresses Style Model") != model_id

    r = api.c.delete(f"{BASE}/models/{model_id}")
    assert r.status_code == 204 and r.content == b""
    assert_error(api.c.get(f"{BASE}/models/{model_id}"), 404, "model_not_found")
    assert_error(api.c.patch(f"{BASE}/models/{model_id}", json={"updatedDisplayName": "x"}), 404, "model_not_found")
    assert_error(api.c.delete(f"{BASE}/models/{model_id}"), 404, "model_not_found")
    assert_error(api.c.get(f"{BASE}/models/{model_id}/data"), 404, "model_not_found")
    with services.db.read() as s:  # soft: the row stays
        row = s.get(DatasetRow, model_id)
        assert row is not None and row.deleted_at is not None


@pytest.mark.parametrize("model_id", ["%00", "abc%0A", "x" * 65, "%C3%A9t%C3%A9", "a.b"])
def test_ids_that_cannot_exist_are_404(api: Api, model_id: str) -> None:
    assert_error(api.c.get(f"{BASE}/models/{model_id}"), 404, "model_not_found")
    assert_error(api.c.get(f"{BASE}/predictions/{model_id}"), 404, "prediction_not_found")
    real = api.create_model()
    assert_error(api.c.get(f"{BASE}/models/{real}/data/{model_id}"), 404, "data_not_found")
    assert_error(api.c.delete(f"{BASE}/models/{real}/trainings/{model_id}"), 404, "training_not_found")


@pytest.mark.parametrize("body,code", [
    ({}, "invalid_display_name"),
    ({"displayName": ""}, "invalid_display_name"),
    ({"displayName": "   "}, "invalid_display_name"),
    ({"displayName": "x" * 201}, "invalid_display_name"),
    ({"displayName": "tab\there"}, "invalid_display_name"),
    ({"displayName": 5}, "invalid_display_name"),
    ({"displayName": "ok", "customModelType": 3}, "invalid_custom_model_type"),
    ({"displayName": "ok", "colour": "pink"}, "unknown_field"),
    ([], "invalid_json"),
])
def test_create_model_refuses_bad_bodies_and_creates_nothing(api: Api, services: Services, body: object,
                                                             code: str) -> None:
    with services.db.read() as s:
        before = s.query(DatasetRow).count()
    assert_error(api.c.post(f"{BASE}/models", json=body), 400, code)
    with services.db.read() as s:
        assert s.query(DatasetRow).count() == before


def test_malformed_and_oversized_json(api: Api) -> None:
    assert_error(api.c.post(f"{BASE}/models", content=b"{not json"), 400, "invalid_json")
    assert_error(api.c.post(f"{BASE}/models", content=b""), 400, "invalid_json")
    assert_error(api.c.post(f"{BASE}/models", content=b"[" * 100_000 + b"]" * 100_000), 400, "invalid_json")
    big = b'{"displayName": "' + b"x" * (1024 * 1024) + b'"}'
    assert_error(api.c.post(f"{BASE}/models", content=big), 413, "invalid_file_size")
    model_id = api.create_model()
    assert_error(api.c.patch(f"{BASE}/models/{model_id}", json={}), 400, "invalid_display_name")
    assert_error(api.c.patch(f"{BASE}/models/{model_id}", json={"displayName": "x"}), 400, "unknown_field")


def test_json_without_a_content_type_is_accepted(api: Api) -> None:
    # curl -d sends application/x-www-form-urlencoded unless told otherwise
    r = api.c.post(f"{BASE}/models", content=b'{"displayName": "curl"}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["displayName"] == "curl"


# ---- training images ---------------------------------------------------------------------------------


def test_upload_list_get_replace_and_delete_training_images(api: Api) -> None:
    model_id = api.create_model()
    # the bytes decide what an upload is, not the declared type
    png = api.upload(model_id, picture((250, 140, 190)), "application/octet-stream")
    jpeg = api.upload(model_id, picture((20, 200, 20), fmt="JPEG"), "application/x-www-form-urlencoded")
    webp = api.upload(model_id, picture((20, 20, 200), size=(80, 48), fmt="WEBP"), "image/webp")
    listed = api.c.get(f"{BASE}/models/{model_id}/data").json()
    assert [d["dataId"] for d in listed] == [png, jpeg, webp]
    assert (listed[2]["width"], listed[2]["height"]) == (80, 48) and all("dataUrl" not in d for d in listed)
    assert api.c.get(f"{BASE}/models/{model_id}").json()["imageCount"] == 3

    item = api.c.get(f"{BASE}/models/{model_id}/data/{png}").json()
    assert item["dataId"] == png and item["expiresAt"].endswith("Z")
    stored = decode(api.c.get(item["dataUrl"]).content)  # a signed URL, re-encoded as PNG
    assert stored.format == "PNG" and stored.getpixel((5, 5)) == (250, 140, 190)
    forged = item["dataUrl"].replace("&s=", "&s=x")
    assert api.c.get(forged).status_code == 404  # a bad signature says nothing about what exists

    r = api.c.put(f"{BASE}/models/{model_id}/data/{png}", content=picture((10, 10, 10), fmt="JPEG"))
    assert r.status_code == 200 and r.json()["dataId"] == png
    item = api.c.get(f"{BASE}/models/{model_id}/data/{png}").json()
    replaced = np.asarray(decode(api.c.get(item["dataUrl"]).content), dtype=np.int16)
    assert np.abs(replaced - 10).max() <= 3

    r = api.c.delete(f"{BASE}/models/{model_id}/data/{jpeg}")
    assert r.status_code == 204
    assert [d["dataId"] for d in api.c.get(f"{BASE}/models/{model_id}/data").json()] == [png, webp]
    assert_error(api.c.get(f"{BASE}/models/{model_id}/data/{jpeg}"), 404, "data_not_found")
    assert_error(api.c.delete(f"{BASE}/models/{model_id}/data/{jpeg}"), 404, "data_not_found")
    assert_error(api.c.put(f"{BASE}/models/{model_id}/data/{jpeg}", content=picture()), 404, "data_not_found")
    assert_error(api.c.get(f"{BASE}/models/{model_id}/data/not-an-id"), 404, "data_not_found")
    assert_error(api.c.post(f"{BASE}/models/nope/data", content=picture()), 404, "model_not_found")


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize("data,headers,status,code", [
    (b"", {}, 400, "missing_image"),
    (b"hello, not a picture", {"Content-Type": "image/png"}, 415, "invalid_mime_type"),
    ("gif", {"Content-Type": "image/gif"}, 415, "invalid_mime_type"),
    ("multipart", {}, 415, "invalid_mime_type"),
    ("wide", {}, 422, "invalid_image_dimensions"),
    ("huge", {}, 413, "invalid_file_size"),
])
def test_refused_uploads_store_nothing(api: Api, live: LiveServer, data: bytes | str, headers: dict[str, str],
                                       status: int, code: str) -> None:
    model_id = api.create_model()
    api.upload(model_id, picture())
    blobs = live.home / "blobs"
    before = sorted(blobs.rglob("*"))
    url = f"{BASE}/models/{model_id}/data"
    if data == "multipart":
        r = api.c.post(url, files={"file": ("a.png", picture(), "image/png")})
    else:
        body = {"gif": gif(), "wide": picture(size=(4097, 1)), "huge": b"\x89PNG" + b"\0" * (10 * 1024 * 1024)}
        r = api.c.post(url, content=body.get(data, data) if isinstance(data, str) else data, headers=headers)
    assert_error(r, status, code)
    item = api.c.get(url).json()[0]["dataId"]
    if data == "huge":  # a replacement is refused the same way
        assert_error(api.c.put(f"{url}/{item}", content=body["huge"]), status, code)
    assert len(api.c.get(url).json()) == 1 and sorted(blobs.rglob("*")) == before


def test_a_model_holds_at_most_200_training_images(api: Api, services: Services) -> None:
    model_id = api.create_model()
    tenant = api.c.get("/v1/user/account").json()["id"]
    for i in range(200):  # through the core: 200 uploads over HTTP would only be slower
        services.datasets.add_item(tenant, model_id, picture((i, 100, 100), size=(8, 8)))
    assert_error(api.c.post(f"{BASE}/models/{model_id}/data", content=picture()), 409, "too_many_training_images")
    assert api.c.get(f"{BASE}/models/{model_id}").json()["imageCount"] == 200


# ---- trainings ---------------------------------------------------------------------------------------


def test_a_training_needs_enough_images(api: Api, services: Services) -> None:
    model_id = api.model_with_images(3)
    jobs = job_count(services)
    r = api.c.post(f"{BASE}/models/{model_id}/trainings", json={})
    assert_error(r, 409, "not_enough_training_images")
    assert "at least 4" in r.json()["error"]["message"]
    assert job_count(services) == jobs and balance(api) == 100.0
    assert api.c.get(f"{BASE}/models/{model_id}/trainings").json() == []


def test_start_a_training_on_a_snapshot_of_the_pictures(api: Api, services: Services, live: LiveServer) -> None:
    model_id = api.model_with_images(4)
    created = api.train(model_id, trainingStrength=7.0, trainingSpeed="high_quality")  # 7.0 is an integer too
    assert set(created) == {"trainingId", "status", "triggerWord"} and created["status"] == "queued"
    assert TRIGGER.match(created["triggerWord"])
    training = api.training(model_id, created["trainingId"])
    expected = preset(7, TrainingSpeed.HIGH_QUALITY, 64)  # shapes is trained at 64x64
    assert training["status"] == "queued" and training["progress"] == 0 and training["queuePosition"] >= 1
    assert training["modelId"] == model_id and training["triggerWord"] == created["triggerWord"]
    assert training["settings"] == {"steps": expected.steps, "learningRate": expected.learning_rate,
                                    "rank": expected.rank, "resolution": 64,
                                    "trainTextEncoder": expected.train_text_encoder, "baseModel": "shapes",
                                    "imageCount": 4}
    assert [t["id"] for t in api.c.get(f"{BASE}/models/{model_id}/trainings").json()] == [created["trainingId"]]

    job = services.jobs.get(None, created["trainingId"])
    spec = spec_from_json(job.spec_json, JobKind.TRAIN)
    assert isinstance(spec, TrainSpec) and job.kind is JobKind.TRAIN and job.parent_id == model_id
    assert all(i.caption == created["triggerWord"] for i in spec.images)  # the trigger word is the caption
    assert balance(api) == pytest.approx(100.0 - training_cost(spec) / 1000)  # priced by the core's rule
    # the training keeps its own copy: deleting or replacing a picture later changes nothing for it
    for item in api.c.get(f"{BASE}/models/{model_id}/data").json():
        assert api.c.delete(f"{BASE}/models/{model_id}/data/{item['dataId']}").status_code == 204
    assert all((live.home / "blobs" / i.image.blob_key).is_file() for i in spec.images)

    # defaults: strength 5, fast; and every training gets its own trigger word
    model_2 = api.model_with_images(4)
    second = api.train(model_2)
    assert api.training(model_2, second["trainingId"])["settings"]["steps"] == preset(5, TrainingSpeed.FAST, 64).steps
    assert second["triggerWord"] != created["triggerWord"]


@pytest.mark.parametrize("body,code", [
    ({"trainingStrength": 11}, "invalid_training_strength"),
    ({"trainingStrength": -1}, "invalid_training_strength"),
    ({"trainingStrength": 7.5}, "invalid_training_strength"),
    ({"trainingStrength": True}, "invalid_training_strength"),
    ({"trainingStrength": "7"}, "invalid_training_strength"),
    ({"trainingSpeed": "slow"}, "invalid_training_speed"),
    ({"trainingSpeed": None}, "invalid_training_speed"),
    ({"steps": 10}, "unknown_field"),
])
def test_training_parameters_are_checked(api: Api, services: Services, body: dict[str, object], code: str) -> None:
    model_id = api.model_with_images(4)
    jobs = job_count(services)
    assert_error(api.c.post(f"{BASE}/models/{model_id}/trainings", json=body), 400, code)
    assert job_count(services) == jobs


def test_a_training_the_balance_cannot_cover_is_refused_and_leaves_nothing(live: LiveServer, new_key: KeyFactory,
                                                                          services: Services) -> None:
    with live.client(new_key(credits=0.05)) as c:
        api = Api(c)
        model_id = api.model_with_images(4)
        jobs = job_count(services)
        assert_error(c.post(f"{BASE}/models/{model_id}/trainings", json={}), 402, "insufficient_credits")
        assert job_count(services) == jobs and balance(api) == 0.05
        tenant = c.get("/v1/user/account").json()["id"]
    assert not list((live.home / "blobs" / "inputs" / tenant).glob("trainings/*/*"))


def test_training_status_shows_progress_and_loss_then_cancel(api: Api, services: Services) -> None:
    model_id = api.model_with_images(4)
    running = api.train(model_id)["trainingId"]
    HandTrainer(services).start(running, progress=0.5, step=40, total=80, loss=0.125)
    status = api.training(model_id, running)
    assert status["status"] == "processing" and status["progress"] == 0.5 and "queuePosition" not in status
    assert (status["step"], status["totalSteps"], status["loss"], status["etaSeconds"]) == (40, 80, 0.125, 12.5)
    assert status["startedAt"].endswith("Z")

    queued = api.train(model_id)["trainingId"]
    spent = balance(api)
    r = api.c.post(f"{BASE}/models/{model_id}/trainings/{queued}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled" and r.json()["error"]["code"] == "canceled"
    assert balance(api) > spent  # released
    assert api.c.post(f"{BASE}/models/{model_id}/trainings/{queued}/cancel").json()["status"] == "canceled"
    # a running training is asked to stop (it ends canceled at its next step); the row says so
    assert api.c.post(f"{BASE}/models/{model_id}/trainings/{running}/cancel").status_code == 200
    with services.db.read() as s:
        row = s.get(JobRow, running)
        assert row is not None and row.cancel_requested and row.status == JobStatus.RUNNING.value


def test_finished_trainings_cannot_be_canceled(api: Api, services: Services, shapes_loras: tuple[Path, Path]) -> None:
    model_id = api.model_with_images(4)
    done, failed = api.train(model_id)["trainingId"], api.train(model_id)["trainingId"]
    HandTrainer(services).succeed(done, shapes_loras[0])
    HandTrainer(services).fail(failed)
    assert api.training(model_id, done)["status"] == "succeeded" and api.training(model_id, done)["progress"] == 1
    status = api.training(model_id, failed)
    assert status["status"] == "failed" and status["error"] == {"code": "training_diverged",
                                                                 "message": "the loss became NaN"}
    for training_id in (done, failed):
        assert_error(api.c.post(f"{BASE}/models/{model_id}/trainings/{training_id}/cancel"), 409, "training_finished")


def test_soft_deleting_a_training_hides_it_and_does_not_cancel_it(api: Api, services: Services) -> None:
    model_id = api.model_with_images(4)
    training_id = api.train(model_id)["trainingId"]
    HandTrainer(services).start(training_id)
    r = api.c.delete(f"{BASE}/models/{model_id}/trainings/{training_id}")
    assert r.status_code == 204
    assert_error(api.c.get(f"{BASE}/models/{model_id}/trainings/{training_id}"), 404, "training_not_found")
    assert_error(api.c.delete(f"{BASE}/models/{model_id}/trainings/{training_id}"), 404, "training_not_found")
    assert_error(api.c.post(f"{BASE}/models/{model_id}/trainings/{training_id}/cancel"), 404, "training_not_found")
    assert api.c.get(f"{BASE}/models/{model_id}/trainings").json() == []
    with services.db.read() as s:
        row = s.get(JobRow, training_id)
        assert row is not None and row.deleted_at is not None
        assert row.status == JobStatus.RUNNING.value and not row.cancel_requested


def test_training_ids_belong_to_their_model(api: Api) -> None:
    model_a, model_b = api.model_with_images(4), api.model_with_images(4)
    training_id = api.train(model_a)["trainingId"]
    assert_error(api.c.get(f"{BASE}/models/{model_b}/trainings/{training_id}"), 404, "training_not_found")
    prediction = api.predict(prompt="a red circle", num_inference_steps=2)
    assert_error(api.c.get(f"{BASE}/models/{model_a}/trainings/{prediction}"), 404, "training_not_found")
    assert_error(api.c.get(f"{BASE}/predictions/{training_id}"), 404, "prediction_not_found")


# ---- predictions -------------------------------------------------------------------------------------


def test_a_prediction_without_trained_models_uses_the_base_model(api: Api) -> None:
    prediction_id = api.predict(prompt="a red circle on a blue background", seed=1234, num_images=2,
                                output_format="jpeg", num_inference_steps=10, guidance_scale=5)
    done = api.wait(prediction_id)
    assert done["status"] == "succeeded" and done["progress"] == 1 and done["seeds"] == [1234, 1235]
    assert done["outputFormat"] == "jpeg" and len(done["outputImages"]) == 2
    images = api.images(done)
    assert all(i.format == "JPEG" and i.size == (64, 64) for i in images)  # shapes' native size by default
    png = api.predict_images(prompt="a red circle on a blue background", seed=1234, num_inference_steps=10,
                             guidance_scale=5, image_size={"width": 128, "height": 64})
    assert png[0].format == "PNG" and png[0].size == (128, 64)
    assert balance(api) < 100.0  # charged like any job


@pytest.mark.parametrize("body,code", [
    ({"prompt": None}, "invalid_prompt"),
    ({"prompt": ""}, "invalid_prompt"),
    ({"prompt": " \n "}, "invalid_prompt"),
    ({"prompt": "x" * 2001}, "invalid_prompt"),
    ({"num_images": 0}, "invalid_num_images"),
    ({"num_images": 5}, "invalid_num_images"),
    ({"guidance_scale": 10.5}, "invalid_guidance_scale"),
    ({"num_inference_steps": 0}, "invalid_num_inference_steps"),
    ({"num_inference_steps": 51}, "invalid_num_inference_steps"),
    ({"output_format": "webp"}, "invalid_output_format"),
    ({"seed": -1}, "invalid_seed"),
    ({"seed": 4294967296}, "invalid_seed"),
    ({"image_size": {"width": 96, "height": 64}}, "invalid_image_size"),  # shapes: multiples of 64
    ({"image_size": {"width": 1024, "height": 512}}, "invalid_image_size"),  # shapes: at most 512
    ({"image_size": {"width": 64}}, "invalid_image_size"),
    ({"scaleConfigs": {"1": {"scale": 0.5}}}, "invalid_scale_configs"),
    ({"scaleConfigs": {"1": {"modelId": "m", "scale": 2.5}}}, "invalid_scale_configs"),
    ({"scaleConfigs": {str(i): {"modelId": "m"} for i in range(11)}}, "invalid_scale_configs"),
    ({"negative_prompt": "blue"}, "unknown_field"),
])
def test_prediction_parameters_are_checked(api: Api, services: Services, body: dict[str, object],
                                           code: str) -> None:
    jobs = job_count(services)
    assert_error(api.c.post(f"{BASE}/predictions", json={"prompt": "a red circle", **body}), 400, code)
    assert_error(api.c.post(f"{BASE}/predictions", json={"num_images": 1}), 400, "invalid_prompt")  # required
    assert job_count(services) == jobs


def test_trained_models_mix_by_scale(api: Api, services: Services, shapes_loras: tuple[Path, Path]) -> None:
    model_a, model_b = api.model_with_images(4, "A"), api.model_with_images(4, "B")
    training_a, training_b = api.train(model_a), api.train(model_b)
    HandTrainer(services).succeed(training_a["trainingId"], shapes_loras[0])
    HandTrainer(services).succeed(training_b["trainingId"], shapes_loras[1])
    common = {"prompt": f"a red circle {training_a['triggerWord']}", "seed": 77, "num_inference_steps": 8,
              "guidance_scale": 5}

    def pixels(configs: dict[str, dict[str, object]]) -> np.ndarray:
        return np.asarray(api.predict_images(scaleConfigs=configs, **common)[0], dtype=np.int16)

    base = pixels({})
    a = {"modelId": model_a, "trainingId": training_a["trainingId"]}
    b = {"modelId": model_b}  # no trainingId: the model's newest succeeded training
    assert np.array_equal(pixels({"1": {**a, "scale": 0.0}}), base)  # scale 0: the base model exactly
    only_a = pixels({"1": {**a, "scale": 1.0}})
    mixed = pixels({"1": {**a, "scale": 1.0}, "2": {**b, "scale": 0.8}})
    assert np.abs(only_a - base).mean() > 1 and np.abs(mixed - only_a).mean() > 1
    again = pixels({"2": {**b, "scale": 0.8}, "1": {**a, "scale": 1.0}})  # labels order nothing
    assert np.array_equal(again, mixed)


def test_predictions_use_only_succeeded_live_trainings(api: Api, services: Services, tiny_lora: Path,
                                                       shapes_loras: tuple[Path, Path]) -> None:
    model_id = api.model_with_images(4)
    queued = api.train(model_id)["trainingId"]

    def refused(configs: dict[str, dict[str, object]], status: int, code: str) -> None:
        assert_error(api.c.post(f"{BASE}/predictions", json={"prompt": "x", "scaleConfigs": configs}), status, code)

    refused({"1": {"modelId": model_id, "trainingId": queued}}, 409, "training_not_ready")
    refused({"1": {"modelId": model_id}}, 409, "training_not_ready")  # no succeeded training yet
    refused({"1": {"modelId": "nope"}}, 404, "model_not_found")
    refused({"1": {"modelId": model_id, "trainingId": "nope"}}, 404, "training_not_found")

    done = api.train(model_id)["trainingId"]
    HandTrainer(services).succeed(done, shapes_loras[0])
    other_model = api.model_with_images(4)
    refused({"1": {"modelId": other_model, "trainingId": done}}, 404, "training_not_found")
    # a training for another base family cannot be mixed with it
    tiny_training = submit_tiny_training(services, api, other_model)
    HandTrainer(services).succeed(tiny_training, tiny_lora)
    refused({"1": {"modelId": model_id, "trainingId": done}, "2": {"modelId": other_model}}, 400,
            "incompatible_trainings")
    # a soft-deleted training's model can no longer be used; nor can a soft-deleted model's
    assert api.c.delete(f"{BASE}/models/{model_id}/trainings/{done}").status_code == 204
    refused({"1": {"modelId": model_id, "trainingId": done}}, 404, "training_not_found")
    refused({"1": {"modelId": model_id}}, 409, "training_not_ready")
    assert api.c.delete(f"{BASE}/models/{other_model}").status_code == 204
    refused({"1": {"modelId": other_model}}, 404, "model_not_found")


def submit_tiny_training(services: Services, api: Api, model_id: str) -> str:
    """A training for the `tiny` base (the server trains on `shapes`), submitted through the core."""
    tenant = api.c.get("/v1/user/account").json()["id"]
    images = tuple(TrainingImage(ImageRef(f"inputs/{tenant}/x{i}.png", 64, 64), "TNY11AA") for i in range(4))
    spec = TrainSpec(base_model="tiny", images=images, trigger_word="TNY11AA", output_model=f"tiny-{model_id}",
                     settings=preset(0, TrainingSpeed.FAST, 64))
    return services.jobs.submit(tenant, spec, dialect="custom", parent_id=model_id).id


def test_a_prediction_whose_model_breaks_fails_with_its_reason(api: Api, services: Services, tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")  # a valid, empty safetensors file
    model_id = api.model_with_images(4)
    training_id = api.train(model_id)["trainingId"]
    HandTrainer(services).succeed(training_id, broken)
    done = api.wait(api.predict(prompt="x", num_inference_steps=2, scaleConfigs={"1": {"modelId": model_id}}))
    assert done["status"] == "failed" and done["outputImages"] == []
    assert done["error"]["code"] and done["error"]["message"]


def test_soft_deleting_a_prediction(api: Api, services: Services) -> None:
    prediction_id = api.predict(prompt="a red circle", num_inference_steps=2)
    r = api.c.delete(f"{BASE}/predictions/{prediction_id}")
    assert r.status_code == 204
    assert_error(api.c.get(f"{BASE}/predictions/{prediction_id}"), 404, "prediction_not_found")
    assert_error(api.c.delete(f"{BASE}/predictions/{prediction_id}"), 404, "prediction_not_found")
    with services.db.read() as s:
        row = s.get(JobRow, prediction_id)
        assert row is not None and row.deleted_at is not None  # history kept


def test_a_prediction_the_balance_cannot_cover_is_refused(live: LiveServer, new_key: KeyFactory,
                                                          services: Services) -> None:
    with live.client(new_key(credits=0.001)) as c:
        jobs = job_count(services)
        assert_error(c.post(f"{BASE}/predictions", json={"prompt": "x", "image_size": {"width": 512, "height": 512}}),
                     402, "insufficient_credits")
        assert job_count(services) == jobs


def test_another_tenants_ids_are_404_everywhere(live: LiveServer, new_key: KeyFactory, services: Services,
                                                shapes_loras: tuple[Path, Path]) -> None:
    with live.client(new_key()) as ca, live.client(new_key()) as cb:
        a = Api(ca)
        model_id = a.model_with_images(4)
        data_id = ca.get(f"{BASE}/models/{model_id}/data").json()[0]["dataId"]
        training_id = a.train(model_id)["trainingId"]
        done_id = a.train(model_id)["trainingId"]
        HandTrainer(services).succeed(done_id, shapes_loras[0])
        prediction_id = a.predict(prompt="a red circle", num_inference_steps=2)
        m, d, t = f"{BASE}/models/{model_id}", f"{BASE}/models/{model_id}/data/{data_id}", \
            f"{BASE}/models/{model_id}/trainings/{training_id}"
        for method, url, body in [
            ("GET", m, None), ("PATCH", m, {"updatedDisplayName": "mine"}), ("DELETE", m, None),
            ("POST", f"{m}/data", picture()), ("GET", f"{m}/data", None), ("GET", d, None), ("PUT", d, picture()),
            ("DELETE", d, None), ("POST", f"{m}/trainings", {}), ("GET", f"{m}/trainings", None), ("GET", t, None),
            ("POST", f"{t}/cancel", None), ("DELETE", t, None),
        ]:
            content = body if isinstance(body, bytes) else None
            assert_error(cb.request(method, url, json=None if content else body, content=content), 404,
                         "model_not_found")
        for method in ("GET", "DELETE"):
            assert_error(cb.request(method, f"{BASE}/predictions/{prediction_id}"), 404, "prediction_not_found")
        for configs in ({"1": {"modelId": model_id}}, {"1": {"modelId": model_id, "trainingId": done_id}}):
            assert_error(cb.post(f"{BASE}/predictions", json={"prompt": "x", "scaleConfigs": configs}), 404,
                         "model_not_found")
        # nothing of A's changed
        assert ca.get(m).json()["displayName"] == "Pink things" and ca.get(f"{m}/data").json()[0]["dataId"] == data_id
        assert a.training(model_id, training_id)["status"] == "queued"
        assert ca.get(f"{BASE}/predictions/{prediction_id}").status_code == 200


def test_the_openapi_document_declares_every_operation_and_answer(live: LiveServer) -> None:
    doc = httpx.get(live.url + "/openapi.json").json()
    ops = {(method.upper(), path): op for path, item in doc["paths"].items() if path.startswith(BASE)
           for method, op in item.items()}
    assert len(ops) == 17 and all(op["tags"] == ["custom models"] for op in ops.values())
    for (method, path), op in ops.items():
        assert {"400", "401", "429", "500"} <= set(op["responses"]), (method, path)
        if "{" in path:
            assert "404" in op["responses"], (method, path)
    for method in ("POST", "PUT"):
        upload = ops[(method, BASE + "/models/{modelId}/data" + ("/{dataId}" if method == "PUT" else ""))]
        assert {"image/png", "image/jpeg", "image/webp"} <= set(upload["requestBody"]["content"])
        assert {"413", "415", "422"} <= set(upload["responses"])
    assert {"402", "409"} <= set(ops[("POST", BASE + "/predictions")]["responses"])
    assert "prompt" in ops[("POST", BASE + "/predictions")]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]
