"""Training jobs: create one from a spec, run it (through the one graph runner, `pipelines.graph_runner`), answer
its approval, resume it, and record its outcome — status, dataset, registered version — in the database.

Drift retraining is a training job too (`pipelines.monitoring.nodes` submits one with `run_spec`).
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from poise.agents.data_engineering.object_store import is_s3
from poise.agents.errors import Conflict, SpecError
from poise.agents.job_spec import JobSpec
from poise.pipelines import graph_runner
from poise.pipelines.graph_runner import AWAITING_APPROVAL, EventHandler, JobKind
from poise.pipelines.settings import Settings
from poise.pipelines.training.configuration import TrainingContext
from poise.pipelines.training.graph import STEPS, build_graph
from poise.pipelines.training.state import served_fit
from poise.registry.db import session_scope
from poise.registry import queries
from poise.registry.models import Dataset, Job, ModelVersion, utcnow
from poise.registry.queries import find_job_by_prefix

RESUMABLE = {"queued", "running", "interrupted", "failed"}


def _context(settings: Settings, job_id: str, spec: dict[str, Any]) -> TrainingContext:
    return TrainingContext(settings=settings, job_id=job_id, session_id=spec.get("session_id"))


def _cancel_requested(settings: Settings, job_id: str) -> bool:  # set by `pipelines.worker.request_cancel`
    with session_scope(settings.db_url) as session:
        return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


TRAINING = JobKind(noun="job", steps=STEPS, build_graph=build_graph, make_context=_context,
                   cancel_requested=_cancel_requested)


@dataclass
class JobResult:
    job_id: str
    status: str
    name: str
    error: str | None = None
    model_version: str | None = None
    is_champion: bool = False
    mlflow_run_id: str | None = None
    threshold: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    train_path: Path | None = None
    holdout_path: Path | None = None
    report_path: Path | None = None
    plan: list[str] = field(default_factory=list)
    summary: str | None = None
    seconds: float = 0.0


def default_model_name(data: str, target: str) -> str:
    raw = f"{Path(data).stem}-{target}"
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in raw).strip("-._")
    return (cleaned or "model")[:100]


def make_spec(data: str | Path, target: str, settings: Settings, **options: Any) -> JobSpec:
    """The validated spec of a job on `data`: the caller's options over the defaults (`JobOptions`' own, then the
    service's budget and presets, and a model name made from the file and target)."""
    values = {k: v for k, v in options.items() if v is not None}
    values.setdefault("name", default_model_name(str(data), target))
    values.setdefault("time_limit", settings.time_limit)
    values.setdefault("presets", settings.presets)
    try:
        where = str(data) if is_s3(data) else str(Path(data).expanduser().resolve())
        return JobSpec(data=where, target=target, **values)
    except ValidationError as error:
        raise SpecError(f"invalid job options: {option_problems(error)}") from None


def option_problems(error: ValidationError) -> str:
    """A spec's validation errors in one line: `field: problem; ...`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in error.errors())


def create_job(spec: JobSpec, settings: Settings) -> str:
    settings.ensure_home()
    upload = settings.upload_of(spec.data)
    if upload is not None:  # for the worker that runs it, maybe on another machine
        settings.file_store.push(upload)
    job_id = uuid.uuid4().hex
    with session_scope(settings.db_url) as session:
        session.add(Job(id=job_id, name=spec.name, status="queued", spec=spec.model_dump()))
    return job_id


def train(data: str | Path, target: str, *, settings: Settings | None = None, on_event: EventHandler | None = None,
          **options: Any) -> JobResult:
    """Train, evaluate, gate and register a model on one table: the whole job, in this process. `options` are
    any of `agents.job_spec.JobOptions` (objective, time_limit, presets, ...); the service's defaults fill the rest."""
    settings = settings or Settings()
    return run_spec(make_spec(data, target, settings, **options), settings, on_event)


def run_spec(spec: JobSpec, settings: Settings, on_event: EventHandler | None = None) -> JobResult:
    """Create a job for a validated spec and run it (until done, or until it waits for approval)."""
    return run_job(create_job(spec, settings), settings, on_event)


def decide(job_id: str, approved: bool, settings: Settings | None = None,
           on_event: EventHandler | None = None, by: str = "user") -> JobResult:
    """Approve or reject the plan of a job waiting at its approval step (from any process)."""
    settings = settings or Settings()
    job = find_job(settings, job_id)
    if job.status != AWAITING_APPROVAL:
        raise Conflict(f"job {job.id[:12]} is {job.status}, not waiting for approval")
    return run_job(job.id, settings, on_event, resume_value={"approved": approved, "by": by})


def queue_decision(job_id: str, approved: bool, settings: Settings, by: str = "user") -> JobResult:
    """Record the answer for a job waiting for approval and queue it for a worker to resume."""
    with session_scope(settings.db_url) as session:
        job = find_job_by_prefix(session, job_id)
        if job.status != AWAITING_APPROVAL:
            raise Conflict(f"job {job.id[:12]} is {job.status}, not waiting for approval")
        job.pending_decision, job.status = {"approved": approved, "by": by}, "queued"
        return JobResult(job_id=job.id, status="queued", name=job.name)


def resume(job_id: str, settings: Settings | None = None, on_event: EventHandler | None = None) -> JobResult:
    """Continue a job from its last checkpointed node."""
    settings = settings or Settings()
    with session_scope(settings.db_url) as session:
        job = find_job_by_prefix(session, job_id)
        if job.status == AWAITING_APPROVAL:
            raise Conflict(f"job {job.id[:12]} is waiting for approval of its plan: `poise approve {job.id[:12]}`")
        if job.status not in RESUMABLE:
            raise Conflict(f"job {job.id} is {job.status}; only unfinished jobs can be resumed")
        job.worker_id, job.heartbeat_at = None, None  # resumed here: no worker may requeue it
        job_id = job.id
    return run_job(job_id, settings, on_event)


def checkpoint_state(settings: Settings, job_id: str) -> tuple[dict[str, Any], list[str]]:
    """A job's checkpointed graph state and, when it waits for approval, the plan it shows."""
    return graph_runner.checkpoint_state(TRAINING, settings, job_id)


def find_job(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.db_url) as session:
        job = find_job_by_prefix(session, job_id)
        job.steps, job.model_versions  # load before the session closes  # noqa: B018
        return job


def run_job(job_id: str, settings: Settings, on_event: EventHandler | None = None,
            resume_value: dict[str, Any] | None = None) -> JobResult:
    started = time.perf_counter()
    with session_scope(settings.db_url) as session:
        job = session.get(Job, job_id)
        spec = job.spec
        job.status, job.started_at, job.error = "running", job.started_at or utcnow(), None
    run = graph_runner.drive(TRAINING, job_id, spec, settings, on_event, resume_value)
    state, seconds = run.state, lambda: time.perf_counter() - started
    if run.status == "interrupted":
        _finish(settings, job_id, "interrupted", "interrupted by the user; continue with `poise resume`")
        raise KeyboardInterrupt
    if run.status in ("failed", "cancelled"):  # failed: a bug, not bad input; the checkpoint keeps the rest
        _finish(settings, job_id, run.status, run.error)
        return _result(job_id, spec, run.status, state, run.error, seconds())

    if state.get("spec") and state["spec"] != spec:  # the review step amended the plan
        with session_scope(settings.db_url) as session:
            session.get(Job, job_id).spec = state["spec"]
    if run.status == "waiting":
        _finish(settings, job_id, AWAITING_APPROVAL, None, finished=False)
        result = _result(job_id, state["spec"], AWAITING_APPROVAL, state, None, seconds())
        result.plan = run.plan
        return result
    if state.get("profile"):
        _record_dataset(settings, job_id, state)
    if run.error:
        status = "cancelled" if state.get("approval", {}).get("approved") is False else "rejected"
        shutil.rmtree(settings.job_dir(job_id), ignore_errors=True)  # nothing half-written stays behind
        settings.file_store.delete(settings.job_dir(job_id))
        _finish(settings, job_id, status, run.error)
        return _result(job_id, spec, status, state, run.error, seconds())
    _record_model_version(settings, job_id, state)
    _finish(settings, job_id, "succeeded", None, run_id=state.get("mlflow_run_id"))
    return _result(job_id, spec, "succeeded", state, None, seconds())


def _finish(settings: Settings, job_id: str, status: str, error: str | None, run_id: str | None = None,
            finished: bool = True) -> None:
    with session_scope(settings.db_url) as session:
        job = session.get(Job, job_id)
        job.status, job.error = status, error
        job.finished_at = utcnow() if finished else None
        job.mlflow_run_id = run_id or job.mlflow_run_id


def _record_model_version(settings: Settings, job_id: str, state: dict[str, Any]) -> None:
    spec = state["spec"]
    with session_scope(settings.db_url) as session:
        if queries.model_version(session, spec["name"], state["model_version"]) is None:
            session.add(ModelVersion(
                job_id=job_id, mlflow_run_id=state["mlflow_run_id"], registered_name=spec["name"],
                version=state["model_version"], metrics=_scalars(state["metrics"]),
                threshold=served_fit(state)["threshold"], champion_at_registration=state["is_champion"],
                gate_reason=state["gate"]["reason"],
            ))


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or k == "per_class"}


def _result(job_id: str, spec: dict, status: str, state: dict, error: str | None, seconds: float) -> JobResult:
    split = state.get("split", {})
    return JobResult(
        job_id=job_id, status=status, name=spec["name"], error=error,
        model_version=state.get("model_version"), is_champion=bool(state.get("is_champion")),
        mlflow_run_id=state.get("mlflow_run_id"), threshold=served_fit(state)["threshold"] if "fit" in state else None,
        metrics=state.get("metrics", {}), gate=state.get("gate", {}),
        train_path=Path(split["train_path"]) if "train_path" in split else None,
        holdout_path=Path(split["holdout_path"]) if "holdout_path" in split else None,
        report_path=Path(state["report_path"]) if "report_path" in state else None,
        summary=state.get("summary", {}).get("text"),
        seconds=round(seconds, 2),
    )


def _record_dataset(settings: Settings, job_id: str, state: dict[str, Any]) -> None:
    """Link the job to its dataset row (one row per content hash)."""
    info, profile = state["load_info"], state["profile"]
    with session_scope(settings.db_url) as session:
        dataset = session.scalar(select(Dataset).where(Dataset.content_hash == info["content_hash"]))
        if dataset is None:
            dataset = Dataset(content_hash=info["content_hash"], source=info["source"], n_rows=profile["n_rows"],
                              n_columns=profile["n_columns"], profile=profile)
            session.add(dataset)
            session.flush()
        session.get(Job, job_id).dataset_id = dataset.id
