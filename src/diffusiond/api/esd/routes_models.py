"""AWS-extension checkpoints (`/checkpoint`, `/checkpoints`) and models (`/model`, `/models`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.esd import schemas as w
from diffusiond.api.esd import translate as t
from diffusiond.api.esd.catalog import Catalog, Checkpoint, EsdModel
from diffusiond.api.esd.render import EsdRoute, catalog, lambda_errors, parse
from diffusiond.api.openapi import json_request_body
from diffusiond.domain.models import ModelRecord

router = APIRouter(tags=["aws extension: models"], route_class=EsdRoute, responses=lambda_errors())
Listed = Annotated[list[str] | None, Query(max_length=20)]


def checkpoint_public(c: Catalog, checkpoint: Checkpoint) -> w.CheckpointPublic:
    params = {**checkpoint.params, **({"error": checkpoint.error} if checkpoint.error else {})}
    return w.CheckpointPublic(id=checkpoint.id, type=checkpoint.type, s3_location=c.location(checkpoint),
                              status=checkpoint.status, params=params)


def tags(body: w.CheckpointUpdate | w.ModelUpdate) -> dict[str, Any]:
    return {name: [p.model_dump() for p in parts] if isinstance(parts, list) else parts
            for name, parts in body.multi_parts_tags.items()}


def wanted(values: list[str] | None) -> set[str]:
    """A filter given as repeated parameters or comma-separated values."""
    return {v.strip() for value in values or [] for v in value.split(",") if v.strip()}


@router.post("/checkpoint", response_model=w.CheckpointCreated, openapi_extra=json_request_body(w.CheckpointCreate),
             responses=lambda_errors(400, 401))
async def create_checkpoint(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.CheckpointCreated:
    """An `Initial` checkpoint and one signed part-upload URL per part of each file (PUT each part and
    keep the answer's `ETag` header)."""
    body = await parse(request, w.CheckpointCreate)
    c = catalog(services)
    files = [(f.filename, f.parts_number) for f in body.filenames]
    checkpoint, urls = await run_in_threadpool(c.create, principal.tenant_id, body.checkpoint_type, files, body.params)
    return w.CheckpointCreated(checkpoint=checkpoint_public(c, checkpoint), s3PresignUrl=urls)


@router.put("/checkpoint", response_model=w.CheckpointUpdated, openapi_extra=json_request_body(w.CheckpointUpdate),
            responses=lambda_errors(400, 401, 404, 413))
async def update_checkpoint(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.CheckpointUpdated:
    """`Active`: the parts are joined (ETags checked), the file checked and its models registered."""
    body = await parse(request, w.CheckpointUpdate)
    c = catalog(services)
    if body.status == "Active":
        checkpoint = await run_in_threadpool(c.activate, principal.tenant_id, body.checkpoint_id, tags(body))
    else:
        checkpoint = await run_in_threadpool(c.disable, principal.tenant_id, body.checkpoint_id)
    return w.CheckpointUpdated(checkpoint=checkpoint_public(c, checkpoint))


def made_listed(c: Catalog, record: ModelRecord) -> w.CheckpointListed:
    """A model a merge or training made, shown as the `Active` checkpoint it is."""
    key = record.path.removeprefix("blob:")
    return w.CheckpointListed(id=record.id, s3Location=c.s3_url(key.rsplit("/", 1)[0]), type=t.TYPES[record.kind],
                              status="Active", name=[f"{record.id}.safetensors"],
                              created=t.epoch(record.created_at) if record.created_at else 0.0,
                              params={"description": record.description, "family": record.family})


@router.get("/checkpoints", response_model=w.CheckpointList, responses=lambda_errors(401))
def list_checkpoints(principal: PrincipalDep, services: ServicesDep, status: Listed = None,
                     types: Listed = None) -> w.CheckpointList:
    """The tenant's checkpoints (and the models its merges and trainings made), newest first."""
    c = catalog(services)
    statuses, kinds = wanted(status), wanted(types)
    out = [w.CheckpointListed(id=ck.id, s3Location=c.location(ck), type=ck.type, status=ck.status,
                              name=[f["filename"] for f in ck.files], created=t.epoch(ck.created_at),
                              params=checkpoint_public(c, ck).params)
           for ck in c.checkpoints(principal.tenant_id)]
    out += [made_listed(c, r) for r in c.made_models(principal.tenant_id) if r.kind in t.TYPES]
    return w.CheckpointList(checkpoints=[x for x in out if (not statuses or x.status in statuses)
                                         and (not kinds or x.type in kinds)])


def model_job(c: Catalog, model: EsdModel) -> w.ModelJob:
    s3_base = c.s3_url(f"models/{model.tenant_id}/{model.checkpoint_id}")
    extra = {"error": model.error} if model.error else {}
    return w.ModelJob(id=model.id, status=model.status, s3_base=s3_base, model_type=model.model_type,
                      params=model.params, **extra)


@router.post("/model", response_model=w.ModelCreated, openapi_extra=json_request_body(w.ModelCreate),
             responses=lambda_errors(400, 401, 404))
async def create_model(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.ModelCreated:
    """A training base from an `Active` checkpoint (`checkpoint_id`), or from a file uploaded in parts."""
    body = await parse(request, w.ModelCreate)
    c = catalog(services)
    files = [(f.filename, f.parts_number) for f in body.filenames]
    model, urls = await run_in_threadpool(c.create_model, principal.tenant_id, body.name, body.model_type,
                                          body.checkpoint_id, files, body.params)
    return w.ModelCreated(job=model_job(c, model), s3PresignUrl=urls)


@router.put("/model", response_model=w.ModelUpdated, openapi_extra=json_request_body(w.ModelUpdate),
            responses=lambda_errors(400, 401, 404, 413))
async def update_model(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.ModelUpdated:
    """`Creating`: complete its upload if it had one, check the checkpoint: `Complete` (or `Fail`)."""
    body = await parse(request, w.ModelUpdate)
    c = catalog(services)
    if body.status == "Creating":
        model = await run_in_threadpool(c.start_model, principal.tenant_id, body.model_id, tags(body))
    else:
        model = await run_in_threadpool(c.fail_model, principal.tenant_id, body.model_id)
    return w.ModelUpdated(job=w.ModelJobStarted(output_path=c.model_output(model), id=model.id, endpointName="",
                                                jobStatus=model.status, jobType=model.model_type))


@router.get("/models", response_model=w.ModelList, responses=lambda_errors(401))
def list_models(principal: PrincipalDep, services: ServicesDep, types: Listed = None,
                status: Listed = None) -> w.ModelList:
    c = catalog(services)
    kinds, statuses = wanted(types), wanted(status)
    return w.ModelList(models=[
        w.ModelListed(id=m.id, model_name=m.name, created=t.epoch(m.created_at), params=m.params, status=m.status,
                      output_s3_location=c.model_output(m))
        for m in c.models(principal.tenant_id)
        if (not kinds or m.model_type in kinds) and (not statuses or m.status in statuses)])
