"""What a training job is asked to do (`JobSpec`) and what it knows so far (`TrainingState`).

The state holds only JSON-able values and file paths — never DataFrames — so the
SQLite checkpointer can persist it after every node and `poise resume` can pick a
job up in another process.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, Field, field_validator, model_validator

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class JobSpec(BaseModel):
    """A training request, validated before any work starts."""

    data: str = Field(description="Path of the CSV/TSV/Parquet table.")
    target: str = Field(min_length=1, description="Column to predict.")
    name: str = Field(description="Registered model name (also the MLflow experiment).")
    objective: Literal["f1", "balanced_accuracy", "cost"] = "f1"
    cost_fn: float | None = Field(None, gt=0, description="Cost of a missed positive (with objective 'cost').")
    cost_fp: float | None = Field(None, gt=0, description="Cost of a false alarm (with objective 'cost').")
    positive_class: str | None = Field(None, description="Class that matters; default the minority.")
    time_limit: int = Field(ge=5, le=86_400, description="AutoGluon time budget in seconds.")
    presets: Literal["medium_quality", "good_quality", "high_quality", "best_quality"] = "medium_quality"
    na_values: list[str] = Field(default_factory=list, max_length=50,
                                 description="Extra cell values to read as missing, beyond pandas' defaults "
                                 "(e.g. '?', 'none', '-999'); matched exactly, in text and numeric columns alike.")
    drop_columns: list[str] = Field(default_factory=list)
    keep_columns: list[str] = Field(default_factory=list, description="Keep even if flagged (e.g. a known-safe leak suspect).")
    excluded_model_types: list[str] = Field(default_factory=list, description="AutoGluon model types not to fit.")
    threshold_policy: Literal["calibrate", "default"] = "calibrate"
    require_approval: bool = Field(False, description="Pause after profiling until the plan is approved.")
    weight_column: str | None = Field(None, description="Column of per-row training weights, not a feature "
                                      "(drift retraining sets it).")
    holdout_data: str | None = Field(None, description="Table to score the model on instead of a holdout split "
                                     "of `data` (same columns); drift retraining passes the window's fresh "
                                     "labelled rows.")
    promote: bool = Field(True, description="Move `champion` when the gate passes; drift retraining leaves "
                          "promotion to its challenger-vs-champion comparison.")
    session_id: str | None = Field(None, description="Chat session that planned this job, if any.")

    @field_validator("name")
    @classmethod
    def _valid_model_name(cls, value: str) -> str:
        if not MODEL_NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 100, starting with a letter or digit)")
        return value

    @model_validator(mode="after")
    def _costs_match_objective(self) -> "JobSpec":
        has_costs = self.cost_fn is not None or self.cost_fp is not None
        if self.objective == "cost" and (self.cost_fn is None or self.cost_fp is None):
            raise ValueError("objective 'cost' needs both cost_fn and cost_fp")
        if has_costs and self.objective != "cost":
            raise ValueError("cost_fn/cost_fp are only used with objective 'cost'")
        return self


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
