"""The one wiring place: builds every service from Settings, picking each interface's implementation."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path

from diffusiond.auth.keys import KeyService
from diffusiond.auth.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from diffusiond.auth.tenants import TenantService
from diffusiond.blobs.base import BlobStore
from diffusiond.blobs.local import LocalBlobStore
from diffusiond.blobs.signing import UrlSigner
from diffusiond.config import Settings
from diffusiond.domain.pricing import from_credits
from diffusiond.models.registry import ModelRegistry
from diffusiond.queue.events import JobEvents
from diffusiond.queue.instance import InstanceSlot
from diffusiond.queue.job_service import JobService
from diffusiond.queue.local_executor import LocalExecutor
from diffusiond.queue.worker import Runner
from diffusiond.store.database import Database
from diffusiond.webhooks.dispatcher import WebhookDispatcher
from diffusiond.webhooks.payload import job_payload_builder
from diffusiond.webhooks.ssrf import UrlPolicy

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
    executor: LocalExecutor | None = None
    webhooks: WebhookDispatcher | None = None
    extras: dict[str, object] = field(default_factory=dict)

    def start(self) -> None:
        """Migrate, register built-ins, bootstrap the admin key, start workers."""
        self.db.migrate()
        self.models.register_builtins(bundled=self.settings.bundled_models)
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


def build_rate_limiter(settings: Settings) -> RateLimiter:
    if settings.rate_limiter == "redis":
        return RedisRateLimiter(settings.redis_url)
    return MemoryRateLimiter()


def build_runner(settings: Settings, models: ModelRegistry) -> Runner:
    from diffusiond.engine.runner import Engine  # torch loads here, only when a worker starts

    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    return Engine(resolver=models, cache_dir=Path(settings.home) / "cache", device=settings.device)


def build_services(settings: Settings, *, with_workers: bool | None = None) -> Services:
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    models = ModelRegistry(db, settings.registry_cache_seconds)
    events = JobEvents()
    jobs = JobService(db, events, lease_seconds=settings.job_lease_seconds,
                      max_attempts=settings.job_max_attempts, max_queued_per_tenant=settings.max_queued_jobs_per_tenant)
    blobs = build_blob_store(settings)
    signer = UrlSigner(settings.resolved_signing_secret(), settings.resolved_public_url,
                       presign=blobs.presigned_url)
    jobs.webhook_payload = job_payload_builder(signer, settings.url_expiry_seconds)
    tenants = TenantService(db)
    services = Services(
        settings=settings, db=db, blobs=blobs, signer=signer,
        keys=KeyService(db, settings.auth_cache_seconds), tenants=tenants, models=models, events=events, jobs=jobs,
        rate_limiter=build_rate_limiter(settings),
        webhooks=WebhookDispatcher(db, tenants, UrlPolicy(settings.webhook_allow_hosts)),
    )
    run_workers = settings.executor == "local" if with_workers is None else with_workers
    if run_workers:
        services.executor = LocalExecutor(jobs, blobs, lambda: build_runner(settings, models),
                                          workers=settings.workers, batch_size=settings.batch_size,
                                          batch_window=settings.batch_window_ms / 1000,
                                          instance=InstanceSlot(settings.home))
    return services
