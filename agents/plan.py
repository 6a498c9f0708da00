"""Job plans: the only things a planner (LLM or rule-based) can ask Poise to do.

A plan is an ordered list of operations drawn from a fixed registry. Each operation
is a typed model, so a planner's output is validated twice before anything runs:
against the schema (pydantic) and against the data (the file loads, the target and
every named column exist, the objective fits the target, the budget is in range).
Deleting, promoting or rolling back models are not operations: no planner can do them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from poise.agents.errors import PoiseError
from poise.agents.job_spec import (ColumnName, Cost, JobOptions, LabelNoise, MissingToken, ModelName, ModelType,
                              Objective, Presets, ThresholdPolicy, TimeLimit)


class PlanError(PoiseError):
    """The plan cannot run as written; `problems` lists each reason."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class UseData(BaseModel):
    op: Literal["use_data"] = "use_data"
    path: str = Field(description="Path of the CSV/TSV/Parquet table.")


class SetTarget(BaseModel):
    op: Literal["set_target"] = "set_target"
    column: ColumnName = Field(description="Column to predict; must exist in the table.")


class DropColumns(BaseModel):
    op: Literal["drop_columns"] = "drop_columns"
    columns: list[ColumnName] = Field(min_length=1)
    reason: str = Field("", max_length=300)


class TreatAsLeak(BaseModel):
    op: Literal["treat_as_leak"] = "treat_as_leak"
    column: ColumnName = Field(description="A column known only after the outcome (or an ID): dropped.")


class KeepColumns(BaseModel):
    op: Literal["keep_columns"] = "keep_columns"
    columns: list[ColumnName] = Field(min_length=1, description="Keep columns Poise would drop as ID-like or leak suspects.")


class SetObjective(BaseModel):
    op: Literal["set_objective"] = "set_objective"
    objective: Objective = Field(description=JobOptions.model_fields["objective"].description)
    cost_fn: Cost | None = Field(None, description=JobOptions.model_fields["cost_fn"].description)
    cost_fp: Cost | None = Field(None, description=JobOptions.model_fields["cost_fp"].description)


class TreatAsMissing(BaseModel):
    op: Literal["treat_as_missing"] = "treat_as_missing"
    values: list[MissingToken] = Field(min_length=1, max_length=50,
                                       description=JobOptions.model_fields["na_values"].description)


class SetPositiveClass(BaseModel):
    op: Literal["set_positive_class"] = "set_positive_class"
    label: str


class SetTimeBudget(BaseModel):
    op: Literal["set_time_budget"] = "set_time_budget"
    seconds: TimeLimit = Field(description=JobOptions.model_fields["time_limit"].description)


class SetPresets(BaseModel):
    op: Literal["set_presets"] = "set_presets"
    presets: Presets


class ExcludeModels(BaseModel):
    op: Literal["exclude_models"] = "exclude_models"
    model_types: list[ModelType] = Field(min_length=1)


class SetThresholdPolicy(BaseModel):
    op: Literal["set_threshold_policy"] = "set_threshold_policy"
    policy: ThresholdPolicy = Field(description=JobOptions.model_fields["threshold_policy"].description)


class SetLabelNoise(BaseModel):
    op: Literal["set_label_noise"] = "set_label_noise"
    mode: LabelNoise = Field(description=JobOptions.model_fields["label_noise"].description)


class SetName(BaseModel):
    op: Literal["set_name"] = "set_name"
    name: ModelName


class RequireApproval(BaseModel):
    op: Literal["require_approval"] = "require_approval"
    required: bool = True


Operation = Annotated[
    UseData | SetTarget | DropColumns | TreatAsLeak | KeepColumns | TreatAsMissing | SetObjective | SetPositiveClass
    | SetTimeBudget | SetPresets | ExcludeModels | SetThresholdPolicy | SetLabelNoise | SetName | RequireApproval,
    Field(discriminator="op"),
]


class JobPlan(BaseModel):
    """An ordered list of allowed operations; later operations override earlier ones."""

    operations: list[Operation] = Field(min_length=1)


PLAN_ADAPTER = TypeAdapter(JobPlan)


def parse_plan(arguments: dict[str, Any] | str) -> JobPlan:
    """Schema validation of a planner's output (JSON text or dict)."""
    try:
        if isinstance(arguments, str):
            return PLAN_ADAPTER.validate_json(arguments)
        return PLAN_ADAPTER.validate_python(arguments)
    except ValidationError as error:
        raise PlanError([f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:8]]) from None


def plan_options(plan: JobPlan) -> dict[str, Any]:
    """Fold the operations, in order, into job options (the keyword arguments of a JobSpec)."""
    options: dict[str, Any] = {"drop_columns": [], "keep_columns": [], "excluded_model_types": [], "na_values": []}
    for operation in plan.operations:
        match operation:
            case UseData(path=path):
                options["data"] = path
            case SetTarget(column=column):
                options["target"] = column
            case DropColumns(columns=columns):
                _add_new(options["drop_columns"], columns)
            case TreatAsLeak(column=column):
                _add_new(options["drop_columns"], [column])
            case KeepColumns(columns=columns):
                _add_new(options["keep_columns"], columns)
            case TreatAsMissing(values=values):
                _add_new(options["na_values"], values)
            case SetObjective(objective=objective, cost_fn=cost_fn, cost_fp=cost_fp):
                options.update(objective=objective, cost_fn=cost_fn, cost_fp=cost_fp)
            case SetPositiveClass(label=label):
                options["positive_class"] = label
            case SetTimeBudget(seconds=seconds):
                options["time_limit"] = seconds
            case SetPresets(presets=presets):
                options["presets"] = presets
            case ExcludeModels(model_types=types):
                _add_new(options["excluded_model_types"], types)
            case SetThresholdPolicy(policy=policy):
                options["threshold_policy"] = policy
            case SetLabelNoise(mode=mode):
                options["label_noise"] = mode
            case SetName(name=name):
                options["name"] = name
            case RequireApproval(required=required):
                options["require_approval"] = required
    return options


def _add_new(items: list, new: list) -> None:
    """Append the values not already present, keeping order."""
    items.extend(value for value in dict.fromkeys(new) if value not in items)


def check_against_data(options: dict[str, Any], columns: list[str], class_counts: dict[str, int] | None) -> list[str]:
    """Problems that only the data reveals: unknown columns, an objective the target cannot have."""
    problems = []
    known = set(columns)
    target = options.get("target")
    if not options.get("data"):
        problems.append("no data file: add a use_data operation")
    if not target:
        problems.append("no target: add a set_target operation")
    elif target not in known:
        problems.append(f"target column '{target}' does not exist; columns are: {', '.join(columns[:30])}")
    for key in ("drop_columns", "keep_columns"):
        unknown = [c for c in options.get(key, []) if c not in known]
        if unknown:
            problems.append(f"{key}: no such column(s): {', '.join(map(repr, unknown))}")
    if target in options.get("drop_columns", []):
        problems.append(f"the target '{target}' cannot be dropped")
    if class_counts is not None:
        if options.get("objective") == "cost" and len(class_counts) != 2:
            problems.append(f"objective 'cost' needs a binary target; '{target}' has {len(class_counts)} classes")
        label = options.get("positive_class")
        if label is not None and label not in class_counts:
            problems.append(f"positive class '{label}' is not a value of '{target}': {sorted(class_counts)[:10]}")
        classes = [value for value in options.get("na_values", []) if value in class_counts]
        if classes:
            problems.append(f"na_values: {', '.join(map(repr, classes))} is a class of '{target}'; read as missing, "
                            "its rows would lose their label")
    if options.get("objective") == "cost" and (options.get("cost_fn") is None or options.get("cost_fp") is None):
        problems.append("objective 'cost' needs both cost_fn and cost_fp")
    return problems


def describe(options: dict[str, Any]) -> list[str]:
    """The plan in plain words, one line per decision."""
    lines = [f"data: {options.get('data')}", f"target: {options.get('target')}"]
    objective = options.get("objective", "f1")
    if objective == "cost":
        lines.append(f"objective: expected cost (a miss costs {options['cost_fn']:g}, a false alarm {options['cost_fp']:g})")
    else:
        lines.append(f"objective: {objective}")
    for key, label in (("positive_class", "positive class"), ("time_limit", "time budget (s)"), ("presets", "presets"),
                       ("name", "model name"), ("threshold_policy", "threshold"),
                       ("label_noise", "rows flagged as likely mislabelled")):
        if options.get(key) is not None:
            lines.append(f"{label}: {options[key]}")
    for key, label in (("drop_columns", "drop"), ("keep_columns", "keep despite flags"),
                       ("excluded_model_types", "exclude models")):
        if options.get(key):
            lines.append(f"{label}: {', '.join(map(str, options[key]))}")
    if options.get("na_values"):
        lines.append(f"read as missing: {', '.join(map(repr, map(str, options['na_values'])))} "
                     "(besides the usual empty, NA, null, NaN)")
    return lines
