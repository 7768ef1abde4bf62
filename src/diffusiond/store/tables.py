"""SQLAlchemy 2 table models. Schemas live in Alembic migrations; these mirror them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class TenantRow(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    # Spendable millicredits; equals the sum of this tenant's ledger rows. Updated with a guarded
    # UPDATE (balance >= amount) so concurrent reservations can never take it below zero.
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    webhook_secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16), default="user")
    rate_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    rate_burst: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: the server's default burst
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ModelRow(Base):
    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    format: Mapped[str] = mapped_column(String(32))
    family: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    trigger_words: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(32), default="ready")
    tenant_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelAliasRow(Base):
    __tablename__ = "model_aliases"
    alias: Mapped[str] = mapped_column(String(200), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))


class ResourceRow(Base):
    __tablename__ = "resources"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    blob_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    mime: Mapped[str | None] = mapped_column(String(64), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "request_id", name="uq_jobs_tenant_request"),
        # The queue: rank, length and claims filter on status and endpoint, in arrival order.
        Index("ix_jobs_queue", "status", "endpoint", "created_at"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
        # A tenant's queued jobs, counted against max_queued_jobs_per_tenant on every submit.
        Index("ix_jobs_tenant_status", "tenant_id", "status"),
        Index("ix_jobs_tenant_parent", "tenant_id", "parent_id"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    request_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))  # domain.jobs.JobKind: which spec type `spec` holds
    dialect: Mapped[str] = mapped_column(String(32), default="jobs")  # the API that submitted it
    spec: Mapped[str] = mapped_column(Text)
    batch_key: Mapped[str] = mapped_column(String(200), default="")
    endpoint: Mapped[str] = mapped_column(String(100), default="default")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)  # a long job's latest figures
    credits_reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_charged: Mapped[int] = mapped_column(BigInteger, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    notify_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # More webhook targets ([{url, format}]): a tenant's registered callbacks, copied at submit.
    notify_targets: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    # What the submitting dialect needs to render the job later (a task id, a folder); the core never reads it.
    dialect_data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # What the job belongs to in its dialect (a custom model, an endpoint); lists filter on it.
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # soft delete
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), default="image")  # domain.jobs.ArtifactKind
    blob_key: Mapped[str] = mapped_column(Text)
    mime: Mapped[str] = mapped_column(String(64))
    # images
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # model files and documents
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    finish_reason: Mapped[str] = mapped_column(String(32), default="SUCCESS")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetRow(Base):
    """A named set of a tenant's training pictures; soft-deleted rows stay for history."""

    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_tenant_name", "tenant_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DatasetItemRow(Base):
    __tablename__ = "dataset_items"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    blob_key: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    caption: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LedgerRow(Base):
    """Append-only credit entries; a tenant's balance is their sum."""

    __tablename__ = "ledger"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    entry: Mapped[str] = mapped_column(String(16))  # grant | reserve | release | capture
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OutboxRow(Base):
    """Webhook deliveries written in the same transaction as the state change they announce."""

    __tablename__ = "outbox"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    event: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16), default="standard")  # standard | sns (webhooks/formats.py)
    terminal: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CallbackRow(Base):
    """A URL a tenant registered to hear of its jobs' completion (EKS callbacks), per dialect."""

    __tablename__ = "tenant_callbacks"
    __table_args__ = (UniqueConstraint("tenant_id", "dialect", "url", name="uq_tenant_callbacks_url"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    dialect: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16), default="standard")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DialectSettingsRow(Base):
    """A tenant's settings in one dialect (A1111's options): each tenant's own, never shared."""

    __tablename__ = "dialect_settings"
    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dialect: Mapped[str] = mapped_column(String(32), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


Index("ix_outbox_status_next", OutboxRow.status, OutboxRow.next_attempt_at)
# One terminal webhook per job and target: a job with several callback URLs has one row for each.
Index(
    "uq_outbox_terminal_job",
    OutboxRow.job_id,
    OutboxRow.url,
    unique=True,
    sqlite_where=OutboxRow.terminal.is_(True),
    postgresql_where=OutboxRow.terminal.is_(True),
)


class EndpointRow(Base):
    """A named worker pool (domain.endpoints.Endpoint); its id is the queue name its jobs carry.

    `owner` is the executor process that runs its workers, holding the endpoint until
    `owner_expires_at`; another machine's executor takes over an endpoint whose owner stopped renewing.
    """

    __tablename__ = "endpoints"
    __table_args__ = (Index("ix_endpoints_tenant_name", "tenant_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(100))
    instance_type: Mapped[str] = mapped_column(String(64))
    desired_replicas: Mapped[int] = mapped_column(Integer)
    min_replicas: Mapped[int] = mapped_column(Integer)
    max_replicas: Mapped[int] = mapped_column(Integer)
    ready_replicas: Mapped[int] = mapped_column(Integer, default=0)
    autoscaling: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    owner_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EsdCheckpointRow(Base):
    """An AWS-extension checkpoint: model files uploaded in parts, then registered (api/esd)."""

    __tablename__ = "esd_checkpoints"
    __table_args__ = (Index("ix_esd_checkpoints_tenant_created", "tenant_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(32))  # Stable-diffusion | Lora | embeddings | ...
    status: Mapped[str] = mapped_column(String(16))  # Initial | Active | Disabled
    # [{filename, parts_number, upload_id, key}]: what the client declared and where its parts go
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    models: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # file name -> registered model id
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EsdModelRow(Base):
    """An AWS-extension "model": a checkpoint made ready as a training base (api/esd)."""

    __tablename__ = "esd_models"
    __table_args__ = (Index("ix_esd_models_tenant_created", "tenant_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(64))
    model_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # Initial | Creating | Complete | Fail
    checkpoint_id: Mapped[str] = mapped_column(String(40))
    base_model: Mapped[str | None] = mapped_column(String(200), nullable=True)  # registry id, once Complete
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EsdTrainingRow(Base):
    """An AWS-extension training: its inputs, and the core `train` job once started (api/esd)."""

    __tablename__ = "esd_trainings"
    __table_args__ = (Index("ix_esd_trainings_tenant_created", "tenant_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    train_type: Mapped[str] = mapped_column(String(32))
    model_id: Mapped[str] = mapped_column(String(40))  # an esd_models id
    status: Mapped[str] = mapped_column(String(16))  # Initial | Training | Complete | Fail (job decides the last two)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    files: Mapped[list[str]] = mapped_column(JSON, default=list)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    output_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
