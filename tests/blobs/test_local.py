"""The local blob store and signed URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffusiond.blobs.local import LocalBlobStore
from diffusiond.blobs.signing import UrlSigner
from diffusiond.domain.errors import NotFound


def test_put_get_delete(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put("outputs/t/j/0.png", b"abc", "image/png")
    assert store.get("outputs/t/j/0.png") == b"abc" and store.exists("outputs/t/j/0.png")
    assert not list(tmp_path.rglob(".tmp-*"))  # no half-written temp files left behind
    store.delete("outputs/t/j/0.png")
    with pytest.raises(NotFound):
        store.get("outputs/t/j/0.png")


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "/abs", ""])
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(NotFound):
        LocalBlobStore(tmp_path / "root").put(key, b"x", "text/plain")


def test_signed_url_is_bound_to_tenant_and_expiry() -> None:
    signer = UrlSigner(b"secret", "http://h")
    url = signer.sign("outputs/t1/j/0.png", "t1", 60, now=1000)
    query = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))
    exp, sig = int(query["e"]), query["s"]
    assert signer.verify("outputs/t1/j/0.png", "t1", exp, sig, now=1000)
    assert not signer.verify("outputs/t1/j/0.png", "t2", exp, sig, now=1000)
    assert not signer.verify("outputs/t1/j/1.png", "t1", exp, sig, now=1000)
    assert not signer.verify("outputs/t1/j/0.png", "t1", exp, sig, now=1061)
    assert not UrlSigner(b"other", "http://h").verify("outputs/t1/j/0.png", "t1", exp, sig, now=1000)
