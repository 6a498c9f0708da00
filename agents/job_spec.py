"""The one declaration of what a job can be asked to do, and of its defaults.

`JobOptions` are the choices a user makes about a training job. The CLI's `poise train`
flags, the API's request body, the chat plan's operations (the LLM's tool schema) and the
planners are generated from these fields or validated by them, so an option is added, named
and defaulted here once. `JobSpec` adds what only Poise sets (the resolved data path, drift
retraining's weights and holdout, the chat session). `CheckOptions`/`CheckSpec` do the same
for a drift check. The two defaults that belong to the deployment (time budget, presets) are
`Settings`' and filled in where a spec is made (`pipelines.runner.make_spec`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MODEL_TYPES = ("GBM", "CAT", "XGB", "RF", "XT", "KNN", "LR", "NN_TORCH", "FASTAI")
PRESETS = ("medium_quality", "good_quality", "high_quality", "best_quality")

ModelName = Annotated[str, Field(pattern=MODEL_NAME_PATTERN, description=(
    "Registered model name (also the MLflow experiment): letters, digits, '.', '_' or '-', at most 100, "
    "starting with a letter or digit."))]
Objective = Literal["f1", "balanced_accuracy", "cost"]
Presets = Literal[PRESETS]
ModelType = Literal[MODEL_TYPES]
ThresholdPolicy = Literal["calibrate", "default"]
LabelNoise = Literal["keep", "downweight", "drop"]
CheckAction = Literal["auto", "none", "recalibrate", "retrain"]
Cost = Annotated[float, Field(gt=0)]
MAX_TIME_LIMIT = 86_400
TimeLimit = Annotated[int, Field(ge=5, le=MAX_TIME_LIMIT)]
ColumnName = Annotated[str, Field(min_length=1, max_length=300)]
MissingToken = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\r\n]+$")]


class JobOptions(BaseModel):
    """What a user decides about a training job; every other field is Poise's own."""

    target: ColumnName = Field(description="Column to predict.")
    name: ModelName | None = Field(None, description="Registered model name; default '<file>-<target>'.")
    objective: Objective = Field("f1", description="What the model and its threshold are tuned for: f1 of the "
                                 "positive class, balanced_accuracy, or the expected cost (with cost_fn and cost_fp).")
    cost_fn: Cost | None = Field(None, description="Cost of a missed positive (with objective 'cost').")
    cost_fp: Cost | None = Field(None, description="Cost of a false alarm (with objective 'cost').")
    positive_class: str | None = Field(None, description="The class that matters; default the minority.")
    time_limit: TimeLimit | None = Field(None, description="AutoGluon time budget in seconds; default the "
                                         "service's (POISE_TIME_LIMIT).")
    presets: Presets | None = Field(None, description="AutoGluon presets; default the service's (POISE_PRESETS).")
    na_values: list[MissingToken] = Field(default_factory=list, max_length=50, description=(
        "Cell values to read as missing besides pandas' defaults (e.g. '?', 'none', '-999'); matched exactly, "
        "in text and numeric columns alike."))
    drop_columns: list[ColumnName] = Field(default_factory=list, description="Columns not to use.")
    keep_columns: list[ColumnName] = Field(default_factory=list, description=(
        "Columns to keep even if flagged as ID-like or leak suspects."))
    excluded_model_types: list[ModelType] = Field(default_factory=list, description="AutoGluon model types not to fit.")
    threshold_policy: ThresholdPolicy = Field("calibrate", description=(
        "calibrate the decision threshold on validation data, or keep the default 0.5."))
    label_noise: LabelNoise = Field("keep", description=(
        "Rows the label-noise audit flags as likely mislabelled: keep them as given, downweight them, or drop them "
        "from the model refitted on every labelled row (the audit runs on out-of-fold predictions of bagged fits)."))
    require_approval: bool = Field(False, description="Pause after profiling until the plan is approved.")

    @model_validator(mode="after")
    def _costs_match_objective(self) -> "JobOptions":
        if self.objective == "cost" and (self.cost_fn is None or self.cost_fp is None):
            raise ValueError("objective 'cost' needs both cost_fn and cost_fp")
        if (self.cost_fn is not None or self.cost_fp is not None) and self.objective != "cost":
            raise ValueError("cost_fn/cost_fp are only used with objective 'cost'")
        return self


# `poise train` flags spelled otherwise than the field name in kebab case.
TRAIN_FLAGS = {"target": ("--target", "-t"), "drop_columns": ("--drop",), "keep_columns": ("--keep",),
               "excluded_model_types": ("--exclude-model",)}


def train_arguments(options: dict) -> list[str]:
    """`options` as `poise train` flags: each field of `JobOptions` given a value other than its default."""
    arguments: list[str] = []
    for name, field in JobOptions.model_fields.items():
        value = options.get(name)
        if value is None or value == [] or (not field.is_required() and value == field.default):
            continue
        flag = TRAIN_FLAGS.get(name, (f"--{name.replace('_', '-')}",))[0]
        if isinstance(value, bool):
            arguments.append(flag)
        else:
            arguments += [part for item in (value if isinstance(value, list) else [value])
                          for part in (flag, f"{item:g}" if isinstance(item, float) else str(item))]
    return arguments


def job_options(options: dict) -> dict:
    """The `JobOptions` fields of `options` that hold a value, switches only when on (the body of
    `POST /api/v1/jobs`, with the data)."""
    return {name: options[name] for name in JobOptions.model_fields
            if options.get(name) not in (None, [], False)}


class JobSpec(JobOptions):
    """A training job as it runs: the user's options, resolved, plus what Poise itself sets."""

    data: str = Field(description="Path of the CSV/TSV/Parquet table.")
    name: ModelName
    time_limit: TimeLimit
    presets: Presets
    weight_column: str | None = Field(None, description="Column of per-row training weights, not a feature "
                                      "(drift retraining sets it).")
    holdout_data: str | None = Field(None, description="Table to score the model on instead of a holdout split "
                                     "of `data` (same columns); drift retraining passes the window's fresh "
                                     "labelled rows.")
    promote: bool = Field(True, description="Move `champion` when the gate passes; drift retraining leaves "
                          "promotion to its challenger-vs-champion comparison.")
    session_id: str | None = Field(None, description="Chat session that planned this job, if any.")


class CheckOptions(BaseModel):
    """What a user decides about one drift check of a registered model's champion."""

    label_column: ColumnName | None = Field(None, description="Column of true labels in the batch; default the "
                                            "target.")
    action: CheckAction = Field("auto", description="auto: act on the decision; none: report only; or force "
                                "recalibrate or retrain.")
    require_approval: bool = Field(False, description="Wait for a person before promoting a challenger.")
    time_limit: TimeLimit | None = Field(None, description="Retraining budget in seconds; default the champion's.")


class CheckSpec(CheckOptions):
    """A drift check as it runs: the options plus the model and where the batch comes from."""

    model_name: ModelName
    current: str | None = Field(None, description="Batch file to check; default the prediction log since the "
                                "last check.")
    sql_source: str | None = Field(None, description="Named SQL source (POISE_SQL_SOURCES) to read the batch from.")
    sql_query: str | None = Field(None, max_length=20_000, description="Query giving the batch.")

    @model_validator(mode="after")
    def _one_source(self) -> "CheckSpec":
        if (self.sql_source is None) != (self.sql_query is None):
            raise ValueError("give sql_source and sql_query together")
        if self.current is not None and self.sql_source is not None:
            raise ValueError("give a batch file or a SQL query, not both")
        return self
