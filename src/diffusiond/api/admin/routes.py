"""Admin routes (admin keys only), and the caller's own webhook secret.

Errors use the `/v1/jobs` shape (google.rpc.Status), the platform's default for its own APIs.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.edge import Dialect
from diffusiond.api.errors import dialect_route
from diffusiond.api.jobs.render import render_error
from diffusiond.api.jobs.schemas import ErrorBody
from diffusiond.api.openapi import error_responses
from diffusiond.auth.keys import Principal
from diffusiond.domain.errors import Forbidden
from diffusiond.domain.pricing import from_credits, to_credits
from diffusiond.webhooks.signing import public_secret

router = APIRouter(prefix="/v1", tags=["admin"], route_class=dialect_route(render_error),
                   responses=error_responses(ErrorBody, 400, 401, 413, 429, 500))
ADMIN_ONLY = error_responses(ErrorBody, 403, 404)
DIALECT = Dialect("admin", ("/v1/admin", "/v1/account"), render_error)


class CreditGrant(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    credits: float = Field(ge=-1e9, le=1e9)


class TenantCredits(BaseModel):
    tenantId: str
    credits: float


class WebhookSecret(BaseModel):
    """A Standard Webhooks secret (`whsec_...`): verify `webhook-signature` with it."""

    tenantId: str
    webhookSecret: str


class CallbackCreate(BaseModel):
    """A URL to hear of every finished job of `dialect` (EKS completion callbacks), in `format`."""

    url: str = Field(max_length=2000)
    format: Literal["standard", "sns"] = "standard"
    dialect: Literal["eks"] = "eks"


class CallbackPublic(BaseModel):
    id: str
    tenantId: str
    dialect: str
    url: str
    format: str


class CallbackList(BaseModel):
    callbacks: list[CallbackPublic]


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("this endpoint needs an admin key")


@router.post("/admin/tenants/{tenant_id}/credits", response_model=TenantCredits, responses=ADMIN_ONLY)
def grant_credits(tenant_id: str, body: CreditGrant, principal: PrincipalDep, services: ServicesDep) -> TenantCredits:
    """Add credits to a tenant (negative amounts remove them, down to zero)."""
    require_admin(principal)
    tenant = services.tenants.grant(tenant_id, from_credits(body.credits))
    return TenantCredits(tenantId=tenant.id, credits=to_credits(tenant.balance))


@router.post("/admin/tenants/{tenant_id}/webhook-secret/rotate", response_model=WebhookSecret,
             responses=ADMIN_ONLY)
def rotate_webhook_secret(tenant_id: str, principal: PrincipalDep, services: ServicesDep) -> WebhookSecret:
    """Replace a tenant's webhook signing secret; deliveries from now on are signed with the new one."""
    require_admin(principal)
    secret = services.tenants.rotate_webhook_secret(tenant_id)
    return WebhookSecret(tenantId=tenant_id, webhookSecret=public_secret(secret))


@router.get("/account/webhook-secret", response_model=WebhookSecret)
def my_webhook_secret(principal: PrincipalDep, services: ServicesDep) -> WebhookSecret:
    """The caller's own tenant secret, to verify the webhooks it receives."""
    tenant = services.tenants.get(principal.tenant_id)
    return WebhookSecret(tenantId=tenant.id, webhookSecret=public_secret(tenant.webhook_secret))


@router.post("/admin/tenants/{tenant_id}/callbacks", response_model=CallbackPublic, responses=ADMIN_ONLY)
def add_callback(tenant_id: str, body: CallbackCreate, principal: PrincipalDep,
                 services: ServicesDep) -> CallbackPublic:
    """Register a completion callback URL for a tenant (checked by the webhook SSRF guard)."""
    require_admin(principal)
    cb = services.callbacks.add(tenant_id, body.url, dialect=body.dialect, format=body.format)
    return CallbackPublic(id=cb.id, tenantId=cb.tenant_id, dialect=cb.dialect, url=cb.url, format=cb.format)


@router.get("/admin/tenants/{tenant_id}/callbacks", response_model=CallbackList, responses=ADMIN_ONLY)
def list_callbacks(tenant_id: str, principal: PrincipalDep, services: ServicesDep) -> CallbackList:
    require_admin(principal)
    return CallbackList(callbacks=[CallbackPublic(id=c.id, tenantId=c.tenant_id, dialect=c.dialect, url=c.url,
                                                  format=c.format) for c in services.callbacks.list(tenant_id)])


@router.delete("/admin/tenants/{tenant_id}/callbacks/{callback_id}", response_model=CallbackList,
                responses=ADMIN_ONLY)
def remove_callback(tenant_id: str, callback_id: str, principal: PrincipalDep, services: ServicesDep) -> CallbackList:
    """Remove one callback; jobs already submitted keep the targets they were given."""
    require_admin(principal)
    services.callbacks.remove(tenant_id, callback_id)
    return list_callbacks(tenant_id, principal, services)
