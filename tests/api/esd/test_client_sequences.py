"""The original extension client's call sequences, against a real server (wire notes, section 2)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from PIL import Image

from tests.api.esd.conftest import Esd, picture, tar_of

CONFIG_TYPE = "text/plain;charset=UTF-8"


def test_connection_needs_no_key_and_tolerates_slashes(esd: Esd) -> None:
    for url in (esd.url("inference/test-connection"), esd.base + "/inference/test-connection/"):
        r = httpx.get(url)  # no key: an API Gateway mock in the original
        r.raise_for_status()
        assert r.json() == {"message": "Success"}
    assert httpx.get(esd.url("inference/list-inference-jobs")).status_code == 401


def test_checkpoint_upload_in_parts_as_the_client_does(esd: Esd, model_files: dict[str, Path]) -> None:
    # the client tars the model as models/<type>/<name> (with a .yaml) into an archive named like it
    data = tar_of("tiny-ckpt.safetensors", {"models/Stable-diffusion/tiny-ckpt.safetensors":
                                            model_files["checkpoint"].read_bytes(),
                                            "models/Stable-diffusion/tiny-ckpt.yaml": b"model: {}\n"})
    parts = -(-len(data) // (2 * 1024 * 1024))
    assert parts >= 2
    r = esd.post("checkpoint", {"checkpoint_type": "Stable-diffusion",
                                "filenames": [{"filename": "tiny-ckpt.safetensors", "parts_number": parts}],
                                "params": {"message": "placeholder for chkpts upload test"}})
    assert r.status_code == 200 and r.json()["statusCode"] == 200
    created = r.json()
    assert created["checkpoint"]["status"] == "Initial"
    upload = created["checkpoint"]["params"]["multipart_upload"]["tiny-ckpt.safetensors"]
    assert upload["upload_id"] and upload["key"].endswith("tiny-ckpt.safetensors")
    urls = created["s3PresignUrl"]["tiny-ckpt.safetensors"]
    assert len(urls) == parts
    tags = esd.upload_parts(urls, data)
    assert all(t["ETag"].startswith('"') for t in tags)  # quoted, as S3 sends it
    r = esd.put("/checkpoint", {"checkpoint_id": created["checkpoint"]["id"], "status": "Active",
                                "multi_parts_tags": {"tiny-ckpt.safetensors": tags[::-1]}})  # any order
    assert r.status_code == 200 and r.json()["checkpoint"]["status"] == "Active", r.text
    listed = esd.get("checkpoints", status="Active", types="Stable-diffusion").json()
    mine, = (c for c in listed["checkpoints"] if c["id"] == created["checkpoint"]["id"])
    assert mine["name"] == ["tiny-ckpt.safetensors"] and mine["s3Location"].startswith("s3://")
    assert isinstance(mine["created"], float)


LISTS = {"Lora": "lora", "embeddings": "texual-inversion", "hypernetworks": "hypernetwork"}


def upload_extras(esd: Esd, files: dict[str, Path]) -> None:
    for kind, key in (("Lora", "lora"), ("embeddings", "embedding"), ("hypernetworks", "hypernetwork")):
        if files[key].name not in esd.get(f"inference/get-{LISTS[kind]}-list").json():
            esd.upload_checkpoint(kind, files[key].name, files[key].read_bytes())


def client_inference(esd: Esd, endpoint: str, config: dict[str, Any], models: dict[str, dict[str, str]]) -> str:
    """The client's inference: its parameters PUT as config/aigc.json, then the model map."""
    r = esd.get("inference/generate-s3-presigned-url-for-uploading", key="config/aigc.json")
    r.raise_for_status()
    url = r.text.strip('"')  # the client strips the JSON string's quotes
    httpx.put(url, content=json.dumps(config), headers={"Content-Type": CONFIG_TYPE}).raise_for_status()
    body = {"Stable-diffusion": {}, "embeddings": {}, "Lora": {}, "hypernetworks": {}, "ControlNet": {}, **models,
            "sagemaker_endpoint": endpoint, "task_type": "txt2img"}
    r = esd.http.post(esd.url("inference/run-sagemaker-inference"), json=body,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "inprogress" and r.json()["endpoint_name"] == endpoint
    return str(r.json()["inference_id"])


def test_inference_the_clients_way_with_lora_and_textual_inversion(
        esd: Esd, endpoint: str, model_files: dict[str, Path], tmp_path: Path) -> None:
    if "tiny-ckpt.safetensors" not in json.dumps(esd.get("checkpoints").json()):
        test_checkpoint_upload_in_parts_as_the_client_does(esd, model_files)
    upload_extras(esd, model_files)
    assert "tinylora.safetensors" in esd.get("inference/get-lora-list").json()
    assert "tinyemb.safetensors" in esd.get("inference/get-texual-inversion-list").json()
    config = {"txt2img_prompt": "a red circle tinyemb <lora:tinylora:0.8>", "txt2img_neg_prompt": "blurry",
              "txt2img_steps": "3", "txt2img_sampling_method": "Euler a", "txt2img_width": "64",
              "txt2img_height": "64", "txt2img_seed": "1234", "txt2img_cfg_scale": "6.5", "txt2img_batch_count": "1",
              "txt2img_batch_size": "2", "txt2img_enable_hr": False, "txt2img_denoising_strength": "0.7",
              "txt2img_sagemaker_stable_diffusion_checkpoint": "tiny-ckpt.safetensors",
              "aws_api_gateway_url": esd.base, "sagemaker_endpoint": endpoint}
    job_id = client_inference(esd, endpoint, config, {
        "Stable-diffusion": {"tiny-ckpt.safetensors": "s3://x/Stable-diffusion/tiny-ckpt.safetensors"},
        "Lora": {"tinylora.safetensors": "s3://x/Lora/tinylora.safetensors"},
        "embeddings": {"tinyemb.safetensors": "s3://x/embeddings/tinyemb.safetensors"}})
    # the client lists the jobs and sorts "<time>-->taskType-->status-->id" descending
    jobs = esd.get("inference/list-inference-jobs").json()
    labels = sorted((f"{j.get('completeTime') or j['startTime']}-->{j['taskType']}-->{j['status']}-->"
                     f"{j['InferenceJobId']}" for j in jobs), reverse=True)
    assert any(label.endswith(f"-->txt2img-->inprogress-->{job_id}") for label in labels)
    job = esd.wait_job(job_id)
    assert job["status"] == "succeed", job
    assert job["image_names"] == ["image_0.jpg", "image_1.jpg"]
    assert len(job["completeTime"]) == 19 and job["completeTime"].count("-") == 5
    # the client downloads each image, naming it by the URL's basename
    urls = esd.get("inference/get-inference-job-image-output", jobID=job_id).json()
    names = [os.path.basename(url).split("?")[0] for url in urls]
    assert names == ["image_0.jpg", "image_1.jpg"]
    images = [Image.open(io.BytesIO(httpx.get(url).content)) for url in urls]
    assert [(i.format, i.size) for i in images] == [("JPEG", (64, 64))] * 2
    # ... then the parameter file, opened by the exact name <jobID>_param.json
    url, = esd.get("inference/get-inference-job-param-output", jobID=job_id).json()
    assert urlparse(url).path.endswith(f"/{job_id}_param.json")
    path = tmp_path / os.path.basename(urlparse(url).path)
    path.write_bytes(httpx.get(url).content)
    params = json.loads((tmp_path / f"{job_id}_param.json").read_text())
    info = json.loads(params["info"])
    assert info["all_seeds"] == [1234, 1235] and info["seed"] == 1234
    assert "tinyemb" in info["infotexts"][0] and "Steps: 3" in info["infotexts"][0]
    assert params["parameters"]["prompt"] == config["txt2img_prompt"] and params["inference_id"] == job_id


def test_dataset_upload_model_and_training_as_the_client_does(esd: Esd, model_files: dict[str, Path]) -> None:
    if "tiny-ckpt.safetensors" not in json.dumps(esd.get("checkpoints").json()):
        test_checkpoint_upload_in_parts_as_the_client_does(esd, model_files)
    # the dataset client joins with a leading slash: .../esd//dataset
    name = f"shapes-{int(time.time() * 1000)}"
    files = [f"{i}.png" for i in range(4)]
    r = esd.http.post(esd.base + "/dataset", json={
        "dataset_name": name, "content": [{"filename": f, "name": f, "type": "image", "params": {}} for f in files],
        "params": {"description": "four pictures"}})
    assert r.status_code == 200 and r.json()["datasetName"] == name, r.text
    for i, f in enumerate(files):
        httpx.put(r.json()["s3PresignUrl"][f], content=picture((60 * i, 90, 200))).raise_for_status()
    r = esd.http.put(esd.base + "/dataset", json={"dataset_name": name, "status": "Enabled"})
    assert r.json() == {"statusCode": 200, "datasetName": name, "status": "Enabled"}
    listed = esd.get("datasets", dataset_status="Enabled").json()["datasets"]
    mine, = (d for d in listed if d["datasetName"] == name)
    assert mine["description"] == "four pictures" and mine["s3"].endswith(f"/dataset/{name}")
    data = esd.http.get(esd.base + f"/dataset/{name}/data").json()
    assert sorted(d["name"] for d in data["data"]) == files and {d["dataStatus"] for d in data["data"]} == {"Enabled"}
    for item in data["data"]:  # the client opens each preview as an image
        assert Image.open(io.BytesIO(httpx.get(item["preview_url"]).content)).size == (64, 64)
    # create a model from the cloud checkpoint (the dreambooth client's "model" join relies on the slash)
    ckpt, = (c for c in esd.get("checkpoints", status="Active", types="Stable-diffusion").json()["checkpoints"]
             if c["name"] == ["tiny-ckpt.safetensors"])
    r = esd.http.post(esd.base + "model", json={
        "model_type": "Stable-diffusion", "name": "tinybase", "checkpoint_id": ckpt["id"], "filenames": [],
        "params": {"ckpt_from_cloud": True, "s3_ckpt_path": f"{ckpt['s3Location']}/{ckpt['name'][0]}",
                   "create_model_params": {"new_model_name": "tinybase", "ckpt_path": "tiny-ckpt", "from_hub": False,
                                           "new_model_url": "", "new_model_token": "", "extract_ema": False,
                                           "train_unfrozen": False, "is_512": True}}})
    assert r.status_code == 200 and r.json()["job"]["status"] == "Initial" and r.json()["s3PresignUrl"] == {}, r.text
    model_id = r.json()["job"]["id"]
    r = esd.put("model", {"model_id": model_id, "status": "Creating", "multi_parts_tags": {}})
    assert r.status_code == 200 and r.json()["job"]["id"] == model_id, r.text
    models = esd.get("models", types="Stable-diffusion", status="Complete").json()["models"]
    model, = (m for m in models if m["id"] == model_id)
    assert model["params"]["resp"]["config_dict"]["model_name"] == "tinybase"
    # train: db_config.tar uploaded to its URL, the dataset named by its s3 path
    db_config = {"model_name": "tinylora2", "concepts_list": [{"instance_prompt": "sks shapes", "instance_token": "sks",
                                                               "instance_data_dir": name}],
                 "resolution": 64, "max_train_steps": 4, "train_batch_size": 2, "use_lora": True,
                 "lora_unet_rank": 4, "lora_learning_rate": 1e-3, "save_lora_for_extra_net": True}
    r = esd.post("train", {"train_type": "Stable-diffusion", "model_id": model_id, "filenames": ["db_config.tar"],
                           "params": {"training_params": {"model_name": "tinylora2", "model_type": "Lora",
                                                          "s3_data_path_list": [mine["s3"]],
                                                          "training_instance_type": "ml.g5.2xlarge"}}})
    assert r.status_code == 200 and r.json()["job"]["status"] == "Initial", r.text
    train_id = r.json()["job"]["id"]
    archive = tar_of("db_config.tar", {"db_config.json": json.dumps(db_config).encode()})
    httpx.put(r.json()["s3PresignUrl"]["db_config.tar"], content=archive).raise_for_status()
    r = esd.put("train", {"train_job_id": train_id, "status": "Training"})
    assert r.status_code == 200 and r.json()["job"]["status"] in ("Training", "Complete"), r.text
    trains = esd.get("trains", types="Stable-diffusion").json()["trainJobs"]
    mine_train, = (tj for tj in trains if tj["id"] == train_id)
    assert mine_train["modelName"] == "tinylora2" and mine_train["sagemakerTrainName"]
