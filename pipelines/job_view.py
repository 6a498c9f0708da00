"""A job as every client shows it: the pieces `poise show`, the API's job view and the web UI's job panel share.

`job_report` reads what the job row alone does not hold (the checkpointed plan, summary and gate verdict) and the
gate's verdict as things stand now (`agents.summary.job_gate`: the registry's champion, promotions by hand); each
client then renders it its own way (Rich text, JSON, Markdown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from poise.agents.summary import job_gate
from poise.pipelines import runner
from poise.pipelines.settings import Settings
from poise.registry.models import Job, JobStep, ModelVersion


@dataclass
class JobReport:
    plan: list[str] = field(default_factory=list)  # the plan a job waiting for approval shows
    summary: str | None = None  # the job's summary text, once written
    verdicts: list[tuple[ModelVersion, dict[str, Any]]] = field(default_factory=list)  # each version the job
    # registered, with the gate's verdict on it now (`gate_outcome`)

    @property
    def version(self) -> ModelVersion | None:
        return self.verdicts[0][0] if self.verdicts else None

    @property
    def gate(self) -> dict[str, Any] | None:
        return self.verdicts[0][1] if self.verdicts else None


def job_report(settings: Settings, job: Job) -> JobReport:
    """The job's plan, summary, registered version and gate verdict now. The checkpoint is read for a job waiting
    for approval, one that succeeded, or one that registered a version; without a checkpoint (deleted, another
    machine) the job row still says enough."""
    report = JobReport()
    state: dict[str, Any] = {}
    if job.status in (runner.AWAITING_APPROVAL, "succeeded") or job.model_versions:
        try:
            state, report.plan = runner.checkpoint_state(settings, job.id)
        except Exception:  # noqa: BLE001 - no checkpoint: the row's gate reason and promotion stand in
            state = {}
        report.summary = (state.get("summary") or {}).get("text")
    report.verdicts = [(version, job_gate(settings, job.spec, version, state.get("gate")))
                        for version in job.model_versions]
    return report


def step_seconds(step: JobStep) -> float | None:
    """How long a finished step took; None while it runs."""
    if step.finished_at is None or step.started_at is None:
        return None
    return (step.finished_at - step.started_at).total_seconds()


def shows_promotion(gate: dict[str, Any]) -> bool:
    """Whether a view names the promotion by hand apart (else the gate's explanation already says it)."""
    return bool(gate["promotion"]) and (gate["passed"] or not gate["is_champion"])
