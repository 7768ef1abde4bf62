"""Typed FastAPI dependencies shared by every dialect."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from diffusiond.auth.keys import Principal
from diffusiond.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def presented_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer KEY`, a bare `Authorization: KEY`, or `x-api-key`."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, rest = header.strip().partition(" ")
        return rest.strip() if scheme.lower() == "bearer" and rest else header.strip()
    return request.headers.get("x-api-key")


def get_principal(request: Request, services: ServicesDep) -> Principal:
    """Authenticate, then take a token from the key's bucket."""
    principal = services.keys.authenticate(presented_key(request))
    settings = services.settings
    rate = principal.rate_limit or settings.rate_limit_per_second
    services.rate_limiter.acquire(principal.key_id, rate, settings.rate_limit_burst)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
