"""AWS-extension endpoints: deploy, delete and list worker pools (`/inference/*-sagemaker-endpoint`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.esd import schemas as w
from diffusiond.api.esd.render import EsdRoute, inference_errors, parse
from diffusiond.api.esd.translate import deployment_item
from diffusiond.api.openapi import json_request_body
from diffusiond.auth.keys import Principal
from diffusiond.domain.errors import NotFound
from diffusiond.services import Services

router = APIRouter(tags=["aws extension: endpoints"], route_class=EsdRoute, responses=inference_errors())
DEPLOYED_HEADERS = {
    "X-Endpoint-Deployment-Job-Id": {"description": "The new endpoint's deployment job id",
                                     "schema": {"type": "string"}},
    "X-Endpoint-Name": {"description": "The new endpoint's name", "schema": {"type": "string"}},
}
DEPLOYED = {"description": "0, as the original answers; the endpoint's id and name are in the headers",
            "headers": DEPLOYED_HEADERS}


@router.post("/inference/deploy-sagemaker-endpoint", response_model=int,
             openapi_extra=json_request_body(w.DeployRequest),
             responses={200: DEPLOYED, **inference_errors(400, 401, 409)})
async def deploy_endpoint(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Start `initial_instance_count` workers on the instance type's device profile: the endpoint is
    `Creating` until every one has loaded its model, then `InService`."""
    body = await parse(request, w.DeployRequest)
    endpoint = await run_in_threadpool(
        services.endpoints.deploy, principal.tenant_id, body.instance_type, int(body.initial_instance_count),
        name=(body.endpoint_name or "").strip() or None, autoscaling=body.autoscaling_enabled)
    return JSONResponse(0, headers={"X-Endpoint-Deployment-Job-Id": endpoint.id, "X-Endpoint-Name": endpoint.name})


def delete_all(services: Services, principal: Principal, names: list[str]) -> None:
    for name in names:  # every name is checked before any endpoint is touched
        services.endpoints.get(principal.tenant_id, name)
    live = {e.name for e in services.endpoints.list(principal.tenant_id) if e.status.value != "Deleted"}
    for name in dict.fromkeys(names):
        if name in live:
            services.endpoints.delete(principal.tenant_id, name)


@router.post("/inference/delete-sagemaker-endpoint", response_model=int,
             openapi_extra=json_request_body(w.DeleteRequest),
             responses=inference_errors(400, 401, 404))
async def delete_endpoint(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Queued jobs fail at once with the reason; running ones finish; then the workers stop."""
    body = await parse(request, w.DeleteRequest)
    names = [n.split("+", 1)[0].strip() for n in body.delete_endpoint_list]
    await run_in_threadpool(delete_all, services, principal, names)
    return JSONResponse(0)


@router.get("/inference/list-endpoint-deployment-jobs", response_model=list[w.DeploymentJob],
            response_model_exclude_none=True, responses=inference_errors(401))
def list_endpoint_deployment_jobs(principal: PrincipalDep, services: ServicesDep) -> list[dict[str, Any]]:
    return [deployment_item(e) for e in services.endpoints.list(principal.tenant_id)]


@router.get("/inference/get-endpoint-deployment-job", response_model=w.DeploymentJob | dict[str, Any],
            response_model_exclude_none=True, responses=inference_errors(400, 401))
def get_endpoint_deployment_job(principal: PrincipalDep, services: ServicesDep,
                                jobID: Annotated[str, Query(min_length=1, max_length=100)]) -> dict[str, Any]:
    """One deployment job by its id or its endpoint's name; `{}` when there is none."""
    try:
        return deployment_item(services.endpoints.get(principal.tenant_id, jobID))
    except NotFound:
        return {}
