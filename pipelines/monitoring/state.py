"""What a drift check is asked to do (`CheckSpec`) and what it knows so far (`MonitorState`).

As in training, the state holds only JSON-able values and file paths, so a check is
checkpointed after every node and can wait for approval and be resumed in another process.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from pydantic import BaseModel, Field, model_validator

from pipelines.training.state import MODEL_NAME


class CheckSpec(BaseModel):
    """One drift check of a registered model's champion."""

    model_name: str = Field(pattern=MODEL_NAME.pattern, description="Registered model to check.")
    current: str | None = Field(None, description="Batch file to check; default the prediction log since the "
                                "last check.")
    sql_source: str | None = Field(None, description="Named SQL source (POISE_SQL_SOURCES) to read the batch from.")
    sql_query: str | None = Field(None, max_length=20_000, description="Query giving the batch.")
    label_column: str | None = Field(None, description="Column of true labels in the batch; default the target.")
    action: Literal["auto", "none", "recalibrate", "retrain"] = Field(
        "auto", description="auto: act on the decision; none: report only; or force an action.")
    require_approval: bool = Field(False, description="Wait for a person before promoting a challenger.")
    time_limit: int | None = Field(None, ge=5, le=86_400, description="Retraining budget; default the champion's.")

    @model_validator(mode="after")
    def _one_source(self) -> "CheckSpec":
        if (self.sql_source is None) != (self.sql_query is None):
            raise ValueError("give sql_source and sql_query together")
        if self.current is not None and self.sql_source is not None:
            raise ValueError("give a batch file or a SQL query, not both")
        return self


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
