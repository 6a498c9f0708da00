"""The job runner: creates jobs, drives the training graph, records every step.

It is the only place that writes job progress to the database. Steps are taken
from LangGraph's task stream (start and end of each node), and the graph is
checkpointed after every node (`durability="sync"`), so `resume` continues a
killed job from its last finished node, in any process.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command
from pydantic import ValidationError
from sqlalchemy import select

from agents.errors import Conflict, SpecError
from pipelines.settings import Settings
from pipelines.training.configuration import TrainingContext
from pipelines.training.graph import AGENT_OF_STEP, build_graph
from pipelines.training.state import JobSpec, served_fit
from registry import tracking
from registry.db import session_scope
from registry.models import Dataset, Job, JobStep, ModelVersion
from registry import queries
from registry.queries import find_job_by_prefix

RESUMABLE = {"queued", "running", "interrupted", "failed"}
AWAITING_APPROVAL = "awaiting_approval"


@dataclass
class StepEvent:
    job_id: str
    node: str
    agent: str
    status: str  # running | succeeded | failed | waiting
    seconds: float | None = None
    message: str | None = None


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


EventHandler = Callable[[StepEvent], None]


def _now() -> datetime:
    return datetime.now(UTC)


def default_model_name(data: str, target: str) -> str:
    raw = f"{Path(data).stem}-{target}"
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in raw).strip("-._")
    return (cleaned or "model")[:100]


def make_spec(data: str | Path, target: str, settings: Settings, **options: Any) -> JobSpec:
    values = {k: v for k, v in options.items() if v is not None}
    values.setdefault("name", default_model_name(str(data), target))
    values.setdefault("time_limit", settings.time_limit)
    values.setdefault("presets", settings.presets)
    try:
        return JobSpec(data=str(Path(data).expanduser().resolve()), target=target, **values)
    except ValidationError as error:
        raise SpecError(f"invalid job options: {option_problems(error)}") from None


def option_problems(error: ValidationError) -> str:
    """A spec's validation errors in one line: `field: problem; ...`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in error.errors())


def create_job(spec: JobSpec, settings: Settings) -> str:
    settings.ensure_home()
    job_id = uuid.uuid4().hex
    with session_scope(settings.db_url) as session:
        session.add(Job(id=job_id, name=spec.name, status="queued", spec=spec.model_dump()))
    return job_id


def train(
    data: str | Path,
    target: str,
    *,
    name: str | None = None,
    objective: str = "f1",
    cost_fn: float | None = None,
    cost_fp: float | None = None,
    positive_class: str | None = None,
    time_limit: int | None = None,
    presets: str | None = None,
    na_values: Sequence[str] = (),
    drop_columns: Sequence[str] = (),
    keep_columns: Sequence[str] = (),
    settings: Settings | None = None,
    on_event: EventHandler | None = None,
) -> JobResult:
    """Train, evaluate, gate and register a model on one table: the whole job, in this process."""
    settings = settings or Settings()
    spec = make_spec(
        data, target, settings, name=name, objective=objective, cost_fn=cost_fn, cost_fp=cost_fp,
        positive_class=positive_class, time_limit=time_limit, presets=presets, na_values=list(na_values),
        drop_columns=list(drop_columns), keep_columns=list(keep_columns),
    )
    return run_spec(spec, settings, on_event)


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
    with closing(sqlite3.connect(settings.checkpoint_path, check_same_thread=False)) as connection:
        snapshot = build_graph().compile(checkpointer=SqliteSaver(connection)).get_state(
            {"configurable": {"thread_id": job_id}})
    plan = list(snapshot.interrupts[0].value["plan"]) if snapshot.interrupts else []
    return snapshot.values, plan


def find_job(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.db_url) as session:
        job = find_job_by_prefix(session, job_id)
        job.steps, job.model_versions  # load before the session closes  # noqa: B018
        return job


def run_job(job_id: str, settings: Settings, on_event: EventHandler | None = None,
            resume_value: dict[str, Any] | None = None) -> JobResult:
    started = time.perf_counter()
    notify = on_event or (lambda event: None)
    with session_scope(settings.db_url) as session:
        job = session.get(Job, job_id)
        spec = job.spec
        job.status, job.started_at, job.error = "running", job.started_at or _now(), None

    context = TrainingContext(settings=settings, job_id=job_id, session_id=spec.get("session_id"))
    config = {"configurable": {"thread_id": job_id}}
    settings.job_dir(job_id).mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(settings.checkpoint_path, check_same_thread=False)) as connection:
        app = build_graph().compile(checkpointer=SqliteSaver(connection))
        checkpoint = app.get_state(config)
        already_started = checkpoint.values
        _settle_open_steps(settings, job_id, set(checkpoint.next))
        recorder = _StepRecorder(job_id, settings, notify)
        if resume_value is not None:
            graph_input: Any = Command(resume=resume_value)
        else:
            graph_input = None if already_started else {"spec": spec}
        cancelled = False
        try:
            for task in app.stream(
                graph_input, config, context=context,
                stream_mode="tasks", durability="sync",
            ):
                recorder.record(task)
                if _cancel_requested(settings, job_id):  # set by `pipelines.worker.request_cancel`
                    cancelled = True
                    break
        except KeyboardInterrupt:
            recorder.fail_open("interrupted by the user")
            _finish(settings, job_id, "interrupted", "interrupted by the user; continue with `poise resume`")
            raise
        except Exception as error:  # a bug, not bad input: keep everything for `poise resume`
            trace = traceback.format_exc()
            (settings.job_dir(job_id) / "error.log").write_text(trace, encoding="utf-8")
            message = f"{type(error).__name__}: {error}"
            recorder.fail_open(message)
            state = app.get_state(config).values
            if state.get("mlflow_run_id"):
                tracking.finish_run(context.mlflow, state["mlflow_run_id"], "FAILED")
            _finish(settings, job_id, "failed", message)
            return _result(job_id, spec, "failed", state, message, time.perf_counter() - started)
        snapshot = app.get_state(config)
        state = snapshot.values
        if cancelled and snapshot.next:  # a request seen after the last node changes nothing
            recorder.fail_open("cancelled")
            if state.get("mlflow_run_id"):
                tracking.finish_run(context.mlflow, state["mlflow_run_id"], "KILLED")
            _finish(settings, job_id, "cancelled", "cancelled by request")
            return _result(job_id, spec, "cancelled", state, "cancelled by request", time.perf_counter() - started)

    if state.get("spec") and state["spec"] != spec:  # the review step amended the plan
        with session_scope(settings.db_url) as session:
            session.get(Job, job_id).spec = state["spec"]

    if snapshot.interrupts:
        _finish(settings, job_id, AWAITING_APPROVAL, None, finished=False)
        result = _result(job_id, state["spec"], AWAITING_APPROVAL, state, None, time.perf_counter() - started)
        result.plan = list(snapshot.interrupts[0].value["plan"])
        return result
    if state.get("profile"):
        _record_dataset(settings, job_id, state)
    if state.get("error"):
        status = "cancelled" if state.get("approval", {}).get("approved") is False else "rejected"
        shutil.rmtree(settings.job_dir(job_id), ignore_errors=True)  # nothing half-written stays behind
        _finish(settings, job_id, status, state["error"])
        return _result(job_id, spec, status, state, state["error"], time.perf_counter() - started)
    _record_model_version(settings, job_id, state)
    _finish(settings, job_id, "succeeded", None, run_id=state.get("mlflow_run_id"))
    return _result(job_id, spec, "succeeded", state, None, time.perf_counter() - started)


def _settle_open_steps(settings: Settings, job_id: str, pending: set[str]) -> None:
    """Close the step records an earlier run left open. A `running` step whose node the checkpoint has moved past
    finished, though its record could not be written (the process died, or the database was down, right after);
    one still pending was interrupted and runs again. A `waiting` step (the approval) has been answered."""
    with session_scope(settings.db_url) as session:
        for step in session.get(Job, job_id).steps:
            if step.status == "running" and step.node in pending:
                step.status, step.finished_at, step.message = "failed", _now(), "interrupted"
            elif step.status == "running":
                step.status, step.finished_at = "succeeded", _now()
                step.message = "finished; its record was written on resuming (from the checkpoint)"
            elif step.status == "waiting":
                step.status, step.finished_at, step.message = "succeeded", _now(), "answered"


def _cancel_requested(settings: Settings, job_id: str) -> bool:
    with session_scope(settings.db_url) as session:
        return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def _finish(settings: Settings, job_id: str, status: str, error: str | None, run_id: str | None = None,
            finished: bool = True) -> None:
    with session_scope(settings.db_url) as session:
        job = session.get(Job, job_id)
        job.status, job.error = status, error
        job.finished_at = _now() if finished else None
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


class _StepRecorder:
    """Writes one `job_steps` row per node run, from LangGraph task events."""

    def __init__(self, job_id: str, settings: Settings, notify: EventHandler):
        self.job_id, self.settings, self.notify = job_id, settings, notify
        self.open: dict[str, tuple[int, str, float]] = {}  # task id -> (row id, node, start)

    def record(self, task: dict[str, Any]) -> None:
        node = task["name"]
        agent = AGENT_OF_STEP.get(node, "pipeline")
        if "input" in task:
            with session_scope(self.settings.db_url) as session:
                step = JobStep(job_id=self.job_id, node=node, agent=agent, status="running", started_at=_now())
                session.add(step)
                session.flush()
                self.open[task["id"]] = (step.id, node, time.perf_counter())
            self.notify(StepEvent(self.job_id, node, agent, "running"))
            return
        step_id, node, start = self.open.pop(task["id"])
        result = task.get("result") or {}
        if task.get("interrupts"):
            status, message, metrics = "waiting", "waiting for the user's approval", None
        elif task.get("error"):
            status, message, metrics = "failed", str(task["error"])[:2000], None
        elif result.get("error"):
            status, message, metrics = "failed", result["error"], None
        else:
            status, (message, metrics) = "succeeded", summarize_step(node, result)
        seconds = round(time.perf_counter() - start, 2)
        with session_scope(self.settings.db_url) as session:
            step = session.get(JobStep, step_id)
            step.status, step.finished_at, step.message, step.metrics = status, _now(), message, metrics
        self.notify(StepEvent(self.job_id, node, AGENT_OF_STEP.get(node, "pipeline"), status, seconds, message))

    def fail_open(self, message: str) -> None:
        for step_id, node, start in self.open.values():
            with session_scope(self.settings.db_url) as session:
                step = session.get(JobStep, step_id)
                step.status, step.finished_at, step.message = "failed", _now(), message
            self.notify(StepEvent(self.job_id, node, AGENT_OF_STEP.get(node, "pipeline"), "failed",
                                  round(time.perf_counter() - start, 2), message))
        self.open.clear()


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


def summarize_step(node: str, result: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """A one-line message and a few headline numbers for a finished node."""
    if node == "load":
        info = result["load_info"]
        return f"read {info['format']} ({info.get('encoding') or 'binary'}), {info['bytes']:,} bytes", None
    if node == "profile":
        p = result["profile"]
        t = p["target"]
        dropped = ", ".join(d["column"] for d in p["dropped"]) or "none"
        return (f"{p['n_rows']:,} rows × {p['n_columns']} columns; {t['problem_type']} target, "
                f"minority '{t['minority_class']}', imbalance ratio {t['imbalance_ratio']:.1f}; dropped: {dropped}",
                {"n_rows": p["n_rows"], "imbalance_ratio": t["imbalance_ratio"], "n_dropped": len(p["dropped"])})
    if node == "prepare":
        s = result["split"]["summary"]
        return (f"train {s['train_rows']:,} rows / holdout {s['holdout_rows']:,} rows (stratified)",
                {"train_rows": s["train_rows"], "holdout_rows": s["holdout_rows"]})
    if node == "train":
        f = result["fit"]
        thr = "" if f["threshold"] is None else f", threshold {f['threshold']:.3f}"
        notes = "".join(f"; {note}" for note in (f.get("threshold_note"), f.get("fallback")) if note)
        return (f"{result['policy']['eval_metric']}: best {f['best_model']} of {f['n_models']} models{thr}{notes}",
                {"fit_seconds": f["fit_seconds"], "threshold": f["threshold"]})
    if node == "evaluate":
        m = result["metrics"]
        return (f"holdout macro-F1 {m['macro_f1']:.3f}, balanced acc {m['balanced_accuracy']:.3f}, "
                f"PR-AUC {m['pr_auc']:.3f}, minority recall {m['minority_recall']:.3f}",
                {k: m[k] for k in ("macro_f1", "balanced_accuracy", "pr_auc", "roc_auc", "minority_recall")})
    if node == "gate":
        return result["gate"]["reason"], {"passed": result["gate"]["passed"]}
    if node == "refit":
        r = result["refit"]
        if not r["done"]:
            return f"not refitted: {r['reason']}", None
        thr = "" if r["threshold"] is None else f", threshold {r['threshold']:.3f}"
        return (f"refitted on all {r['rows']:,} labelled rows (+{r['holdout_rows_added']:,} holdout rows): "
                f"best {r['best_model']}{thr}", {"fit_seconds": r["fit_seconds"], "threshold": r["threshold"]})
    if node == "review":
        review = result["review"]
        changes = review.get("changes")
        text = f"amended by the LLM: {changes['reason']}" if changes else "no change"
        return text + (f" (LLM failed: {review['fallback']})" if review.get("fallback") else ""), None
    if node == "approve":
        return f"approved ({result['approval']['by']})", None
    if node == "explain":
        text = result["summary"]
        return f"{text['by']} summary" + (f" (LLM failed: {text['fallback']})" if text.get("fallback") else ""), None
    if node == "register":
        role = "champion" if result["is_champion"] else "not champion"
        return f"registered version {result['model_version']} ({role})", None
    return str(result.get("report_path", "")), None
