"""Drift checks: create one, run it (through the one graph runner, `pipelines.graph_runner`, as training jobs
are), answer its approval, and record its outcome in `drift_checks`.

Checks are checkpointed after every node (thread id `check-<id>` beside the jobs, `pipelines.checkpoints`), so a check
waiting for approval is answered from any process, and queued checks are run by `poise worker`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from poise.agents.errors import Conflict, SpecError
from poise.agents.job_spec import CheckSpec
from poise.pipelines import graph_runner
from poise.pipelines.graph_runner import AWAITING_APPROVAL, EventHandler, JobKind
from poise.pipelines.monitoring.configuration import MonitorContext
from poise.pipelines.monitoring.graph import STEPS, build_graph
from poise.pipelines.runner import option_problems
from poise.pipelines.settings import Settings
from poise.registry import tracking
from poise.registry.db import session_scope
from poise.registry.models import DriftCheck
from poise.registry.queries import find_check_by_prefix

DRIFT_CHECK = JobKind(noun="drift check", steps=STEPS, build_graph=build_graph,
                      make_context=lambda settings, check_id, spec: MonitorContext(settings=settings,
                                                                                   check_id=check_id),
                      thread_prefix="check-", records_steps=False)


@dataclass
class CheckResult:
    check_id: str
    status: str
    model_name: str
    decision: str | None = None
    reason: str | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    promoted: bool = False
    error: str | None = None
    report_path: str | None = None
    plan: list[str] = field(default_factory=list)
    comparison: dict[str, Any] | None = None
    estimated_quality: dict[str, Any] | None = None  # `agents.drift.estimation.estimate` of the window
    seconds: float = 0.0


def make_check_spec(model_name: str, **options: Any) -> CheckSpec:
    try:
        return CheckSpec(model_name=model_name, **{k: v for k, v in options.items() if v is not None})
    except ValidationError as error:
        raise SpecError(f"invalid check options: {option_problems(error)}") from None


def create_check(spec: CheckSpec, settings: Settings, trigger: str, scheduled_for: datetime | None = None) -> str:
    """A queued check row; raises sqlalchemy's IntegrityError when (model, scheduled_for) exists already."""
    settings.ensure_home()
    check_id = uuid.uuid4().hex
    with session_scope(settings.db_url) as session:
        session.add(DriftCheck(id=check_id, model_name=spec.model_name, status="queued", trigger=trigger,
                               spec=spec.model_dump(), scheduled_for=scheduled_for))
    return check_id


def check_now(model_name: str, settings: Settings, on_event: EventHandler | None = None, **options: Any) -> CheckResult:
    """Create a check of `model_name` and run it in this process (what `poise monitor` does)."""
    return run_check(create_check(make_check_spec(model_name, **options), settings, "cli"), settings, on_event)


def find_check(settings: Settings, check_id: str) -> DriftCheck:
    with session_scope(settings.db_url) as session:
        found = find_check_by_prefix(session, check_id)
        session.expunge(found)
        return found


def decide_check(check_id: str, approved: bool, settings: Settings, by: str = "user",
                 on_event: EventHandler | None = None) -> CheckResult:
    """Answer a check waiting for approval of its promotion, and finish it here."""
    check = find_check(settings, check_id)
    if check.status != AWAITING_APPROVAL:
        raise Conflict(f"drift check {check.id[:12]} is {check.status}, not waiting for approval")
    return run_check(check.id, settings, on_event, resume_value={"approved": approved, "by": by})


def queue_check_decision(check_id: str, approved: bool, settings: Settings, by: str = "user") -> None:
    """Record the answer for a waiting check and queue it for a worker to finish."""
    with session_scope(settings.db_url) as session:
        check = session.get(DriftCheck, check_id)
        if check is None or check.status != AWAITING_APPROVAL:
            raise Conflict(f"drift check {check_id[:12]} is {check.status if check else 'unknown'}, "
                           "not waiting for approval")
        check.pending_decision, check.status = {"approved": approved, "by": by}, "queued"


def run_check(check_id: str, settings: Settings, on_event: EventHandler | None = None,
              resume_value: dict[str, Any] | None = None) -> CheckResult:
    started = time.perf_counter()
    with session_scope(settings.db_url) as session:
        check = session.get(DriftCheck, check_id)
        spec, check.status, check.error = check.spec, "running", None
    run = graph_runner.drive(DRIFT_CHECK, check_id, spec, settings, on_event, resume_value)
    if run.status == "interrupted":
        _record(settings, check_id, "interrupted", run.state, run.error, started)
        raise KeyboardInterrupt
    if run.status == "waiting":
        result = _record(settings, check_id, AWAITING_APPROVAL, run.state, None, started)
        result.plan = run.plan
        return result
    if run.status == "done" and run.error and run.state.get("mlflow_run_id"):
        tracking.finish_run(run.context.mlflow, run.state["mlflow_run_id"], "FAILED")
    return _record(settings, check_id, "failed" if run.error else "succeeded", run.state, run.error, started)


def _record(settings: Settings, check_id: str, status: str, state: dict[str, Any], error: str | None,
            started: float) -> CheckResult:
    action, window = state.get("action") or {}, state.get("window") or {}
    with session_scope(settings.db_url) as session:
        check = session.get(DriftCheck, check_id)
        check.status, check.error = status, error
        check.champion_version = state.get("champion_version")
        check.window_start = datetime.fromisoformat(window["start"]) if window.get("start") else None
        check.window_end = datetime.fromisoformat(window["end"]) if window.get("end") else None
        check.n_rows = window.get("n_rows")
        check.decision, check.reason = state.get("decision"), state.get("reason")
        check.results = {k: state.get(k) for k in ("window", "analysis", "action", "comparison", "approval",
                                                   "reference_run")}
        check.challenger_version = action.get("challenger_version")
        check.retrain_job_id = action.get("retrain_job_id")
        check.promoted = bool(state.get("promoted"))
        check.mlflow_run_id = state.get("mlflow_run_id")
        check.finished_at = None if status == AWAITING_APPROVAL else datetime.now(UTC)
        model_name = check.model_name
    return CheckResult(
        check_id=check_id, status=status, model_name=model_name, decision=state.get("decision"),
        reason=state.get("reason"), champion_version=state.get("champion_version"),
        challenger_version=action.get("challenger_version"), promoted=bool(state.get("promoted")), error=error,
        report_path=state.get("report_path"), comparison=state.get("comparison"),
        estimated_quality=(state.get("analysis") or {}).get("estimated_quality"),
        seconds=round(time.perf_counter() - started, 2))
