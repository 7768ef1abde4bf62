"""A server for the AWS-extension contract tests, the original client's moves, and model files.

One server for the package (no default workers: every inference runs on a named endpoint's spawned
workers), one endpoint deployed on it, and helpers that do what the original client does: multipart
uploads through the signed part URLs (reading each part's ETag), dataset uploads, polling.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import LiveServer, free_port, prepare_home

KeyFactory = Callable[..., str]
PREFIX = "/esd"
PART = 2 * 1024 * 1024  # the test client's part size (the original uses 1000 MiB)


def start_esd_server(home: Path, tiny_sd_dir: Path, **env: str) -> LiveServer:
    prepare_home(home, tiny_sd_dir)
    live = LiveServer(home=home, port=free_port(), env={
        "DIFFUSIOND_DEFAULT_MODEL": "tiny", "DIFFUSIOND_WORKERS": "0", "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1", "DIFFUSIOND_MAX_MODEL_PART_BYTES": str(8 * 1024 * 1024),
        "DIFFUSIOND_MAX_MODEL_BYTES": str(64 * 1024 * 1024), **env})
    live.start()
    return live


@pytest.fixture(scope="session")
def esd_server(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[LiveServer]:
    live = start_esd_server(tmp_path_factory.mktemp("esd"), tiny_sd_dir)
    yield live
    live.stop()


@pytest.fixture(scope="session")
def esd_keys(esd_server: LiveServer) -> Iterator[KeyFactory]:
    services = esd_server.services()

    def make(credits: float = 100.0) -> str:
        return services.keys.create("esd-test", credits_milli=round(credits * 1000)).key

    yield make
    services.db.dispose()


class Esd:
    """A client of the AWS-extension API, as the original extension drives it."""

    def __init__(self, live: LiveServer, key: str) -> None:
        self.live = live
        self.key = key
        # the original saves the gateway URL with a trailing slash and sends x-api-key
        self.base = f"{live.url}{PREFIX}/"
        self.http = httpx.Client(headers={"x-api-key": key}, timeout=120)

    def url(self, path: str) -> str:
        return self.base + path.lstrip("/")

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(self.url(path), params=params)

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(self.url(path), json=body)

    def put(self, path: str, body: Any) -> httpx.Response:
        return self.http.put(self.url(path), json=body)

    def upload_parts(self, urls: list[str], data: bytes, part: int = PART) -> list[dict[str, Any]]:
        """PUT each part to its URL (no key, no Content-Type), keep each answer's ETag."""
        tags = []
        for i, url in enumerate(urls):
            r = httpx.put(url, content=data[i * part:(i + 1) * part], timeout=120)
            r.raise_for_status()
            tags.append({"ETag": r.headers["ETag"], "PartNumber": i + 1})
        return tags

    def upload_checkpoint(self, kind: str, name: str, data: bytes, part: int = PART) -> dict[str, Any]:
        parts = max(1, -(-len(data) // part))
        r = self.post("checkpoint", {"checkpoint_type": kind, "filenames": [{"filename": name, "parts_number": parts}],
                                     "params": {"message": "placeholder for chkpts upload test"}})
        assert r.status_code == 200, r.text
        created = r.json()
        tags = self.upload_parts(created["s3PresignUrl"][name], data, part)
        r = self.put("checkpoint", {"checkpoint_id": created["checkpoint"]["id"], "status": "Active",
                                    "multi_parts_tags": {name: tags}})
        assert r.status_code == 200, r.text
        return dict(r.json()["checkpoint"])

    def wait_endpoint(self, name: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.get("inference/get-endpoint-deployment-job", jobID=name).json()
            if item.get("endpoint_status") not in (None, "Creating"):
                return dict(item)
            time.sleep(0.5)
        raise AssertionError(f"endpoint {name} did not leave Creating")

    def wait_job(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.get("inference/get-inference-job", jobID=job_id).json()
            if item["status"] != "inprogress":
                return dict(item)
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} is still in progress")


@pytest.fixture(scope="session")
def esd(esd_server: LiveServer, esd_keys: KeyFactory) -> Esd:
    return Esd(esd_server, esd_keys())


@pytest.fixture(scope="session")
def endpoint(esd: Esd) -> str:
    """One endpoint, one worker, shared by the inference tests of the session. Deployed with the
    v1.0.0 client's body (no name): its name is found in the deployment jobs, as the client finds it."""
    r = esd.post("inference/deploy-sagemaker-endpoint", {"instance_type": "ml.g4dn.xlarge",
                                                          "initial_instance_count": 1})
    assert r.status_code == 200 and r.json() == 0, r.text
    job_id = r.headers["X-Endpoint-Deployment-Job-Id"]
    jobs = esd.get("inference/list-endpoint-deployment-jobs").json()
    mine, = (j for j in jobs if j["EndpointDeploymentJobId"] == job_id)
    assert mine["status"] == "inprogress" and mine["endpoint_status"] == "Creating"
    name = str(mine["endpoint_name"])
    assert name == f"infer-endpoint-{job_id[:7]}" and "+" not in name
    assert esd.wait_endpoint(name)["endpoint_status"] == "InService"
    return name


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> dict[str, Path]:
    """The tiny model as a self-describing single file, and its LoRA, embedding and hypernetwork."""
    from diffusiond.testing import tiny_models

    root = tmp_path_factory.mktemp("esd-files")
    return {
        "checkpoint": tiny_models.save_tiny_single_file(tiny_sd_dir, root / "tiny-ckpt.safetensors"),
        "lora": tiny_models.save_tiny_lora(root / "tinylora.safetensors"),
        "embedding": tiny_models.save_tiny_embedding(root / "tinyemb.safetensors"),
        "hypernetwork": tiny_models.save_tiny_hypernetwork(root / "tinyhn.safetensors"),
    }


def tar_of(name: str, members: dict[str, bytes]) -> bytes:
    """A tar archive as the original client makes one (`models/<type>/<name>` inside)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def picture(colour: tuple[int, int, int], size: int = 64, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image = Image.new("RGB", (size, size), colour)
    image.paste((255 - colour[0], 255 - colour[1], 255 - colour[2]), (size // 4, size // 4, size // 2, size // 2))
    image.save(buf, format=fmt)
    return buf.getvalue()
