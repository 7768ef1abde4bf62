"""One HTTP delivery to a checked, pinned address; redirects are followed only to checked URLs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from diffusiond.domain.errors import InvalidParams
from diffusiond.webhooks.ssrf import Target, UrlPolicy

MAX_REDIRECTS = 3


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None


def pinned_url(target: Target) -> str:
    ip = target.ips[0]
    host = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
    return f"{target.scheme}://{host}:{target.port}{target.path}"


def post(policy: UrlPolicy, url: str, body: str, headers: dict[str, str], *, timeout: float = 10.0) -> Outcome:
    """POST `body` to `url`; 2xx is success. Every hop is re-checked and connected to by IP."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            target = policy.check(url)
        except InvalidParams as e:
            return Outcome(False, error=e.message)
        default_port = 443 if target.scheme == "https" else 80
        host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
                response = client.post(pinned_url(target), content=body.encode(),
                                       headers={**headers, "host": host_header}, extensions=extensions)
        except httpx.HTTPError as e:
            return Outcome(False, error=f"{type(e).__name__}: {e}")
        if response.is_redirect and "location" in response.headers:
            url = urljoin(url, response.headers["location"])
            continue
        if response.is_success:
            return Outcome(True, response.status_code)
        return Outcome(False, response.status_code, f"HTTP {response.status_code}")
    return Outcome(False, error=f"more than {MAX_REDIRECTS} redirects")
