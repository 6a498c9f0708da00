"""The training graph, assembled declaratively: one line per step (node, agent, what the job log says of it).

load → profile → review → approve → prepare → train → evaluate → gate → refit → register → explain → report.
A user-facing data or option problem, or a plan the user does not approve, ends the job
after the step that found it; a failed gate still registers the version (without moving
`champion`). `approve` pauses the job (a LangGraph interrupt) unless auto-approve is on.
"""

from poise.pipelines.graph_runner import Step, linear_graph
from poise.pipelines.training import nodes, step_notes
from poise.pipelines.training.configuration import TrainingContext
from poise.pipelines.training.state import TrainingState

STEPS = (
    Step("load", nodes.load, "data_engineering", step_notes.load, ends_on_error=True),
    Step("profile", nodes.profile, "data_engineering", step_notes.profile, ends_on_error=True),
    Step("review", nodes.review, "planner", step_notes.review),
    Step("approve", nodes.approve, "planner", step_notes.approve, ends_on_error=True),
    Step("prepare", nodes.prepare, "data_engineering", step_notes.prepare, ends_on_error=True),
    Step("train", nodes.train, "automl", step_notes.train, ends_on_error=True),
    Step("evaluate", nodes.evaluate, "automl", step_notes.evaluate),
    Step("gate", nodes.gate, "deployment", step_notes.gate),
    Step("refit", nodes.refit, "automl", step_notes.refit),
    Step("register", nodes.register, "deployment", step_notes.register),
    Step("explain", nodes.explain, "planner", step_notes.explain),
    Step("report", nodes.report, "deployment", step_notes.report),
)


def build_graph():
    return linear_graph(TrainingState, TrainingContext, STEPS)
