"""What a drift check knows so far (`MonitorState`); what it is asked to do is `agents.job_spec.CheckSpec`.

As in training, the state holds only JSON-able values and file paths, so a check is
checkpointed after every node and can wait for approval and be resumed in another process.
"""

from __future__ import annotations

from typing import Any, TypedDict


class MonitorState(TypedDict, total=False):
    spec: dict[str, Any]
    champion_version: str
    reference_dir: str
    reference_run: str  # the MLflow run holding the champion's reference
    window: dict[str, Any]  # paths of the window's features/predictions/labels parquet files, sizes, time span
    mlflow_run_id: str
    analysis: dict[str, Any]
    decision: str
    reason: str
    action: dict[str, Any]  # what was done: kind, challenger version, retraining job, evaluation rows
    comparison: dict[str, Any]
    approval: dict[str, Any]
    promoted: bool
    report_path: str
    error: str
