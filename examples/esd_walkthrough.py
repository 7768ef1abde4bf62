"""The AWS-extension API end to end, the way the extension's client drives it.

Deploys a two-worker endpoint, uploads a model in parts (reading each part's ETag), runs inference on
it and saves the images, merges two checkpoints, and trains a LoRA on a dataset of four pictures:

    .venv/bin/diffusiond models export shapes shapes.safetensors        # a model file to upload
    ESD_URL=http://127.0.0.1:7860/esd ESD_KEY=sk-dfd-... python examples/esd_walkthrough.py shapes.safetensors

Outputs go to ./out/. Every request is an ordinary HTTP call (see README, "The AWS-extension API").
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

URL = os.environ.get("ESD_URL", "http://127.0.0.1:7860/esd").rstrip("/") + "/"
API = httpx.Client(headers={"x-api-key": os.environ["ESD_KEY"]}, timeout=300)
PART = 16 * 1024 * 1024  # bytes per part (the extension's client uses 1000 MiB)
OUT = Path("out")


def call(method: str, path: str, body: Any = None, **params: Any) -> Any:
    r = API.request(method, URL + path, json=body, params=params or None)
    if r.status_code >= 400:
        sys.exit(f"{method} {path}: {r.status_code} {r.text}")
    return r.json()


def deploy(name: str, workers: int) -> None:
    """A two-worker endpoint; it is InService once both workers have loaded their model."""
    call("POST", "inference/deploy-sagemaker-endpoint",
         {"instance_type": "ml.g5.xlarge", "initial_instance_count": workers, "endpoint_name": name})
    while (job := call("GET", "inference/get-endpoint-deployment-job", jobID=name))["endpoint_status"] == "Creating":
        time.sleep(1)
    if job["endpoint_status"] != "InService":
        sys.exit(f"endpoint {name}: {job}")
    print(f"endpoint {name}: InService with {job['current_instance_count']} workers")


def upload(path: Path, kind: str = "Stable-diffusion", name: str | None = None) -> str:
    """POST /checkpoint, PUT each part to its URL (keeping the ETag), PUT /checkpoint Active."""
    name = name or path.name
    data = path.read_bytes()
    parts = max(1, -(-len(data) // PART))
    created = call("POST", "checkpoint", {"checkpoint_type": kind,
                                          "filenames": [{"filename": name, "parts_number": parts}], "params": {}})
    tags = []
    for i, url in enumerate(created["s3PresignUrl"][name]):
        r = httpx.put(url, content=data[i * PART:(i + 1) * PART], timeout=300)  # no key: the URL is signed
        r.raise_for_status()
        tags.append({"ETag": r.headers["ETag"], "PartNumber": i + 1})
    done = call("PUT", "checkpoint", {"checkpoint_id": created["checkpoint"]["id"], "status": "Active",
                                      "multi_parts_tags": {name: tags}})
    print(f"uploaded {name} in {parts} part(s): {done['checkpoint']['status']}")
    return str(done["checkpoint"]["id"])


def wait(job_id: str) -> dict[str, Any]:
    while (job := call("GET", "inference/get-inference-job", jobID=job_id))["status"] == "inprogress":
        time.sleep(1)
    return dict(job)


def infer(endpoint: str, model: str, prompt: str) -> None:
    started = call("POST", "inference/run-sagemaker-inference", {
        "sagemaker_endpoint": endpoint, "task_type": "txt2img", "stable_diffusion_model": [model],
        "prompt": prompt, "width": 64, "height": 64, "steps": 20, "cfg_scale": 5, "seed": 7, "batch_size": 2})
    job = wait(started["inference_id"])
    if job["status"] != "succeed":
        sys.exit(f"inference: {job}")
    OUT.mkdir(exist_ok=True)
    for url in call("GET", "inference/get-inference-job-image-output", jobID=job["InferenceJobId"]):
        target = OUT / f"{job['InferenceJobId'][:8]}-{url.split('?')[0].rsplit('/', 1)[-1]}"
        target.write_bytes(httpx.get(url).content)
        print(f"saved {target}")


def merge(primary: str, secondary: str) -> str:
    started = call("POST", "inference/run-model-merge", {"primary_model_name": primary,
                                                         "secondary_model_name": secondary, "multiplier": 0.5})
    job = wait(started["inference_id"])
    print(f"merge: {job['status']}, registered as {started['model_name']}")
    return str(started["model_name"])


def pictures() -> dict[str, bytes]:
    """Four pictures of the concept to learn: a purple triangle, on four backgrounds."""
    out = {}
    for i, background in enumerate(((240, 240, 240), (30, 30, 30), (200, 230, 255), (255, 230, 200))):
        image = Image.new("RGB", (64, 64), background)
        ImageDraw.Draw(image).polygon([(32, 10), (54, 52), (10, 52)], fill=(130, 40, 170))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out[f"{i}.png"] = buf.getvalue()
    return out


def train(checkpoint_id: str, checkpoint_name: str) -> None:
    """A dataset, a training base from the uploaded checkpoint, and a LoRA training on them."""
    files = pictures()
    dataset = f"triangles-{int(time.time())}"
    created = call("POST", "dataset", {"dataset_name": dataset, "params": {"description": "purple triangles"},
                                       "content": [{"filename": f, "name": f, "type": "image"} for f in files]})
    for name, data in files.items():
        httpx.put(created["s3PresignUrl"][name], content=data).raise_for_status()
    call("PUT", "dataset", {"dataset_name": dataset, "status": "Enabled"})
    model = call("POST", "model", {"model_type": "Stable-diffusion", "name": "triangle-base",
                                   "checkpoint_id": checkpoint_id, "filenames": [], "params": {}})["job"]
    call("PUT", "model", {"model_id": model["id"], "status": "Creating"})
    config = {"concepts_list": [{"instance_prompt": "a zxq triangle", "instance_token": "zxq"}],
              "resolution": 64, "max_train_steps": 100, "train_batch_size": 4, "use_lora": True,
              "lora_unet_rank": 4, "lora_learning_rate": 1e-3}
    job = call("POST", "train", {"train_type": "Stable-diffusion", "model_id": model["id"], "filenames": [],
                                 "params": {"training_params": {"model_name": "zxq-lora", "dataset_name": dataset},
                                            "db_config": config}})["job"]
    started = call("PUT", "train", {"train_job_id": job["id"], "status": "Training"})["job"]
    print(f"training {started['id']}: {started['status']} (the LoRA will be {started.get('output_model')})")
    deadline = time.monotonic() + float(os.environ.get("ESD_TRAIN_WAIT", "1800"))
    while (status := next(t for t in call("GET", "trains")["trainJobs"] if t["id"] == job["id"]))["status"] == \
            "Training" and time.monotonic() < deadline:
        time.sleep(5)
    print(f"training: {json.dumps(status)}")
    if status["status"] == "Complete":
        loras = call("GET", "inference/get-lora-list")
        print(f"the LoRA {status['output_model']} is listed: {status['output_model'] in loras}")
        infer("demo", checkpoint_name, f"a zxq triangle <lora:{status['output_model']}:1>")


def main() -> None:
    model = Path(sys.argv[1] if len(sys.argv) > 1 else "shapes.safetensors")
    print(call("GET", "inference/test-connection"))
    deploy("demo", 2)
    checkpoint_id = upload(model)
    infer("demo", model.name, "a red circle on a blue background")
    upload(model, name="second.safetensors")
    merged = merge(model.name, "second.safetensors")
    infer("demo", f"{merged}.safetensors", "a green square")
    train(checkpoint_id, model.name)


if __name__ == "__main__":
    main()
