"""Settings: every knob, read from DIFFUSIOND_* environment variables (or a .env file)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from diffusiond.domain.training import MAX_TRAINING_IMAGES, MIN_TRAINING_IMAGES


class Settings(BaseSettings):
    """The one configuration object; `services.build_services` turns it into implementations."""

    model_config = SettingsConfigDict(env_prefix="DIFFUSIOND_", env_file=".env", extra="ignore")

    home: Path = Path(".diffusiond")
    host: str = "127.0.0.1"
    port: int = 7860
    public_url: str | None = None  # base URL clients reach this server on; default http://host:port

    # Storage: SQLite under `home` by default; any SQLAlchemy URL (postgresql+psycopg://...) at scale.
    database_url: str | None = None
    blob_store: Literal["local", "s3"] = "local"
    blob_dir: Path | None = None
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_prefix: str = ""

    # Work: in-process workers by default.
    executor: Literal["local", "none"] = "local"
    workers: int = 1  # threads that generate images
    training_workers: int = 1  # threads that train and merge models, so a long training never holds up images
    # A training saves resumable state this often (steps); a worker lost mid-way costs at most this
    # many steps. None: what each training asks for (50 by default).
    training_checkpoint_every: int | None = None
    device: str | None = None  # None: cuda when available, else cpu
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: fp16 on CUDA, fp32 on the CPU
    torch_threads: int | None = None  # intra-op CPU threads; None keeps torch's default
    batch_size: int = 8  # dynamic batching: compatible txt2img jobs per forward pass
    batch_window_ms: float = 5.0  # how long a lone batchable job waits for company
    job_lease_seconds: float = 60.0
    job_max_attempts: int = 3
    sync_timeout_seconds: float = 900.0
    max_queued_jobs_per_tenant: int = 1000  # a submit beyond it is refused with 429 (0: no limit)

    # Endpoints: named worker pools in processes this server spawns (README "Endpoints and instance
    # types"). `instance_types` picks the instance-type -> device table: `cpu` (every type on the CPU),
    # `aws-gpu`, or a JSON file. `gpus` overrides how many GPUs this machine offers (None: detect).
    instance_types: str = "cpu"
    gpus: int | None = None
    endpoint_lease_seconds: float = 20.0  # an endpoint's workers move to another machine after this
    endpoint_drain_seconds: float = 900.0  # a deleted endpoint's running jobs get this long to finish
    max_endpoint_workers: int = 8  # endpoint worker processes this machine runs at once, all endpoints together

    # The AWS-extension API (seed 000): where it is mounted (`/prod` gives the original base URL).
    esd_prefix: str = "/esd"

    # Models
    default_model: str = "shapes"
    # How long a resolved model id is trusted; changes from other processes show up within this.
    registry_cache_seconds: float = 2.0
    bundled_models: bool = True

    # The custom-model API (/v1/custom): the checkpoint its trainings start from (None: default_model),
    # and the fewest training images a training accepts (at least the core's minimum, 4).
    custom_base_model: str | None = None
    custom_min_images: int = 4

    # Auth and limits
    bootstrap_key: SecretStr | None = None
    # A verified key is trusted this long before it is looked up again (0: every request). Revocation
    # takes effect at once in the process that revokes, and within this time in other replicas.
    auth_cache_seconds: float = 5.0
    default_credits: float = 100.0
    rate_limit_per_second: float = 30.0
    rate_limit_burst: int = 50
    # Requests that present no key act as this tenant (created on start). For a single-user install
    # on loopback only: anyone who can reach the port spends its credits (see the README). Off: None.
    anonymous_tenant: str | None = None
    rate_limiter: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    max_upload_bytes: int = 10 * 1024 * 1024  # one uploaded image file
    max_upload_pixels: int = 4096 * 4096
    # Model files uploaded in parts: the whole file, one part, how many parts, and a tar archive's members.
    max_model_bytes: int = 16 * 1024**3
    max_model_part_bytes: int = 5 * 1024**3
    max_model_parts: int = 1000
    max_archive_members: int = 1000
    # Request bodies, bounded at the edge before routing and auth (see api/edge.py): a JSON body (and
    # all of a multipart body but its files), how deep JSON may nest, and a multipart form's fields.
    max_json_bytes: int = 1024 * 1024
    max_json_depth: int = 64
    max_form_fields: int = 200
    max_form_field_bytes: int = 64 * 1024
    # Threads for a request's blocking work (database, blob store, uploads). They share one GIL: past
    # a few, more threads only add switching (measured in BENCHMARKS.md). None: cores + 2, at most 8.
    # Raise it when the database is remote and round trips, not CPU, bound a request.
    api_threads: int | None = None

    # URL signing for outputs; generated and kept under `home` when not given.
    signing_secret: SecretStr | None = None
    url_expiry_seconds: int = 3600

    webhook_allow_hosts: str = ""
    # Server-side fetches of client URLs (EKS image links): the same SSRF guard as webhooks, plus limits.
    fetch_max_bytes: int = 20 * 1024 * 1024
    fetch_timeout_seconds: float = 20.0
    # The EKS API's runtimes, as JSON: [{"name", "type": "sdwebui"|"comfyui", "endpoint", "model",
    # "model_filename", "dynamic_model"}]; None: one sdwebui runtime named sdruntime (see api/eks/runtimes.py).
    eks_runtimes: str | None = None
    log_level: str = "info"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.blob_store == "s3" and not self.s3_bucket:
            raise ValueError("DIFFUSIOND_S3_BUCKET is required when DIFFUSIOND_BLOB_STORE=s3")
        if self.training_checkpoint_every is not None and self.training_checkpoint_every < 1:
            raise ValueError("DIFFUSIOND_TRAINING_CHECKPOINT_EVERY must be >= 1")
        if self.workers < 0 or self.training_workers < 0:
            raise ValueError("DIFFUSIOND_WORKERS and DIFFUSIOND_TRAINING_WORKERS must be >= 0")
        if not self.esd_prefix.startswith("/") or self.esd_prefix.endswith("/"):
            raise ValueError("DIFFUSIOND_ESD_PREFIX must start with / and not end with one (e.g. /esd, /prod)")
        if self.api_threads is not None and self.api_threads < 1:
            raise ValueError("DIFFUSIOND_API_THREADS must be >= 1")
        if not MIN_TRAINING_IMAGES <= self.custom_min_images <= MAX_TRAINING_IMAGES:
            raise ValueError(f"DIFFUSIOND_CUSTOM_MIN_IMAGES must be between {MIN_TRAINING_IMAGES} and "
                             f"{MAX_TRAINING_IMAGES}")
        limits = (self.max_upload_bytes, self.max_json_bytes, self.max_json_depth, self.max_form_fields,
                  self.max_form_field_bytes)
        if min(limits) < 1:
            raise ValueError("DIFFUSIOND_MAX_{UPLOAD_BYTES,JSON_BYTES,JSON_DEPTH,FORM_FIELDS,FORM_FIELD_BYTES} "
                             "must be >= 1")
        return self

    @property
    def resolved_api_threads(self) -> int:
        return self.api_threads or min(8, (os.cpu_count() or 1) + 2)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'diffusiond.db').resolve()}"

    @property
    def resolved_blob_dir(self) -> Path:
        return (self.blob_dir or self.home / "blobs").resolve()

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def resolved_signing_secret(self) -> bytes:
        """The URL-signing key: configured, or created once under `home` and reused."""
        if self.signing_secret is not None:
            return self.signing_secret.get_secret_value().encode()
        path = self.home / "signing.key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()
