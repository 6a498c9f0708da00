"""What a training job knows so far (`TrainingState`); what it is asked to do is `agents.job_spec.JobSpec`.

The state holds only JSON-able values and file paths — never DataFrames — so the
checkpointer can persist it after every node and `poise resume` can pick a
job up in another process.
"""

from __future__ import annotations

from typing import Any, TypedDict


def served_fit(state: dict[str, Any]) -> dict[str, Any]:
    """The fit whose model is registered and served: the refit on every labelled row when there was one."""
    refit = state.get("refit") or {}
    return refit if refit.get("done") else state["fit"]


class TrainingState(TypedDict, total=False):
    spec: dict[str, Any]
    load_info: dict[str, Any]
    raw_path: str
    profile: dict[str, Any]
    split: dict[str, Any]
    policy: dict[str, Any]
    mlflow_run_id: str
    fit: dict[str, Any]
    label_noise: dict[str, Any]  # the audit's `summary` and the flagged training rows' `positions`
    refit: dict[str, Any]
    metrics: dict[str, Any]
    baselines: dict[str, Any]
    review: dict[str, Any]
    approval: dict[str, Any]
    gate: dict[str, Any]
    summary: dict[str, Any]
    model_version: str
    is_champion: bool
    report_path: str
    error: str
