"""The one wiring place: builds every service from Settings, picking each interface's implementation."""

from __future__ import annotations

import gc
import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from diffusiond.auth.keys import KeyService
from diffusiond.auth.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from diffusiond.auth.tenants import TenantService
from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.direct import DirectUploads, LocalDirectUploads
from diffusiond.blobs.images import UploadRules
from diffusiond.blobs.local import LocalBlobStore
from diffusiond.blobs.signing import UrlSigner
from diffusiond.config import Settings
from diffusiond.datasets.service import DatasetService
from diffusiond.domain.endpoints import load_instance_table
from diffusiond.domain.jobs import JobKind
from diffusiond.domain.pricing import from_credits
from diffusiond.domain.webhooks import WebhookRenderer
from diffusiond.endpoints.service import EndpointService
from diffusiond.models.files import LocalModelFiles
from diffusiond.models.registry import ModelRegistry
from diffusiond.queue.events import JobEvents
from diffusiond.queue.executor import Executor, ExecutorGroup
from diffusiond.queue.instance import InstanceSlot
from diffusiond.queue.job_service import JobService, SuccessEffect
from diffusiond.queue.local_executor import LocalExecutor, WorkerPool
from diffusiond.queue.worker import Handlers, OutputLayout
from diffusiond.store.database import Database
from diffusiond.webhooks.callbacks import CallbackService
from diffusiond.webhooks.dispatcher import WebhookDispatcher
from diffusiond.webhooks.ssrf import UrlPolicy

if TYPE_CHECKING:
    from diffusiond.engine.runner import Engine

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a route or command needs, built once."""

    settings: Settings
    db: Database
    blobs: BlobStore
    signer: UrlSigner
    keys: KeyService
    tenants: TenantService
    models: ModelRegistry
    events: JobEvents
    jobs: JobService
    rate_limiter: RateLimiter
    uploads: UploadRules
    datasets: DatasetService
    callbacks: CallbackService
    endpoints: EndpointService
    direct_uploads: DirectUploads
    executor: Executor | None = None
    webhooks: WebhookDispatcher | None = None
    extras: dict[str, object] = field(default_factory=dict)

    def start(self) -> None:
        """Migrate, register built-ins, bootstrap the admin key, start workers."""
        self.db.migrate()
        self.models.register_builtins(bundled=self.settings.bundled_models)
        if self.settings.anonymous_tenant:
            self.keys.ensure_tenant(self.settings.anonymous_tenant, from_credits(self.settings.default_credits))
        if self.settings.bootstrap_key is not None:
            self.keys.ensure_bootstrap(self.settings.bootstrap_key.get_secret_value(),
                                       from_credits(self.settings.default_credits))
        if self.executor is not None:
            executor = self.executor
            self.events.add_listener(lambda _job_id: executor.notify())
            executor.start()
        if self.webhooks is not None:
            self.jobs.on_outbox = self.webhooks.notify  # wake on new outbox rows, not on every change
            self.webhooks.start()
        freeze_startup_heap()

    def stop(self) -> None:
        if self.webhooks is not None:
            self.webhooks.stop()
        if self.executor is not None:
            self.executor.stop()
        self.db.dispose()


def freeze_startup_heap() -> None:
    """Put what start-up left alive beyond the cycle collector's reach, once per process.

    Importing torch, diffusers and transformers leaves about 400,000 objects. Every full collection
    walks them all, about 0.1 to 0.2 s on a small CPU, and under the GIL it stalls the event loop and
    the worker alike: those stalls were the submit p99. Frozen objects are never collected as cycles,
    so this runs once, before any model is loaded (pipelines live in reference cycles and must stay
    collectable when the model cache evicts them).
    """
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()


def build_blob_store(settings: Settings) -> BlobStore:
    if settings.blob_store == "s3":
        from diffusiond.blobs.s3 import S3BlobStore

        return S3BlobStore(settings.s3_bucket or "", prefix=settings.s3_prefix,
                           endpoint_url=settings.s3_endpoint_url)
    return LocalBlobStore(settings.resolved_blob_dir)


def build_direct_uploads(settings: Settings, blobs: BlobStore) -> DirectUploads:
    """Signed upload URLs: real S3 presigned ones with the S3 store, else served by this server."""
    if settings.blob_store == "s3":
        from diffusiond.blobs.s3 import S3BlobStore

        assert isinstance(blobs, S3BlobStore)
        return blobs.direct_uploads(settings.max_model_bytes)
    secret = hmac.new(settings.resolved_signing_secret(), b"direct-uploads", hashlib.sha256).digest()
    return LocalDirectUploads(blobs, (settings.home / "staging").resolve(), secret, settings.resolved_public_url,
                              max_part_bytes=settings.max_model_part_bytes, max_bytes=settings.max_model_bytes)


def build_rate_limiter(settings: Settings) -> RateLimiter:
    if settings.rate_limiter == "redis":
        return RedisRateLimiter(settings.redis_url)
    return MemoryRateLimiter()


def build_engine(settings: Settings, models: ModelRegistry, blobs: BlobStore) -> Engine:
    """The generation engine; torch loads here, only when something generates."""
    from diffusiond.engine.runner import Engine

    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    cache_dir = Path(settings.home) / "cache"
    return Engine(resolver=LocalModelFiles(models, blobs, cache_dir / "models"), cache_dir=cache_dir,
                  device=settings.device, precision=settings.precision)


def build_handlers(settings: Settings, models: ModelRegistry, blobs: BlobStore) -> Handlers:
    """The worker's table: one handler per kind of work, built when workers start."""
    from diffusiond.engine.merge import MergeHandler
    from diffusiond.engine.runner import GenerateHandler
    from diffusiond.engine.training.handler import TrainHandler

    cache_dir = Path(settings.home) / "cache"
    return {
        JobKind.GENERATE: GenerateHandler(build_engine(settings, models, blobs)),
        JobKind.MERGE: MergeHandler(LocalModelFiles(models, blobs, cache_dir / "models"), cache_dir / "merge"),
        JobKind.TRAIN: TrainHandler(LocalModelFiles(models, blobs, cache_dir / "models"), cache_dir,
                                    cache_dir / "train", device=settings.device,
                                    checkpoint_every=settings.training_checkpoint_every),
    }


def build_webhook_renderers(signer: UrlSigner, settings: Settings) -> dict[str, WebhookRenderer]:
    """Each dialect's webhook body for the jobs it submitted (others get the core's body)."""
    from diffusiond.api.eks.outputs import Locations, eks_webhook_renderer
    from diffusiond.api.jobs.webhooks import job_webhook_renderer

    return {"jobs": job_webhook_renderer(signer, settings.url_expiry_seconds),
            "eks": eks_webhook_renderer(Locations(settings, signer))}


def build_output_layouts(blobs: BlobStore) -> dict[str, OutputLayout]:
    """Dialects whose jobs' files the worker lays out their way (the EKS task folders)."""
    from diffusiond.api.eks.outputs import EksOutputLayout

    return {"eks": EksOutputLayout(blobs)}


def build_success_effects(models: ModelRegistry) -> dict[JobKind, SuccessEffect]:
    """What each kind of work makes of a succeeded job, in its transition's transaction."""
    return {JobKind.TRAIN: models.register_job_output, JobKind.MERGE: models.register_job_output}


def build_executor(settings: Settings, jobs: JobService, blobs: BlobStore, models: ModelRegistry,
                   endpoints: EndpointService) -> Executor:
    """The default endpoint's worker threads, and the named endpoints' spawned worker processes."""
    from diffusiond.queue.endpoint_executor import EndpointExecutor
    from diffusiond.queue.replicas import ProcessLauncher

    pools = [
        WorkerPool("generate", settings.workers, [JobKind.GENERATE], batch_size=settings.batch_size),
        WorkerPool("train", settings.training_workers, [JobKind.TRAIN, JobKind.MERGE]),
    ]
    default = LocalExecutor(jobs, blobs, lambda: build_handlers(settings, models, blobs), pools=pools,
                            batch_window=settings.batch_window_ms / 1000, instance=InstanceSlot(settings.home),
                            layouts=build_output_layouts(blobs))
    named = EndpointExecutor(endpoints, ProcessLauncher(settings), lease_seconds=settings.endpoint_lease_seconds,
                             stop_grace=settings.endpoint_drain_seconds, max_workers=settings.max_endpoint_workers)
    return ExecutorGroup([default, named])


def build_services(settings: Settings, *, with_workers: bool | None = None) -> Services:
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    models = ModelRegistry(db, settings.registry_cache_seconds)
    events = JobEvents()
    blobs = build_blob_store(settings)
    signer = UrlSigner(settings.resolved_signing_secret(), settings.resolved_public_url,
                       presign=blobs.presigned_url)
    url_policy = UrlPolicy(settings.webhook_allow_hosts)
    uploads = UploadRules(settings.max_upload_bytes, settings.max_upload_pixels)
    jobs = JobService(db, events, lease_seconds=settings.job_lease_seconds,
                      max_attempts=settings.job_max_attempts, max_queued_per_tenant=settings.max_queued_jobs_per_tenant,
                      url_policy=url_policy, webhook_renderers=build_webhook_renderers(signer, settings),
                      success_effects=build_success_effects(models))
    tenants = TenantService(db)
    endpoints = EndpointService(db, jobs, load_instance_table(settings.instance_types))
    services = Services(
        settings=settings, db=db, blobs=blobs, signer=signer,
        keys=KeyService(db, settings.auth_cache_seconds, anonymous_tenant=settings.anonymous_tenant),
        tenants=tenants, models=models, events=events, jobs=jobs,
        rate_limiter=build_rate_limiter(settings),
        uploads=uploads, datasets=DatasetService(db, blobs, uploads), callbacks=CallbackService(db, url_policy),
        endpoints=endpoints, direct_uploads=build_direct_uploads(settings, blobs),
        webhooks=WebhookDispatcher(db, tenants, url_policy),
    )
    run_workers = settings.executor == "local" if with_workers is None else with_workers
    if run_workers:
        services.executor = build_executor(settings, jobs, blobs, models, endpoints)
    return services
