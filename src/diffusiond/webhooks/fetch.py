"""Bounded server-side fetches of URLs a client gave (EKS image links), behind the webhook SSRF guard.

http(s) URLs are checked by the same `UrlPolicy` as webhooks (no loopback, private, link-local or
metadata addresses unless the operator allows them), connected to by the checked IP, every redirect
re-checked; the body is read up to `max_bytes` and the whole fetch bounded by `timeout` seconds.
`data:` URLs are decoded in place. `s3://bucket/key` URLs go to a reader the caller provides (the
server's own blob store, scoped to the tenant), or are refused.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpx

from diffusiond.domain.errors import InvalidParams, PayloadTooLarge
from diffusiond.webhooks.delivery import MAX_REDIRECTS, pinned_url
from diffusiond.webhooks.ssrf import UrlPolicy

S3Reader = Callable[[str, str], bytes]  # (bucket, key) -> bytes


def refused(url: str, why: str) -> InvalidParams:
    shown = url if len(url) <= 200 else url[:200] + "..."
    return InvalidParams(f"cannot fetch {shown}: {why}", code="invalid_url", field="url")


@dataclass(frozen=True)
class UrlFetcher:
    policy: UrlPolicy
    max_bytes: int = 20 * 1024 * 1024
    timeout: float = 20.0

    def fetch(self, url: str, *, s3: S3Reader | None = None) -> bytes:
        """The bytes `url` names, or InvalidParams (`invalid_url`) / PayloadTooLarge saying why not."""
        scheme = url.split(":", 1)[0].lower()
        if scheme == "data":
            return self._data(url)
        if scheme == "s3":
            parts = urlsplit(url)
            if s3 is None or not parts.netloc or not parts.path.strip("/"):
                raise refused(url, "s3:// URLs are read only from this server's own bucket")
            data = s3(parts.netloc, parts.path.lstrip("/"))
            return self._capped(url, data)
        if scheme not in ("http", "https"):
            raise refused(url, "only http, https, s3 and data URLs are fetched")
        return self._http(url)

    def _capped(self, url: str, data: bytes) -> bytes:
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"{url[:200]}: more than {self.max_bytes:,} bytes")
        return data

    def _data(self, url: str) -> bytes:
        header, sep, payload = url.partition(",")
        if not sep:
            raise refused(url[:40], "a data URL needs a comma")
        if len(payload) > self.max_bytes * 4 // 3 + 4:
            raise PayloadTooLarge(f"data URL: more than {self.max_bytes:,} bytes")
        try:
            encoded = header.endswith(";base64")
            data = base64.b64decode(payload, validate=False) if encoded else unquote_to_bytes(payload)
        except (binascii.Error, ValueError):
            raise refused(url[:40], "the data URL does not decode") from None
        return self._capped("data URL", data)

    def _http(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        for _ in range(MAX_REDIRECTS + 1):
            try:
                target = self.policy.check(url)
            except InvalidParams as e:
                raise refused(url, e.message.removeprefix("notifyUrl: ")) from None
            default_port = 443 if target.scheme == "https" else 80
            host = target.host if target.port == default_port else f"{target.host}:{target.port}"
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            left = max(deadline - time.monotonic(), 0.1)
            try:
                with httpx.Client(timeout=left, follow_redirects=False, trust_env=False) as client, \
                        client.stream("GET", pinned_url(target), headers={"host": host},
                                      extensions=extensions) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if not response.is_success:
                        raise refused(url, f"HTTP {response.status_code}")
                    return self._read(url, response, deadline)
            except httpx.HTTPError as e:
                raise refused(url, f"{type(e).__name__}: {e}") from None
        raise refused(url, f"more than {MAX_REDIRECTS} redirects")

    def _read(self, url: str, response: httpx.Response, deadline: float) -> bytes:
        declared = int(response.headers.get("content-length") or 0)
        if declared > self.max_bytes:
            raise PayloadTooLarge(f"{url[:200]}: {declared:,} bytes, more than {self.max_bytes:,}")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLarge(f"{url[:200]}: more than {self.max_bytes:,} bytes")
            if time.monotonic() > deadline:
                raise refused(url, f"took longer than {self.timeout:g} s")
            chunks.append(chunk)
        return b"".join(chunks)
