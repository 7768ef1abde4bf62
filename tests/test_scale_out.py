"""Scale-out on one machine: two API replicas and a separate worker process sharing PostgreSQL,
an S3-compatible blob store over HTTP, and Redis rate limits."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from diffusiond.config import Settings
from diffusiond.domain.models import ModelKind
from diffusiond.services import build_services
from diffusiond.store.tables import ApiKeyRow
from tests.backends import database_url
from tests.conftest import ADMIN_KEY, free_port

pytestmark = pytest.mark.timeout(600)


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url("redis://127.0.0.1:6379/0").ping())
    except Exception:
        return False


@pytest.fixture
def cluster(tmp_path: Path, tiny_sd_dir: Path) -> Iterator[dict[str, object]]:
    if not redis_available():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    moto_server = pytest.importorskip("moto.server")
    import boto3

    s3_port = free_port()
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    s3.start()
    bucket = f"diffusiond-{uuid.uuid4().hex[:8]}"
    aws = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket=bucket)
    procs: list[subprocess.Popen[bytes]] = []
    with database_url("postgres", tmp_path) as db_url:
        common = {
            **os.environ, **aws, "HF_HUB_OFFLINE": "1", "DIFFUSIOND_DATABASE_URL": db_url,
            "DIFFUSIOND_BLOB_STORE": "s3", "DIFFUSIOND_S3_BUCKET": bucket,
            "DIFFUSIOND_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}", "DIFFUSIOND_RATE_LIMITER": "redis",
            "DIFFUSIOND_BOOTSTRAP_KEY": ADMIN_KEY, "DIFFUSIOND_SIGNING_SECRET": "shared-secret",
            "DIFFUSIOND_LOG_LEVEL": "warning", "DIFFUSIOND_TORCH_THREADS": "1",
            # a small default bucket (6, refilling 0.2/s) so the shared limit is observable
            "DIFFUSIOND_RATE_LIMIT_BURST": "6", "DIFFUSIOND_RATE_LIMIT_PER_SECOND": "0.2",
        }
        settings = Settings(database_url=db_url, home=tmp_path / "admin", executor="none")
        admin = build_services(settings, with_workers=False)
        admin.db.migrate()
        admin.models.add(tiny_sd_dir, "tiny", ModelKind.CHECKPOINT, family="tiny")
        created = admin.keys.create("admin", admin=True, credits_milli=100_000, key=ADMIN_KEY)
        with admin.db.session() as s:  # the test's own polling key refills fast
            row = s.get(ApiKeyRow, created.key_id)
            assert row is not None
            row.rate_limit = 1000.0
        ports = []
        logs = [tmp_path / name for name in ("api0.log", "api1.log", "worker.log")]

        def start(command: str, env: dict[str, str], log: Path) -> None:
            with log.open("wb") as out:  # the child keeps its own copy of the descriptor
                procs.append(subprocess.Popen([sys.executable, "-m", "diffusiond.cli", command], env=env,
                                              stdout=out, stderr=subprocess.STDOUT))

        try:
            for i in range(2):  # API replicas: no workers, no torch
                port = free_port()
                start("serve", {**common, "DIFFUSIOND_EXECUTOR": "none", "DIFFUSIOND_PORT": str(port),
                                "DIFFUSIOND_HOME": str(tmp_path / f"api{i}")}, logs[i])
                ports.append(port)
            start("worker", {**common, "DIFFUSIOND_HOME": str(tmp_path / "worker")}, logs[2])
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            # Three fresh interpreters importing the app (and the worker torch) on 2 shared cores: a
            # slow start is not what this test is about.
            deadline = time.monotonic() + 180
            for url in urls:
                while True:
                    try:
                        if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    exited = [p.args for p in procs if p.poll() is not None]
                    if exited or time.monotonic() > deadline:
                        output = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                                           for log in logs if log.exists())
                        pytest.fail(f"replicas did not start (exited: {exited})\n{output}")
                    time.sleep(0.2)
            yield {"urls": urls, "admin": admin}
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
            admin.db.dispose()
            s3.stop()


def test_replicas_share_jobs_blobs_and_limits(cluster: dict[str, object]) -> None:
    a_url, b_url = cluster["urls"]  # type: ignore[misc]
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = {"text_prompts": [{"text": "a red circle"}], "width": 64, "height": 64, "steps": 10, "seed": 9}
    with httpx.Client(base_url=a_url, headers=headers, timeout=180) as a, \
            httpx.Client(base_url=b_url, headers=headers, timeout=180) as b:
        # A synchronous request on replica A is run by the separate worker process
        r = a.post("/v1/generation/tiny/text-to-image", json=body)
        assert r.status_code == 200, r.text
        img = Image.open(io.BytesIO(base64.b64decode(r.json()["artifacts"][0]["base64"])))
        assert img.size == (64, 64)
        # A job submitted on B is visible on A, and its output URL (presigned S3) serves the image
        stages = [{"type": "INPUT_INITIALIZE", "inputInitialize": {"seed": "3", "count": "1"}},
                  {"type": "DIFFUSION", "diffusion": {"width": "64", "height": "64", "sdModel": "tiny",
                                                      "prompts": [{"text": "a blue square"}], "steps": "10"}}]
        r = b.post("/v1/jobs", json={"requestId": "scale-1", "stages": stages})
        assert r.status_code == 200, r.text
        job = r.json()["job"]
        deadline = time.monotonic() + 120
        while True:
            seen = a.get(f"/v1/jobs/{job['id']}").json()["job"]
            if seen["status"] in ("SUCCESS", "FAILED", "CANCELED") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert seen["status"] == "SUCCESS", seen
        url = seen["successInfo"]["images"][0]["url"]
        assert "Signature" in url and "/v1/blobs/" not in url  # a presigned S3 URL, not the API's
        assert Image.open(io.BytesIO(httpx.get(url).content)).size == (64, 64)
    # One token bucket per key across both replicas (Redis): 6 requests pass, alternating replicas,
    # then both refuse; per-replica buckets would have let all 8 through.
    admin = cluster["admin"]
    key = admin.keys.create("limited", credits_milli=1000).key  # type: ignore[attr-defined]
    codes = [httpx.get((a_url, b_url)[i % 2] + "/v1/user/balance", headers={"x-api-key": key}).status_code
             for i in range(8)]
    assert codes == [200] * 6 + [429] * 2
