"""Signed, expiring download URLs for blobs the server serves itself.

The signature covers the blob key, the owning tenant and the expiry, so a URL only verifies for
the tenant it was issued to and only until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode


@dataclass(frozen=True)
class UrlSigner:
    """Download URLs for blobs: the store's own presigned URL when it has one (S3), else ours."""

    secret: bytes
    base_url: str
    presign: Callable[[str, int], str | None] | None = None

    def _sig(self, key: str, tenant_id: str, expires: int) -> str:
        msg = f"{key}\n{tenant_id}\n{expires}".encode()
        digest = hmac.new(self.secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def sign(self, key: str, tenant_id: str, expires_in: int, now: float | None = None) -> str:
        direct = self.presign(key, expires_in) if self.presign is not None else None
        if direct is not None:
            return direct
        return f"{self.base_url}/v1/blobs/{quote(key)}?{self.query(key, tenant_id, expires_in, now)}"

    def query(self, key: str, tenant_id: str, expires_in: int, now: float | None = None) -> str:
        """`t=..&e=..&s=..`: the signature of `key` for a route of this server that serves or lists it."""
        expires = int((now if now is not None else time.time()) + expires_in)
        return urlencode({"t": tenant_id, "e": expires, "s": self._sig(key, tenant_id, expires)})

    def verify(self, key: str, tenant_id: str, expires: int, signature: str,
               now: float | None = None) -> bool:
        if expires < (now if now is not None else time.time()):
            return False
        # compare_digest takes str only when it is ASCII; a signature is, so any other is wrong.
        return signature.isascii() and hmac.compare_digest(self._sig(key, tenant_id, expires), signature)
