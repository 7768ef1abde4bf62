"""The blob store contract, run against every implementation: local folder and S3 (over HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.local import LocalBlobStore
from diffusiond.domain.errors import NotFound


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server on loopback (moto's standalone server speaks the S3 HTTP protocol)."""
    server_mod = pytest.importorskip("moto.server")
    from tests.conftest import free_port

    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path)
    import boto3

    from diffusiond.blobs.s3 import S3BlobStore

    endpoint = request.getfixturevalue("s3_endpoint")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return S3BlobStore(bucket, prefix="diffusiond", client=client)


def test_put_get_exists_delete(store: BlobStore) -> None:
    store.put("outputs/t/j/0.png", b"\x89PNG...", "image/png")
    assert store.exists("outputs/t/j/0.png") and store.get("outputs/t/j/0.png") == b"\x89PNG..."
    store.delete("outputs/t/j/0.png")
    assert not store.exists("outputs/t/j/0.png")
    with pytest.raises(NotFound):
        store.get("outputs/t/j/0.png")


def test_presigned_url_serves_the_object_or_none_for_local(store: BlobStore) -> None:
    store.put("outputs/t/j/1.png", b"bytes", "image/png")
    url = store.presigned_url("outputs/t/j/1.png", 60)
    if isinstance(store, LocalBlobStore):
        assert url is None  # the server serves local blobs through its own signed URLs
    else:
        assert url is not None and httpx.get(url).content == b"bytes"
