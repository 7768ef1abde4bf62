"""Tenant isolation on every operation that takes an id or a name: another tenant's is unknown."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.api.esd.conftest import Esd, KeyFactory, picture


def test_another_tenants_ids_and_names_are_unknown(esd: Esd, endpoint: str, esd_keys: KeyFactory,
                                                   model_files: dict[str, Path]) -> None:
    # tenant A: a job, a checkpoint, a model, a dataset and a training
    a = esd
    r = a.post("inference/run-sagemaker-inference", {"sagemaker_endpoint": endpoint, "task_type": "txt2img",
                                                     "prompt": "mine", "width": 64, "height": 64, "steps": 2})
    job_id = r.json()["inference_id"]
    assert a.wait_job(job_id)["status"] == "succeed"
    checkpoint = a.upload_checkpoint("Lora", "private-lora.safetensors", model_files["lora"].read_bytes())
    base = a.upload_checkpoint("Stable-diffusion", "private-base.safetensors", model_files["checkpoint"].read_bytes())
    model_id = a.post("model", {"name": "private", "checkpoint_id": base["id"]}).json()["job"]["id"]
    assert a.put("model", {"model_id": model_id, "status": "Creating"}).json()["job"]["jobStatus"] == "Complete"
    dataset = f"private-{int(time.time() * 1000)}"
    r = a.post("dataset", {"dataset_name": dataset, "content": [{"filename": "1.png"}], "params": {}})
    httpx.put(r.json()["s3PresignUrl"]["1.png"], content=picture((1, 2, 3))).raise_for_status()
    assert a.put("dataset", {"dataset_name": dataset, "status": "Enabled"}).status_code == 200
    train_id = a.post("train", {"model_id": model_id, "params": {}, "filenames": []}).json()["job"]["id"]

    b = Esd(esd.live, esd_keys())
    # inference: jobs, outputs, endpoints
    assert b.get("inference/get-inference-job", jobID=job_id).status_code == 404
    assert b.get("inference/get-inference-job-image-output", jobID=job_id).json() == []
    assert b.get("inference/get-inference-job-param-output", jobID=job_id).json() == []
    assert b.get("inference/list-inference-jobs").json() == []
    assert b.get("inference/get-endpoint-deployment-job", jobID=endpoint).json() == {}
    assert b.get("inference/list-endpoint-deployment-jobs").json() == []
    r = b.post("inference/run-sagemaker-inference", {"sagemaker_endpoint": endpoint, "task_type": "txt2img",
                                                     "prompt": "theirs"})
    assert r.json()["status"] == "failure" and "not found" in r.json()["error"]
    assert b.post("inference/delete-sagemaker-endpoint", {"delete_endpoint_list": [endpoint]}).status_code == 404
    assert a.get("inference/get-endpoint-deployment-job", jobID=endpoint).json()["endpoint_status"] == "InService"
    # models: lists, lookups by name, updates by id
    assert "private-lora.safetensors" not in b.get("inference/get-lora-list").json()
    assert b.get("checkpoints").json()["checkpoints"] == [] and b.get("models").json()["models"] == []
    assert b.put("checkpoint", {"checkpoint_id": checkpoint["id"], "status": "Disabled"}).status_code == 404
    assert b.post("model", {"name": "steal", "checkpoint_id": base["id"]}).status_code == 404
    assert b.put("model", {"model_id": model_id, "status": "Creating"}).status_code == 404
    r = b.post("inference/run-sagemaker-inference", {"sagemaker_endpoint": endpoint, "task_type": "txt2img",
                                                     "prompt": "x <lora:private-lora:1>"})
    assert r.json()["status"] == "failure"  # the endpoint is checked first; names are private too:
    assert b.post("inference/run-model-merge", {"primary_model_name": "private-base.safetensors",
                                                "secondary_model_name": "private-base"}).status_code == 400
    # training and datasets
    assert b.post("train", {"model_id": model_id, "params": {}}).status_code == 404
    assert b.put("train", {"train_job_id": train_id, "status": "Training"}).status_code == 404
    assert b.put("train", {"train_job_id": train_id, "status": "Whatever"}).status_code == 404
    assert b.get("trains").json()["trainJobs"] == []
    assert b.put("dataset", {"dataset_name": dataset, "status": "Disabled"}).status_code == 404
    assert b.get(f"dataset/{dataset}/data").status_code == 404
    assert b.get(f"{dataset}/data").status_code == 404
    assert b.get("datasets").json()["datasets"] == []
    # the same name is free for another tenant, and stays apart
    assert b.post("dataset", {"dataset_name": dataset, "content": [{"filename": "1.png"}]}).status_code == 200
    assert a.get("datasets", dataset_status="Enabled").json()["datasets"][0]["status"] == "Enabled"
    assert json.dumps(a.get(f"dataset/{dataset}/data").json()).count("1.png") == 2
