"""With the S3 blob store, upload URLs are S3's own presigned ones (multipart for checkpoints), and
what arrives is checked and registered all the same (moto's S3 server on loopback)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.api.esd.conftest import Esd, picture, start_esd_server
from tests.conftest import LiveServer, free_port

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_live(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Iterator[tuple[LiveServer, str]]:
    moto_server = pytest.importorskip("moto.server")
    import boto3

    port = free_port()
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    endpoint = f"http://127.0.0.1:{port}"
    bucket = f"esd-{uuid.uuid4().hex[:8]}"
    aws = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=bucket)
    import os

    saved = {k: os.environ.get(k) for k in aws}
    os.environ.update(aws)  # for the test's own services, which read the same store
    live = start_esd_server(tmp_path_factory.mktemp("esd-s3"), tiny_sd_dir, DIFFUSIOND_BLOB_STORE="s3",
                            DIFFUSIOND_S3_BUCKET=bucket, DIFFUSIOND_S3_ENDPOINT_URL=endpoint,
                            DIFFUSIOND_S3_PREFIX="pre", **aws)
    try:
        yield live, endpoint
    finally:
        live.stop()
        s3.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_checkpoints_go_to_s3_in_presigned_parts_and_merge_from_there(
        s3_live: tuple[LiveServer, str], model_files: dict[str, Path]) -> None:
    live, s3_endpoint = s3_live
    services = live.services()
    esd = Esd(live, services.keys.create("s3", credits_milli=100_000).key)
    data = model_files["checkpoint"].read_bytes()
    part = 5 * MIB  # S3's smallest part but the last
    ids = []
    for name in ("s3-a.safetensors", "s3-b.safetensors"):
        parts = -(-len(data) // part)
        r = esd.post("checkpoint", {"checkpoint_type": "Stable-diffusion",
                                    "filenames": [{"filename": name, "parts_number": parts}], "params": {}})
        urls = r.json()["s3PresignUrl"][name]
        assert all(u.startswith(s3_endpoint) for u in urls)  # S3's own URLs, not the server's
        query = parse_qs(urlparse(urls[1]).query)
        assert query["partNumber"] == ["2"] and query["uploadId"]
        assert "Signature" in query or "X-Amz-Signature" in query
        assert urlparse(urls[0]).path.endswith(f"/pre/staging/{services.keys.authenticate(esd.key).tenant_id}"
                                               f"/esd/{r.json()['checkpoint']['id']}/{name}")
        tags = esd.upload_parts(urls, data, part)
        if name == "s3-a.safetensors":  # S3 itself refuses a wrong ETag
            wrong = [{**tags[0], "ETag": tags[1]["ETag"]}, *tags[1:]]
            bad = esd.put("checkpoint", {"checkpoint_id": r.json()["checkpoint"]["id"], "status": "Active",
                                         "multi_parts_tags": {name: wrong}})
            assert bad.status_code == 400 and "InvalidPart" in bad.json()["error"]
        r = esd.put("checkpoint", {"checkpoint_id": r.json()["checkpoint"]["id"], "status": "Active",
                                   "multi_parts_tags": {name: tags}})
        assert r.status_code == 200 and r.json()["checkpoint"]["status"] == "Active", r.text
        ids.append(r.json()["checkpoint"]["id"])
    # the merge worker reads both from S3 and writes the result there
    r = esd.post("inference/run-model-merge", {"primary_model_name": "s3-a.safetensors",
                                               "secondary_model_name": "s3-b.safetensors", "multiplier": 0.5})
    assert esd.wait_job(r.json()["inference_id"])["status"] == "succeed"
    merged = r.json()["model_name"]
    assert merged in [c["id"] for c in esd.get("checkpoints").json()["checkpoints"]]
    # dataset files and the client's config go to S3 through presigned PUTs
    r = esd.post("dataset", {"dataset_name": "s3-data", "content": [{"filename": "a.png"}]})
    url = r.json()["s3PresignUrl"]["a.png"]
    assert url.startswith(s3_endpoint)
    httpx.put(url, content=picture((5, 6, 7))).raise_for_status()
    assert esd.put("dataset", {"dataset_name": "s3-data", "status": "Enabled"}).json()["status"] == "Enabled"
    preview = esd.get("dataset/s3-data/data").json()["data"][0]["preview_url"]
    assert preview.startswith(s3_endpoint) and httpx.get(preview).status_code == 200
    url = esd.get("inference/generate-s3-presigned-url-for-uploading", key="config/aigc.json").json()
    assert url.startswith(s3_endpoint)
    r = httpx.put(url, content=b"{}", headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert r.status_code == 200
    services.db.dispose()
