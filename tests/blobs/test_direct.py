"""Direct uploads: real S3 multipart presigned URLs (moto over HTTP), and the local store's own."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import httpx
import pytest

from diffusiond.blobs.direct import LocalDirectUploads
from diffusiond.blobs.local import LocalBlobStore
from diffusiond.domain.errors import InvalidParams, NotFound, PayloadTooLarge, Unauthorized
from tests.blobs.test_stores import s3_endpoint  # noqa: F401  (a fixture)

MIB = 1024 * 1024


def test_s3_multipart_through_presigned_urls(s3_endpoint: str) -> None:  # noqa: F811
    import boto3

    from diffusiond.blobs.s3 import S3BlobStore

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    store = S3BlobStore(bucket, prefix="p", client=client)
    uploads = store.direct_uploads(max_bytes=20 * MIB)
    upload_id = uploads.start("staging/m.bin")
    parts = [b"a" * 5 * MIB, b"b" * 1000]  # S3 wants every part but the last to be 5 MiB or more
    urls = [uploads.part_url("staging/m.bin", upload_id, n, 600) for n in (1, 2)]
    assert all(url.startswith(s3_endpoint) and "uploadId=" in url for url in urls)  # S3's own, presigned
    etags = [httpx.put(url, content=data).headers["ETag"] for url, data in zip(urls, parts, strict=True)]
    assert etags[0] == f'"{hashlib.md5(parts[0]).hexdigest()}"'
    with pytest.raises(InvalidParams):  # a wrong ETag: S3 refuses to complete
        uploads.complete("staging/m.bin", upload_id, [(1, etags[1]), (2, etags[1])])
    uploads.complete("staging/m.bin", upload_id, [(2, etags[1]), (1, etags[0])])  # any order in the request
    assert store.get("staging/m.bin") == parts[0] + parts[1]
    url = uploads.object_url("inputs/t/cfg.json", content_type="text/plain;charset=UTF-8", expires_in=600)
    assert httpx.put(url, content=b"{}", headers={"Content-Type": "text/plain;charset=UTF-8"}).status_code == 200
    assert store.get("inputs/t/cfg.json") == b"{}"


@pytest.fixture
def local(tmp_path: Path) -> LocalDirectUploads:
    return LocalDirectUploads(LocalBlobStore(tmp_path / "blobs"), tmp_path / "staging", b"k" * 32,
                              "http://127.0.0.1:1", max_part_bytes=1000, max_bytes=1500)


def put(uploads: LocalDirectUploads, url: str, data: bytes) -> str:
    """What the /v1/uploads routes do with a PUT to `url`."""
    query = dict(httpx.URL(url).params)
    part = httpx.URL(url).path.rsplit("/", 2)
    receiver = uploads.open_part(part[1], int(part[2]), int(query["e"]), query["s"])
    receiver.write(data)
    return receiver.finish()


def test_local_parts_are_checked_and_assembled(local: LocalDirectUploads) -> None:
    upload_id = local.start("staging/t/m.bin")
    urls = [local.part_url("staging/t/m.bin", upload_id, n, 600) for n in (1, 2)]
    assert urls[0].startswith("http://127.0.0.1:1/v1/uploads/parts/")
    etags = [put(local, url, data) for url, data in zip(urls, (b"x" * 700, b"y" * 10), strict=True)]
    with pytest.raises(InvalidParams, match="does not match"):
        local.complete("staging/t/m.bin", upload_id, [(1, etags[0]), (2, etags[0])])
    with pytest.raises(InvalidParams, match="without gaps"):
        local.complete("staging/t/m.bin", upload_id, [(1, etags[0]), (3, etags[1])])
    with pytest.raises(NotFound):  # the upload id belongs to another key
        local.complete("staging/t/other.bin", upload_id, [(1, etags[0]), (2, etags[1])])
    local.complete("staging/t/m.bin", upload_id, [(2, etags[1].strip('"')), (1, etags[0])])
    assert local.blobs.get("staging/t/m.bin") == b"x" * 700 + b"y" * 10
    with pytest.raises(NotFound):  # completed: its URLs take nothing more
        put(local, urls[0], b"z")


def test_local_limits_and_signatures(local: LocalDirectUploads) -> None:
    upload_id = local.start("staging/t/m.bin")
    url = local.part_url("staging/t/m.bin", upload_id, 1, 600)
    with pytest.raises(PayloadTooLarge):
        put(local, url, b"x" * 1001)
    etags = [put(local, local.part_url("staging/t/m.bin", upload_id, n, 600), b"x" * 900) for n in (1, 2)]
    with pytest.raises(PayloadTooLarge):  # 1800 bytes in all, over max_bytes
        local.complete("staging/t/m.bin", upload_id, [(1, etags[0]), (2, etags[1])])
    with pytest.raises(Unauthorized):
        put(local, url.replace("s=", "s=x"), b"x")
    expired = local.part_url("staging/t/m.bin", upload_id, 1, -1)
    with pytest.raises(Unauthorized):
        put(local, expired, b"x")
    obj = local.object_url("inputs/t/c.json", content_type="text/plain;charset=UTF-8", expires_in=600)
    query = dict(httpx.URL(obj).params)
    with pytest.raises(Unauthorized, match="Content-Type"):
        local.open_object("inputs/t/c.json", query["c"], int(query["e"]), query["s"], "application/json")
    with pytest.raises(Unauthorized):  # signed for another key
        local.open_object("inputs/u/c.json", query["c"], int(query["e"]), query["s"], query["c"])
    receiver = local.open_object("inputs/t/c.json", query["c"], int(query["e"]), query["s"],
                                 "text/plain; charset=UTF-8")
    receiver.write(b"{}")
    receiver.finish()
    assert local.blobs.get("inputs/t/c.json") == b"{}" and time.time() < int(query["e"])


def test_any_signature_a_client_sends_is_refused_not_crashed_on(local: LocalDirectUploads) -> None:
    upload_id = local.start("staging/t/m.bin")
    for signature in ("x\u00f2\u00b5\u00ecN", "\U0001f600", ""):
        with pytest.raises(Unauthorized):
            local.open_part(upload_id, 1, 2**70, signature)
        with pytest.raises(Unauthorized):
            local.open_object("inputs/t/x", "", 2**70, signature, None)
