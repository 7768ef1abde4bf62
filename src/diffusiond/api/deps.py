"""Typed FastAPI dependencies shared by every dialect."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from diffusiond.auth.keys import Principal
from diffusiond.services import Services


async def get_services(request: Request) -> Services:
    # async, though it awaits nothing: FastAPI runs a plain `def` dependency in a worker thread,
    # a thread hop on every request for one attribute read.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def presented_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer KEY`, HTTP Basic with the key as the password (any user
    name; A1111's `--api-auth` clients), a bare `Authorization: KEY`, or `x-api-key`."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() == "basic" and rest:
            return basic_password(rest.strip())
        return rest.strip() if scheme.lower() == "bearer" and rest else header.strip()
    return request.headers.get("x-api-key")


def basic_password(credentials: str) -> str:
    """The password of HTTP Basic credentials ("" when they do not decode: a wrong key, then)."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""
    return decoded.partition(":")[2]


async def authenticate(request: Request) -> Principal:
    """The caller's principal, remembered on the request (the edge may have found it already).

    A key verified moments ago costs no I/O and stays on the event loop; a database lookup runs in
    a worker thread.
    """
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):
        return known
    services: Services = request.app.state.services
    key = presented_key(request)
    principal = services.keys.cached(key)
    if principal is None:
        principal = await run_in_threadpool(services.keys.authenticate, key)
    request.state.principal = principal
    return principal


async def get_principal(request: Request, services: ServicesDep) -> Principal:
    """Authenticate, then take a token from the key's bucket (a Redis bucket in a worker thread)."""
    principal = await authenticate(request)
    settings = services.settings
    rate = principal.rate_limit or settings.rate_limit_per_second
    burst = principal.rate_burst or settings.rate_limit_burst
    if services.rate_limiter.blocking:
        await run_in_threadpool(services.rate_limiter.acquire, principal.key_id, rate, burst)
    else:
        services.rate_limiter.acquire(principal.key_id, rate, burst)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
