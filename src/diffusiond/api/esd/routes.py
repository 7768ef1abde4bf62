"""The AWS-extension API (seed 000): all 29 operations, mounted under `DIFFUSIOND_ESD_PREFIX`.

    app.include_router(esd_router(), prefix=settings.esd_prefix)
    app.add_middleware(SlashTolerance, prefixes=(settings.esd_prefix,))

The routes live by area: routes_endpoints.py (deploy, delete, deployment jobs), routes_inference.py
(jobs, outputs, upload URLs, model lists, merges), routes_models.py (checkpoints, models) and
routes_training.py (trainings, datasets).
"""

from __future__ import annotations

from fastapi import APIRouter

from diffusiond.api.esd import routes_endpoints, routes_inference, routes_models, routes_training


def esd_router() -> APIRouter:
    router = APIRouter()
    # the catch-all `/{dataset_name}/data` of routes_training comes last
    for module in (routes_inference, routes_endpoints, routes_models, routes_training):
        router.include_router(module.router)
    return router
