"""The typed tools an LLM planner may call, and their validation against schema and data.

Every argument is checked before anything happens: unknown tools, malformed JSON, fields
outside the schema and columns that are not in the table all come back as a `ToolError`
whose message the planner can use to repair its call. Starting a job is only a request:
the chat session decides, and the job still stops for approval unless auto-approve is on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from poise.agents.data_engineering.loading import load_table
from poise.agents.data_engineering.profiling import profile_table
from poise.agents.drift import estimation
from poise.agents.errors import AmbiguousId, NotFound, PoiseError
from poise.agents.plan import (
    JobPlan,
    PlanError,
    check_against_data,
    describe,
    parse_plan,
    plan_options,
)
from poise.agents.summary import job_gate, record_steps
from poise.registry import queries, tracking
from poise.registry.db import session_scope


class ToolError(Exception):
    """A tool call the planner must repair; the message says what is wrong."""


class InspectDatasetArgs(BaseModel):
    path: str = Field(description="Path of the table, as the user gave it.")
    target: str | None = Field(None, description="Candidate target column, to get its class counts.")


class AskUserArgs(BaseModel):
    question: str = Field(min_length=3, max_length=500)


class StartJobArgs(BaseModel):
    plan_id: str


class JobStatusArgs(BaseModel):
    job_id: str = Field(min_length=4, max_length=32)


class NoArgs(BaseModel):
    pass


def _function(name: str, description: str, model: type[BaseModel]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": model.model_json_schema()}}


def as_data(content: Any, **about: Any) -> str:
    """`content` as the LLM receives anything read from files, tables or the registry: one JSON object of
    type "data", which the system prompts say is never an instruction, whatever a column name or cell says."""
    return json.dumps({"type": "data", **about, "content": content}, default=str)


def tool_message(call_id: str, name: str, result: dict[str, Any] | None = None, error: str | None = None) -> dict:
    """The tool message answering one call: its result marked as data (`as_data`), or what was wrong with the
    call (type "error", for the model to repair it)."""
    content = (json.dumps({"type": "error", "tool": name, "error": error}, default=str) if error is not None
               else as_data(result, tool=name))
    return {"role": "tool", "tool_call_id": call_id, "content": content}


TOOL_SPECS = [
    _function("inspect_dataset", "Columns, inferred types and (with target) class counts of a table.",
              InspectDatasetArgs),
    _function("propose_plan", "Validate a job plan (ordered operations) against the data; returns a plan_id.",
              JobPlan),
    _function("ask_user", "Ask the user one question and wait for the answer.", AskUserArgs),
    _function("start_job", "Start the job of an accepted plan (it pauses for the user's approval).", StartJobArgs),
    _function("job_status", "Status, steps and holdout metrics of a job.", JobStatusArgs),
    _function("list_models", "Registered models and their champion versions.", NoArgs),
]
TOOL_NAMES = tuple(spec["function"]["name"] for spec in TOOL_SPECS)


class PlannerTools:
    """Executes tool calls for one chat session. `plans` persists with the session."""

    def __init__(self, settings, plans: dict[str, dict[str, Any]], access, validate_spec: Callable[[dict], None]):
        """`access` (`pipelines.access.DataAccess`) decides which files the planner may read: the user's own."""
        self.settings = settings
        self.plans = plans
        self.access = access
        self.validate_spec = validate_spec
        self._tables: dict[str, Any] = {}

    def call(self, name: str, arguments: str) -> dict[str, Any]:
        if name not in TOOL_NAMES:
            raise ToolError(f"unknown tool '{name}'; available tools: {', '.join(TOOL_NAMES)}")
        try:
            payload = json.loads(arguments or "{}")
        except json.JSONDecodeError as error:
            raise ToolError(f"arguments of {name} are not valid JSON: {error}") from None
        if not isinstance(payload, dict):
            raise ToolError(f"arguments of {name} must be a JSON object")
        return getattr(self, name)(payload)

    def _table(self, path: str):
        if path not in self._tables:
            try:
                self._tables[path] = load_table(self.access.resolve(path), max_bytes=self.settings.max_file_bytes)[0]
            except PoiseError as problem:
                raise ToolError(str(problem)) from None
        return self._tables[path]

    @staticmethod
    def _validated(model: type[BaseModel], payload: dict[str, Any]) -> BaseModel:
        try:
            return model.model_validate(payload)
        except ValidationError as error:
            raise ToolError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:6])) from None

    def inspect_dataset(self, payload: dict[str, Any]) -> dict[str, Any]:
        args = self._validated(InspectDatasetArgs, payload)
        table = self._table(args.path)
        columns = [{"name": str(c), "dtype": str(table[c].dtype), "n_unique": int(table[c].nunique()),
                    "missing_share": round(float(table[c].isna().mean()), 4)} for c in table.columns[:200]]
        result: dict[str, Any] = {"path": args.path, "n_rows": int(len(table)), "columns": columns}
        if args.target is not None:
            if args.target not in table.columns:
                raise ToolError(f"column '{args.target}' does not exist in {args.path}")
            try:
                profile = profile_table(table, args.target, seed=self.settings.seed)
            except PoiseError as problem:
                raise ToolError(str(problem)) from None
            result["target"] = profile["target"]
            result["flagged"] = profile["dropped"]
        return result

    def propose_plan(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            plan = parse_plan(payload)
        except PlanError as problem:
            raise ToolError(str(problem)) from None
        options = plan_options(plan)
        if not options.get("data"):
            raise ToolError("no data file: add a use_data operation")
        table = self._table(options["data"])
        class_counts = None
        if options.get("target") in table.columns:
            counts = table[options["target"]].dropna().astype(str).value_counts()
            class_counts = {str(k): int(v) for k, v in counts.items()} if len(counts) <= 50 else None
        problems = check_against_data(options, [str(c) for c in table.columns], class_counts)
        if problems:
            raise ToolError("; ".join(problems))
        try:
            self.validate_spec(options)
        except PoiseError as problem:
            raise ToolError(str(problem)) from None
        plan_id = uuid.uuid4().hex[:12]
        self.plans[plan_id] = options
        return {"plan_id": plan_id, "plan": describe(options)}

    def ask_user(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"question": self._validated(AskUserArgs, payload).question}

    def start_job(self, payload: dict[str, Any]) -> dict[str, Any]:
        plan_id = self._validated(StartJobArgs, payload).plan_id
        if plan_id not in self.plans:
            raise ToolError(f"unknown plan_id '{plan_id}'; call propose_plan first")
        return {"start": plan_id}

    def job_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        job_id = self._validated(JobStatusArgs, payload).job_id
        with session_scope(self.settings.db_url) as session:
            try:
                job = queries.find_job_by_prefix(session, job_id)
            except (NotFound, AmbiguousId) as problem:  # a prefix of several jobs names them; none is picked
                raise ToolError(str(problem)) from None
            result = {"job_id": job.id, "name": job.name, "status": job.status, "error": job.error,
                      "steps": [{"node": s.node, "status": s.status, "message": s.message} for s in job.steps],
                      "metrics": job.model_versions[0].metrics if job.model_versions else None}
            if job.model_versions:  # the gate's verdict now, with the next steps when it refused the version
                outcome = job_gate(self.settings, job.spec, job.model_versions[0])
                result["gate"] = {key: outcome[key] for key in ("passed", "reason", "champion", "explanation")}
                result["gate"]["next_steps"] = record_steps(outcome["next_steps"])
            return result

    def list_models(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._validated(NoArgs, payload)
        client = tracking.configure(self.settings.tracking_uri, self.settings.registry_uri)
        with session_scope(self.settings.db_url) as session:
            checks = {check.model_name: latest_check(check) for check in queries.latest_checks(session)}
        return {"models": [{"name": m.name, "champion": m.champion, "latest_drift_check": checks.get(m.name)}
                           for m in tracking.registered_models(client)]}


def latest_check(check) -> dict[str, Any]:
    """A model's latest drift check as the LLM may quote it: its decision and reason, and the served model's quality
    estimated without labels (with the realised figures where labels arrived), in the record's own words."""
    estimate = estimation.of_check(check.results)
    return {"check_id": check.id[:12], "status": check.status, "decision": check.decision, "reason": check.reason,
            "created_at": f"{check.created_at:%Y-%m-%d %H:%M} UTC",
            "estimated_quality": estimate and {key: estimate[key] for key in
                                               ("estimated", "interval", "interval_level", "baseline", "realised",
                                                "dropped", "blind_spot")},
            "estimated_quality_text": estimation.described(estimate) if check.status == "succeeded" else None}
