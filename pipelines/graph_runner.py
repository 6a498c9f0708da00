"""The one graph runner: drives the LangGraph graph of any job kind — a training job (drift retraining is one too)
or a drift check — and keeps its step bookkeeping.

A kind declares its steps once (`Step`: node function, agent, one-line description) and how its record is found
(`JobKind`); this module does the rest the same way for every kind: the checkpoint after every node
(`durability="sync"`, so a killed run resumes from its last finished node in any process), one record per step
(open, finished, failed, waiting), progress events, the answer to an approval, cancellation, and what is kept when
a node raises (the traceback in the run's folder, the MLflow run marked failed, the checkpoint for a resume).
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command
from sqlalchemy import select

from poise.pipelines.checkpoints import checkpointer
from poise.pipelines.settings import Settings
from poise.registry import tracking
from poise.registry.db import session_scope
from poise.registry.models import JobStep, utcnow

AWAITING_APPROVAL = "awaiting_approval"
Describe = Callable[[dict[str, Any]], tuple[str | None, dict[str, Any] | None]]


def says_reason(result: dict[str, Any]) -> tuple[str | None, None]:
    """The default description of a finished step: the reason its node gave, if any."""
    return result.get("reason"), None


@dataclass(frozen=True)
class Step:
    """One node of a graph: its function, the agent it belongs to, and how a finished run of it is described
    (a one-line message and a few headline numbers, from the node's state update)."""

    name: str
    node: Callable
    agent: str
    describe: Describe = says_reason
    ends_on_error: bool = False  # in a linear graph: a user-facing problem found here ends the run


def add_steps(graph: StateGraph, steps: Sequence[Step]) -> StateGraph:
    """The steps as the graph's nodes, each pushing what it wrote in the run's folder to the file store before it
    returns, so the checkpoint that records it done never names a file only this machine has."""
    for step in steps:
        graph.add_node(step.name, _mirrored(step.node))
    return graph


def _mirrored(node: Callable) -> Callable:
    @functools.wraps(node)
    def run(state: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
        update = node(state, runtime)
        runtime.context.settings.file_store.push(runtime.context.work_dir)
        return update

    return run


def linear_graph(state: type, context: type, steps: Sequence[Step]) -> StateGraph:
    """Steps run in order; after a step that `ends_on_error`, a state with `error` ends the graph."""
    graph = add_steps(StateGraph(state, context_schema=context), steps)
    graph.add_edge(START, steps[0].name)
    for step, next_step in zip(steps, steps[1:]):
        if step.ends_on_error:
            graph.add_conditional_edges(step.name, continue_unless_error(next_step.name), [next_step.name, END])
        else:
            graph.add_edge(step.name, next_step.name)
    graph.add_edge(steps[-1].name, END)
    return graph


def continue_unless_error(next_step: str):
    """A router: end the graph when the last node set `error`, else go to `next_step`."""

    def route(state: dict) -> str:
        return END if state.get("error") else next_step

    return route


@dataclass(frozen=True)
class JobKind:
    """What the runner needs to know about a kind of job."""

    noun: str  # in messages: "job", "drift check"
    steps: tuple[Step, ...]
    build_graph: Callable[[], StateGraph]
    make_context: Callable[[Settings, str, dict[str, Any]], Any]  # (settings, id, spec) -> the nodes' context
    thread_prefix: str = ""  # checkpoint thread id = prefix + id
    records_steps: bool = True  # one `job_steps` row per node run (a drift check reports its steps as events)
    cancel_requested: Callable[[Settings, str], bool] | None = None

    def step(self, name: str) -> Step | None:
        return next((step for step in self.steps if step.name == name), None)

    def agent(self, name: str) -> str:
        step = self.step(name)
        return step.agent if step else "pipeline"


@dataclass
class StepEvent:
    job_id: str
    node: str
    agent: str
    status: str  # running | succeeded | failed | waiting
    seconds: float | None = None
    message: str | None = None


EventHandler = Callable[[StepEvent], None]


@dataclass
class GraphRun:
    """How a drive of the graph ended: `done` (the graph finished; the state may carry a user-facing `error`),
    `waiting` (an approval), `failed` (a node raised), `cancelled` or `interrupted` (Ctrl-C; re-raised by the
    caller after recording it)."""

    status: str
    state: dict[str, Any]
    error: str | None = None
    plan: list[str] = field(default_factory=list)
    context: Any = None


def checkpoint_state(kind: JobKind, settings: Settings, run_id: str) -> tuple[dict[str, Any], list[str]]:
    """A run's checkpointed graph state and, when it waits for approval, the plan it shows."""
    with checkpointer(settings) as saver:
        snapshot = kind.build_graph().compile(checkpointer=saver).get_state(
            {"configurable": {"thread_id": kind.thread_prefix + run_id}})
    plan = list(snapshot.interrupts[0].value["plan"]) if snapshot.interrupts else []
    return snapshot.values, plan


def drive(kind: JobKind, run_id: str, spec: dict[str, Any], settings: Settings,
          on_event: EventHandler | None = None, resume_value: dict[str, Any] | None = None) -> GraphRun:
    """Run (or resume, or answer) the graph of one job of `kind` until it finishes, waits, fails or is cancelled."""
    context = kind.make_context(settings, run_id, spec)
    config = {"configurable": {"thread_id": kind.thread_prefix + run_id}}
    context.work_dir.mkdir(parents=True, exist_ok=True)
    with checkpointer(settings) as saver:
        app = kind.build_graph().compile(checkpointer=saver)
        checkpoint = app.get_state(config)
        restored = settings.file_store.pull(context.work_dir) if checkpoint.values else 0
        recorder = StepRecorder(kind, run_id, settings, on_event or (lambda event: None))
        recorder.settle_open(set(checkpoint.next), restored)
        if resume_value is not None:
            graph_input: Any = Command(resume=resume_value)
        else:
            graph_input = None if checkpoint.values else {"spec": spec}
        try:
            for task in app.stream(graph_input, config, context=context, stream_mode="tasks", durability="sync"):
                recorder.record(task)
                if kind.cancel_requested and kind.cancel_requested(settings, run_id):
                    snapshot = app.get_state(config)
                    if snapshot.next:  # a request seen after the last node changes nothing
                        recorder.fail_open("cancelled")
                        _finish_mlflow_run(context, snapshot.values, "KILLED")
                        return GraphRun("cancelled", snapshot.values, "cancelled by request", context=context)
        except KeyboardInterrupt:
            recorder.fail_open("interrupted by the user")
            return GraphRun("interrupted", app.get_state(config).values, "interrupted by the user", context=context)
        except Exception as error:  # a bug, not bad input: the checkpoint keeps what was done, for a resume
            (context.work_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            message = f"{type(error).__name__}: {error}"
            recorder.fail_open(message)
            state = app.get_state(config).values
            _finish_mlflow_run(context, state, "FAILED")
            return GraphRun("failed", state, message, context=context)
        snapshot = app.get_state(config)
    if snapshot.interrupts:
        return GraphRun("waiting", snapshot.values, plan=list(snapshot.interrupts[0].value["plan"]), context=context)
    return GraphRun("done", snapshot.values, snapshot.values.get("error"), context=context)


def _finish_mlflow_run(context: Any, state: dict[str, Any], status: str) -> None:
    if state.get("mlflow_run_id"):
        tracking.finish_run(context.mlflow, state["mlflow_run_id"], status)


class StepRecorder:
    """One record per node run, from LangGraph's task events: a `job_steps` row (for kinds that keep them) and a
    progress event."""

    def __init__(self, kind: JobKind, run_id: str, settings: Settings, notify: EventHandler):
        self.kind, self.run_id, self.settings, self.notify = kind, run_id, settings, notify
        self.open: dict[str, tuple[int | None, str, float]] = {}  # task id -> (row id, node, start)

    def settle_open(self, pending: set[str], restored: int = 0) -> None:
        """Close the step records an earlier run left open. A `running` step whose node the checkpoint has moved
        past finished, though its record could not be written (the process died, or the database was down, right
        after); one still pending was interrupted and runs again. A `waiting` step (the approval) was answered.
        `restored`: how many files of the run's folder this process pulled from the file store to resume it."""
        interrupted = "interrupted" + (f"; resumed on another worker from the checkpoint, with {restored} files of "
                                       f"the job's folder restored from the file store" if restored else "")
        if not self.kind.records_steps:
            return
        with session_scope(self.settings.db_url) as session:
            for step in session.scalars(select(JobStep).where(JobStep.job_id == self.run_id)):
                if step.status == "running" and step.node in pending:
                    step.status, step.finished_at, step.message = "failed", utcnow(), interrupted
                elif step.status == "running":
                    step.status, step.finished_at = "succeeded", utcnow()
                    step.message = "finished; its record was written on resuming (from the checkpoint)"
                elif step.status == "waiting":
                    step.status, step.finished_at, step.message = "succeeded", utcnow(), "answered"

    def record(self, task: dict[str, Any]) -> None:
        node = task["name"]
        agent = self.kind.agent(node)
        if "input" in task:
            row_id = None
            if self.kind.records_steps:
                with session_scope(self.settings.db_url) as session:
                    row = JobStep(job_id=self.run_id, node=node, agent=agent, status="running", started_at=utcnow())
                    session.add(row)
                    session.flush()
                    row_id = row.id
            self.open[task["id"]] = (row_id, node, time.perf_counter())
            self.notify(StepEvent(self.run_id, node, agent, "running"))
            return
        row_id, node, start = self.open.pop(task["id"])
        result = task.get("result") or {}
        if task.get("interrupts"):
            status, message, metrics = "waiting", "waiting for the user's approval", None
        elif task.get("error"):
            status, message, metrics = "failed", str(task["error"])[:2000], None
        elif result.get("error"):
            status, message, metrics = "failed", result["error"], None
        else:
            step = self.kind.step(node)
            status, (message, metrics) = "succeeded", (step.describe(result) if step else (None, None))
        self._close(row_id, node, start, status, message, metrics)

    def fail_open(self, message: str) -> None:
        for row_id, node, start in self.open.values():
            self._close(row_id, node, start, "failed", message, None)
        self.open.clear()

    def _close(self, row_id: int | None, node: str, start: float, status: str, message: str | None,
               metrics: dict[str, Any] | None) -> None:
        if row_id is not None:
            with session_scope(self.settings.db_url) as session:
                row = session.get(JobStep, row_id)
                row.status, row.finished_at, row.message, row.metrics = status, utcnow(), message, metrics
        self.notify(StepEvent(self.run_id, node, self.kind.agent(node), status,
                              round(time.perf_counter() - start, 2), message))
