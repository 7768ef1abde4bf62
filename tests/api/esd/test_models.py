"""Checkpoints uploaded in parts, hostile uploads, models (training bases), merges, model lists."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.api.esd.conftest import PART, Esd, KeyFactory, tar_of
from tests.conftest import LiveServer


def start(esd: Esd, kind: str, name: str, parts: int) -> dict[str, object]:
    r = esd.post("checkpoint", {"checkpoint_type": kind, "filenames": [{"filename": name, "parts_number": parts}],
                                "params": {}})
    assert r.status_code == 200, r.text
    return dict(r.json())


def activate(esd: Esd, created: dict[str, object], name: str, tags: list[dict[str, object]]) -> httpx.Response:
    checkpoint = created["checkpoint"]
    assert isinstance(checkpoint, dict)
    return esd.put("checkpoint", {"checkpoint_id": checkpoint["id"], "status": "Active",
                                  "multi_parts_tags": {name: tags}})


def urls(created: dict[str, object], name: str) -> list[str]:
    presigned = created["s3PresignUrl"]
    assert isinstance(presigned, dict)
    return list(presigned[name])


def test_a_wrong_etag_changes_nothing_and_the_right_ones_then_work(esd: Esd, model_files: dict[str, Path]) -> None:
    data = model_files["lora"].read_bytes()
    created = start(esd, "Lora", "etag-lora.safetensors", 1)
    tags = esd.upload_parts(urls(created, "etag-lora.safetensors"), data)
    bad = [{"ETag": '"0123456789abcdef0123456789abcdef"', "PartNumber": 1}]
    r = activate(esd, created, "etag-lora.safetensors", bad)
    assert r.status_code == 400 and r.json()["statusCode"] == 400 and "ETag" in r.json()["error"]
    r = activate(esd, created, "etag-lora.safetensors", [{"ETag": tags[0]["ETag"], "PartNumber": 2}])
    assert r.status_code == 400
    assert "etag-lora.safetensors" not in esd.get("inference/get-lora-list").json()
    r = activate(esd, created, "etag-lora.safetensors", tags)
    assert r.status_code == 200 and r.json()["checkpoint"]["status"] == "Active"
    assert "etag-lora.safetensors" in esd.get("inference/get-lora-list").json()  # usable at once


@pytest.mark.parametrize("case", ["pickle", "torch-zip", "traversal", "symlink", "absolute", "garbage", "wrong-kind"])
def test_hostile_uploads_are_refused(esd: Esd, model_files: dict[str, Path], case: str, tmp_path: Path,
                                     esd_server: LiveServer) -> None:
    name = f"hostile-{case}.safetensors"
    if case == "pickle":
        data = pickle.dumps({"boom": print})  # a pickle renamed .safetensors
    elif case == "torch-zip":
        import torch

        torch.save({"w": torch.zeros(2)}, str(tmp_path / "z"))
        data = (tmp_path / "z").read_bytes()
    elif case == "traversal":
        data = tar_of(name, {"../../escaped.safetensors": model_files["lora"].read_bytes()})
    elif case == "absolute":
        data = tar_of(name, {"/tmp/escaped-abs.safetensors": model_files["lora"].read_bytes()})
    elif case == "symlink":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            link = tarfile.TarInfo("models/Lora/x.safetensors")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
        data = buf.getvalue()
    elif case == "garbage":
        data = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\0" * 64
    else:
        data = model_files["embedding"].read_bytes()  # an embedding declared as a LoRA
    created = start(esd, "Lora", name, 1)
    tags = esd.upload_parts(urls(created, name), data)
    r = activate(esd, created, name, tags)
    assert r.status_code == 400 and r.json()["statusCode"] == 400, r.text
    expected = {"pickle": "never loaded", "torch-zip": "never loaded", "traversal": "unsafe archive",
                "absolute": "unsafe archive", "symlink": "link", "garbage": "not a valid .safetensors",
                "wrong-kind": "not the Lora"}[case]
    assert expected in r.json()["error"]
    listed = {c["id"]: c for c in esd.get("checkpoints").json()["checkpoints"]}
    checkpoint = created["checkpoint"]
    assert isinstance(checkpoint, dict)
    assert listed[checkpoint["id"]]["status"] == "Disabled"
    assert name not in esd.get("inference/get-lora-list").json()
    home = esd_server.home
    assert not list(home.rglob("escaped*.safetensors")) and not Path("/tmp/escaped-abs.safetensors").exists()


def test_oversize_parts_and_bad_declarations_are_refused(esd: Esd) -> None:
    created = start(esd, "Lora", "big.safetensors", 1)
    url = urls(created, "big.safetensors")[0]
    r = httpx.put(url, content=b"\0" * (8 * 1024 * 1024 + 1))  # the test server takes 8 MiB a part
    assert r.status_code == 413
    assert httpx.put(url.replace("s=", "s=0"), content=b"x").status_code == 401  # a forged signature
    for body in ({"checkpoint_type": "Lora", "filenames": [], "params": {}},
                 {"checkpoint_type": "Lora", "filenames": [{"filename": "a/..", "parts_number": 1}]},
                 {"checkpoint_type": "Lora", "filenames": [{"filename": "x\u0000y.safetensors", "parts_number": 1}]},
                 {"checkpoint_type": "Lora", "filenames": [{"filename": "x.safetensors", "parts_number": 0}]},
                 {"checkpoint_type": "Lora", "filenames": [{"filename": "x.safetensors", "parts_number": 100000}]},
                 {"checkpoint_type": "Pickles", "filenames": [{"filename": "x.safetensors", "parts_number": 1}]},
                 {"filenames": "nope"}, [1, 2]):
        r = esd.post("checkpoint", body)
        assert r.status_code == 400 and r.json()["statusCode"] == 400, (body, r.text)
    r = esd.put("checkpoint", {"checkpoint_id": "no-such-id", "status": "Active", "multi_parts_tags": {}})
    assert r.status_code == 404 and r.json() == {"statusCode": 404, "error": r.json()["error"],
                                                 "errorMsg": r.json()["error"]}
    r = esd.http.post(esd.url("checkpoint"), content=b"{not json")
    assert r.status_code == 400 and r.json()["statusCode"] == 400


def test_disable_and_list_filters(esd: Esd, model_files: dict[str, Path]) -> None:
    data = model_files["hypernetwork"].read_bytes()
    checkpoint = esd.upload_checkpoint("hypernetworks", "hn-filter.safetensors", data)
    assert "hn-filter.safetensors" in esd.get("inference/get-hypernetwork-list").json()
    r = esd.put("checkpoint", {"checkpoint_id": checkpoint["id"], "status": "Disabled"})
    assert r.json()["checkpoint"]["status"] == "Disabled"
    assert "hn-filter.safetensors" not in esd.get("inference/get-hypernetwork-list").json()
    both = esd.http.get(esd.url("checkpoints"), params=[("status", "Disabled"), ("types", "hypernetworks"),
                                                        ("types", "Lora")]).json()["checkpoints"]
    assert checkpoint["id"] in {c["id"] for c in both} and {c["type"] for c in both} <= {"hypernetworks", "Lora"}
    assert {c["status"] for c in both} == {"Disabled"}


def test_a_model_from_a_file_uploaded_in_parts(esd: Esd, model_files: dict[str, Path]) -> None:
    data = model_files["checkpoint"].read_bytes()
    parts = -(-len(data) // PART)
    r = esd.post("model", {"model_type": "Stable-diffusion", "name": "local-base",
                           "filenames": [{"filename": "local-base.safetensors", "parts_number": parts}],
                           "params": {"create_model_params": {"new_model_name": "local-base"}}})
    assert r.status_code == 200 and r.json()["job"]["status"] == "Initial", r.text
    model_id = r.json()["job"]["id"]
    tags = esd.upload_parts(r.json()["s3PresignUrl"]["local-base.safetensors"], data)
    r = esd.put("model", {"model_id": model_id, "status": "Creating",
                          "multi_parts_tags": {"local-base.safetensors": tags}})
    assert r.status_code == 200 and r.json()["job"]["jobStatus"] == "Complete", r.text
    models = {m["id"]: m for m in esd.get("models").json()["models"]}
    assert models[model_id]["status"] == "Complete" and models[model_id]["output_s3_location"].endswith("/output")
    assert models[model_id]["params"]["resp"]["config_dict"]["family"] == "tiny"
    for bad in ({"model_type": "Stable-diffusion", "name": "x", "filenames": []},
                {"model_type": "Stable-diffusion", "name": "-bad-name", "filenames": []},
                {"model_type": "Stable-diffusion", "name": "ok", "checkpoint_id": "nope"}):
        r = esd.post("model", bad)
        assert r.status_code in (400, 404) and r.json()["statusCode"] == r.status_code, r.text
    r = esd.put("model", {"model_id": "nope", "status": "Creating"})
    assert r.status_code == 404 and r.json()["statusCode"] == 404


def test_a_model_whose_upload_is_not_a_checkpoint_fails(esd: Esd, model_files: dict[str, Path]) -> None:
    r = esd.post("model", {"name": "not-a-base", "filenames": [{"filename": "lora.safetensors", "parts_number": 1}]})
    model_id = r.json()["job"]["id"]
    tags = esd.upload_parts(r.json()["s3PresignUrl"]["lora.safetensors"], model_files["lora"].read_bytes())
    r = esd.put("model", {"model_id": model_id, "status": "Creating", "multi_parts_tags": {"lora.safetensors": tags}})
    assert r.status_code == 400 and "not the Stable-diffusion" in r.json()["error"]
    models = {m["id"]: m for m in esd.get("models", status="Fail").json()["models"]}
    assert models[model_id]["status"] == "Fail"


def test_merges_make_registered_checkpoints(esd: Esd, model_files: dict[str, Path], esd_keys: KeyFactory) -> None:
    listed = esd.get("checkpoints", status="Active", types="Stable-diffusion").json()["checkpoints"]
    names = [c["name"][0] for c in listed]
    for name in ("merge-a.safetensors", "merge-b.safetensors"):
        if name not in names:
            esd.upload_checkpoint("Stable-diffusion", name, model_files["checkpoint"].read_bytes())
    r = esd.post("inference/run-model-merge", {"primary_model_name": "merge-a.safetensors",
                                               "secondary_model_name": "merge-b", "tertiary_model_name": ""})
    assert r.status_code == 200 and r.json()["status"] == "inprogress", r.text
    merged = r.json()["model_name"]
    job = esd.wait_job(r.json()["inference_id"])
    assert job["status"] == "succeed" and job["taskType"] == "merge" and job["model_name"] == merged, job
    listed = esd.get("checkpoints", types="Stable-diffusion").json()["checkpoints"]
    made, = (c for c in listed if c["id"] == merged)
    assert made["status"] == "Active" and made["name"] == [f"{merged}.safetensors"]
    # add difference with a third; a LoRA is no checkpoint; families must match
    r = esd.post("inference/run-model-merge", {"primary_model_name": "merge-a.safetensors",
                                               "secondary_model_name": f"{merged}.safetensors",
                                               "tertiary_model_name": "merge-b.safetensors", "multiplier": 0.5,
                                               "method": "Add difference"})
    assert esd.wait_job(r.json()["inference_id"])["status"] == "succeed"
    r = esd.post("inference/run-model-merge", {"primary_model_name": "merge-a.safetensors",
                                               "secondary_model_name": "shapes"})  # the bundled model
    assert r.status_code == 400 and "different families" in r.json()["detail"]
    for body in ({"primary_model_name": "merge-a.safetensors", "secondary_model_name": "missing"},
                 {"primary_model_name": "merge-a.safetensors", "secondary_model_name": "merge-b", "multiplier": 2},
                 {"primary_model_name": "merge-a.safetensors", "secondary_model_name": "merge-b", "method": "median"}):
        r = esd.post("inference/run-model-merge", body)
        assert r.status_code == 400 and "detail" in r.json(), r.text
    # another tenant cannot merge this tenant's checkpoints
    other = Esd(esd.live, esd_keys())
    r = other.post("inference/run-model-merge", {"primary_model_name": "merge-a.safetensors",
                                                 "secondary_model_name": "merge-b.safetensors"})
    assert r.status_code == 400 and "not found" in r.json()["detail"]
    assert json.dumps(other.get("checkpoints").json()).count(merged) == 0


def test_controlnet_files_upload_and_list_but_inference_refuses_them(esd: Esd, endpoint: str,
                                                                     tmp_path: Path) -> None:
    from tests.models.test_intake import header_only

    path = header_only(tmp_path / "canny.safetensors", {"control_model.input_hint_block.0.weight": [16, 3, 3, 3],
                                                        "control_model.zero_convs.0.0.weight": [320, 320, 1, 1]})
    checkpoint = esd.upload_checkpoint("ControlNet", "canny.safetensors", path.read_bytes())
    assert checkpoint["status"] == "Active"
    assert "canny.safetensors" in esd.get("inference/get-controlnet-model-list").json()
    r = esd.post("inference/run-sagemaker-inference", {"sagemaker_endpoint": endpoint, "task_type": "txt2img",
                                                       "prompt": "x", "controlnet_model": ["canny.safetensors"]})
    assert r.status_code == 400 and "controlnet_model" in r.json()["detail"]
