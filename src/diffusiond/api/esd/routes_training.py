"""AWS-extension trainings (`/train`, `/trains`) and datasets (`/dataset`, `/datasets`, `/dataset/{name}/data`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from diffusiond.api.deps import PrincipalDep, ServicesDep
from diffusiond.api.esd import schemas as w
from diffusiond.api.esd import translate as t
from diffusiond.api.esd.render import EsdRoute, lambda_errors, parse, trainings
from diffusiond.api.esd.training import Training, Trainings
from diffusiond.api.openapi import json_request_body
from diffusiond.domain.datasets import Dataset

router = APIRouter(tags=["aws extension: training"], route_class=EsdRoute, responses=lambda_errors())
Listed = Annotated[list[str] | None, Query(max_length=20)]


def wanted(values: list[str] | None) -> set[str]:
    return {v.strip() for value in values or [] for v in value.split(",") if v.strip()}


def train_job(tr: Trainings, training: Training) -> w.TrainJob:
    extra: dict[str, Any] = {}
    if training.output_model:
        extra["output_model"] = training.output_model
    if training.error:
        extra["error"] = training.error
    return w.TrainJob(id=training.id, status=training.status, trainType=training.train_type, params=training.params,
                      input_location=tr.input_location(training), created=t.epoch(training.created_at), **extra)


@router.post("/train", response_model=w.TrainCreated, openapi_extra=json_request_body(w.TrainCreate),
             responses=lambda_errors(400, 401, 404))
async def create_train_job(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.TrainCreated:
    """An `Initial` training on a `Complete` model, with one signed upload URL per named file."""
    body = await parse(request, w.TrainCreate)
    tr = trainings(services)
    training, urls = await run_in_threadpool(tr.create, principal.tenant_id, body.train_type, body.model_id,
                                             body.params, body.filenames)
    return w.TrainCreated(job=train_job(tr, training), s3PresignUrl=urls)


@router.put("/train", response_model=w.TrainUpdated, response_model_exclude_none=True,
            openapi_extra=json_request_body(w.TrainUpdate), responses=lambda_errors(400, 401, 402, 404, 429))
async def update_train_job(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.TrainUpdated:
    """`Training` gathers the pictures and settings and starts the job; `Fail` stops it."""
    body = await parse(request, w.TrainUpdate)
    tr = trainings(services)
    if body.status == "Training":
        training = await run_in_threadpool(tr.start, principal.tenant_id, body.train_job_id)
    elif body.status == "Fail":
        training = await run_in_threadpool(tr.fail, principal.tenant_id, body.train_job_id)
    else:
        await run_in_threadpool(tr.get, principal.tenant_id, body.train_job_id)
        return w.TrainUpdated(msg=f"not implemented for train job status {body.status}")
    return w.TrainUpdated(job=train_job(tr, training))


@router.get("/trains", response_model=w.TrainList, response_model_exclude_none=True, responses=lambda_errors(401))
def list_train_jobs(principal: PrincipalDep, services: ServicesDep, types: Listed = None,
                    status: Listed = None) -> w.TrainList:
    tr = trainings(services)
    kinds, statuses = wanted(types), wanted(status)
    jobs = []
    for training in tr.list(principal.tenant_id):
        if (kinds and training.train_type not in kinds) or (statuses and training.status not in statuses):
            continue
        name = str((training.params.get("training_params") or {}).get("model_name") or training.output_model or "")
        jobs.append(w.TrainListed(id=training.id, modelName=name, status=training.status,
                                  trainType=training.train_type, created=t.epoch(training.created_at),
                                  sagemakerTrainName=training.job_id or "", output_model=training.output_model,
                                  error=training.error))
    return w.TrainList(trainJobs=jobs)


@router.post("/dataset", response_model=w.DatasetCreated, openapi_extra=json_request_body(w.DatasetCreate),
             responses=lambda_errors(400, 401, 409))
async def create_dataset(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.DatasetCreated:
    """An `Initialed` dataset and one signed upload URL per file."""
    body = await parse(request, w.DatasetCreate)
    content = [c.model_dump() for c in body.content]
    dataset, urls = await run_in_threadpool(trainings(services).create_dataset, principal.tenant_id,
                                            body.dataset_name, content, body.params)
    return w.DatasetCreated(datasetName=dataset.name, s3PresignUrl=urls)


@router.put("/dataset", response_model=w.DatasetUpdated, openapi_extra=json_request_body(w.DatasetUpdate),
            responses=lambda_errors(400, 401, 404, 413))
async def update_dataset(request: Request, principal: PrincipalDep, services: ServicesDep) -> w.DatasetUpdated:
    """`Enabled`: every uploaded picture is checked (all before any is kept) and added."""
    body = await parse(request, w.DatasetUpdate)
    dataset = await run_in_threadpool(trainings(services).set_dataset_status, principal.tenant_id,
                                      body.dataset_name, body.status)
    return w.DatasetUpdated(datasetName=dataset.name, status=dataset.status)


def dataset_listed(tr: Trainings, dataset: Dataset) -> w.DatasetListed:
    shown = {k: v for k, v in dataset.params.items() if not k.startswith("_")}
    return w.DatasetListed(**{**shown, "datasetName": dataset.name,
                              "s3": tr.catalog.s3_url(f"dataset/{dataset.name}"), "status": dataset.status,
                              "timestamp": t.epoch(dataset.created_at)})


@router.get("/datasets", response_model=w.DatasetList, responses=lambda_errors(401))
def list_datasets(principal: PrincipalDep, services: ServicesDep, dataset_status: Listed = None) -> w.DatasetList:
    tr = trainings(services)
    statuses = wanted(dataset_status)
    return w.DatasetList(datasets=[dataset_listed(tr, d) for d in services.datasets.list(principal.tenant_id)
                                   if not statuses or d.status in statuses])


def dataset_data(services: Any, tenant_id: str, dataset_name: str) -> w.DatasetItems:
    dataset, items = trainings(services).dataset_items(tenant_id, dataset_name)
    expiry = services.settings.url_expiry_seconds
    return w.DatasetItems(dataset_name=dataset.name, data=[
        w.DatasetItemPublic(key=f"{int(t.epoch(i.created_at))}_{i.name}", name=i.name,
                            type=str(i.params.get("type") or "image"),
                            preview_url=services.signer.sign(i.blob_key, tenant_id, expiry), dataStatus=dataset.status)
        for i in items])


@router.get("/dataset/{dataset_name}/data", response_model=w.DatasetItems, responses=lambda_errors(401, 404))
def list_dataset_items(dataset_name: str, principal: PrincipalDep, services: ServicesDep) -> w.DatasetItems:
    """The dataset's pictures, each with a signed `preview_url`."""
    return dataset_data(services, principal.tenant_id, dataset_name)


@router.get("/{dataset_name}/data", response_model=w.DatasetItems, responses=lambda_errors(401, 404))
def list_dataset_items_seed_path(dataset_name: str, principal: PrincipalDep, services: ServicesDep) -> w.DatasetItems:
    """The same, at the path the seed's table writes (`/{dataset_name}/data`)."""
    return dataset_data(services, principal.tenant_id, dataset_name)
