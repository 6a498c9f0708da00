"""ORM models of the Poise job database.

Why this module exists: MLflow records *what a model is* (params, metrics,
artifacts, registered versions), but Poise also needs its own durable record of
*what the platform did*: each training job and its lifecycle, every agent step
of the orchestration graph, the datasets that were profiled, and the promotion
decision taken for every registered model version. This module is the single
source of truth for that schema; `registry/migrations/` must match it exactly
(a test runs alembic's autogenerate comparison on SQLite and PostgreSQL).

Portability rules, so the same models run on the embedded SQLite default and on
PostgreSQL:

* JSON columns use the generic `sqlalchemy.JSON` type.
* Timestamps use `UTCDateTime`: stored as UTC, always returned timezone-aware
  (SQLite has no timezone support, so without it values would come back naive).
* Constraint names come from `NAMING_CONVENTION`, so they are identical on every
  backend and later migrations can refer to them by name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATUSES: tuple[str, ...] = (
    "queued", "running", "succeeded", "failed", "rejected", "interrupted", "awaiting_approval", "cancelled",
)
STEP_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed", "waiting")
SCHEDULER_TABLE = "poise_schedules"  # drift-check schedules: APScheduler's SQLAlchemy job store owns this table


def utcnow() -> datetime:
    """Current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def _in_list_sql(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that stores UTC and always returns aware UTC datetimes.

    Naive datetimes given by callers are taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        # SQLite's DATETIME storage would silently drop the offset; store naive UTC there.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(none_as_null=True),
    }


class Dataset(Base):
    """An input table, identified by the hash of its content, with its profile."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(Text)
    n_rows: Mapped[int] = mapped_column(Integer)
    n_columns: Mapped[int] = mapped_column(Integer)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"Dataset(id={self.id!r}, content_hash={self.content_hash!r}, n_rows={self.n_rows!r})"


class Job(Base):
    """One training job: its spec, lifecycle and outcome."""

    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint(_in_list_sql("status", JOB_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4().hex, chosen by the caller
    name: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(20))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True))
    error: Mapped[str | None] = mapped_column(Text)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    worker_id: Mapped[str | None] = mapped_column(String(100))  # the worker that claimed it last
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pending_decision: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    dataset: Mapped[Dataset | None] = relationship()
    steps: Mapped[list[JobStep]] = relationship(
        back_populates="job",
        order_by="(JobStep.started_at, JobStep.id)",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    model_versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="job",
        order_by="ModelVersion.id",
    )

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, name={self.name!r}, status={self.status!r})"


class JobStep(Base):
    """One node execution of the orchestration graph within a job."""

    __tablename__ = "job_steps"
    __table_args__ = (CheckConstraint(_in_list_sql("status", STEP_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    node: Mapped[str] = mapped_column(String(50))
    agent: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    message: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    job: Mapped[Job] = relationship(back_populates="steps")

    def __repr__(self) -> str:
        return f"JobStep(id={self.id!r}, job_id={self.job_id!r}, node={self.node!r}, status={self.status!r})"


class ModelVersion(Base):
    """A model version registered in MLflow by a job, with its promotion-gate decision."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("registered_name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    mlflow_run_id: Mapped[str] = mapped_column(String(64))
    registered_name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(20))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True))
    threshold: Mapped[float | None] = mapped_column(Float)
    # what the gate did at registration; whether the version is champion now is the MLflow alias alone
    champion_at_registration: Mapped[bool] = mapped_column(Boolean, default=False)
    gate_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="model_versions")

    def __repr__(self) -> str:
        return (
            f"ModelVersion(id={self.id!r}, registered_name={self.registered_name!r}, "
            f"version={self.version!r}, champion_at_registration={self.champion_at_registration!r})"
        )


class LLMCall(Base):
    """One request to the LLM endpoint: what was sent, what came back, cost and outcome.

    Recorded for failures too (then `response` is NULL and `error` says why), so a
    planning decision can always be traced back to the exact prompt and reply.
    `job_id` has no foreign key: calls made before the job row exists are kept.
    """

    __tablename__ = "llm_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str | None] = mapped_column(String(32), index=True)
    job_id: Mapped[str | None] = mapped_column(String(32), index=True)
    purpose: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    tool_calls: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"LLMCall(id={self.id!r}, purpose={self.purpose!r}, model={self.model!r}, outcome={self.outcome!r})"


class ChatSession(Base):
    """A conversation with the user; `state` is a free-form dict owned by the chat layer."""

    __tablename__ = "chat_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4().hex, chosen by the caller
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    state: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True), default=dict)
    job_id: Mapped[str | None] = mapped_column(String(32))
    owner_key_id: Mapped[int | None] = mapped_column(Integer)  # the API key that started it; None: the local CLI

    messages: Mapped[list[ChatMessage]] = relationship(
        back_populates="session",
        order_by="ChatMessage.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    def __repr__(self) -> str:
        return f"ChatSession(id={self.id!r}, job_id={self.job_id!r})"


class ChatMessage(Base):
    """One message of a chat session, in order of insertion (`id`)."""

    __tablename__ = "chat_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    session: Mapped[ChatSession] = relationship(back_populates="messages")

    def __repr__(self) -> str:
        return f"ChatMessage(id={self.id!r}, session_id={self.session_id!r}, role={self.role!r})"


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; `prefix` finds the row, scopes say what it may do."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Prediction(Base):
    """One served prediction (inputs, outputs, model version), kept for monitoring and feedback."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    model_version: Mapped[str] = mapped_column(String(20))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True))
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    feedback_label: Mapped[str | None] = mapped_column(String(200))
    feedback_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


CHECK_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "awaiting_approval")


class DriftCheck(Base):
    """One drift check of a served model: its window, what the drift agent found, decided and did.

    Queued checks are claimed by workers like jobs (`worker_id`, `heartbeat_at`, `attempts`).
    A scheduled check carries the fire time it was created for; (model, fire time) is unique,
    so two schedulers sharing the database never queue the same check twice."""

    __tablename__ = "drift_checks"
    __table_args__ = (
        CheckConstraint(_in_list_sql("status", CHECK_STATUSES), name="status"),
        UniqueConstraint("model_name", "scheduled_for"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(String(20))  # cli | api | schedule
    spec: Mapped[dict[str, Any]] = mapped_column(JSON(none_as_null=True))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime())
    champion_version: Mapped[str | None] = mapped_column(String(20))
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    n_rows: Mapped[int | None] = mapped_column(Integer)
    decision: Mapped[str | None] = mapped_column(String(30))
    reason: Mapped[str | None] = mapped_column(Text)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    challenger_version: Mapped[str | None] = mapped_column(String(20))
    promoted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    retrain_job_id: Mapped[str | None] = mapped_column(String(32))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    worker_id: Mapped[str | None] = mapped_column(String(100))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pending_decision: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    def __repr__(self) -> str:
        return f"DriftCheck(id={self.id!r}, model_name={self.model_name!r}, status={self.status!r})"
