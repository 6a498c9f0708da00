"""The training graph, assembled declaratively.

load → profile → review → approve → prepare → train → evaluate → gate → refit → register → explain → report.
A user-facing data or option problem, or a plan the user does not approve, ends the job
after the node that found it; a failed gate still registers the version (without moving
`champion`). `approve` pauses the job (a LangGraph interrupt) unless auto-approve is on.
"""

from langgraph.graph import END, START, StateGraph

from pipelines.training import nodes
from pipelines.training.configuration import TrainingContext
from pipelines.training.state import TrainingState

STEPS = ("load", "profile", "review", "approve", "prepare", "train", "evaluate", "gate", "refit", "register",
         "explain", "report")
CAN_END_JOB = {"load", "profile", "approve", "prepare", "train"}
AGENT_OF_STEP = {
    "load": "data_engineering", "profile": "data_engineering", "review": "planner", "approve": "planner",
    "prepare": "data_engineering", "train": "automl", "evaluate": "automl",
    "gate": "deployment", "refit": "automl", "register": "deployment", "explain": "planner", "report": "deployment",
}


def continue_unless_error(next_step: str):
    """A router: end the graph when the last node set `error`, else go to `next_step`."""

    def route(state: dict) -> str:
        return END if state.get("error") else next_step

    return route


def build_graph() -> StateGraph:
    graph = StateGraph(TrainingState, context_schema=TrainingContext)
    for step in STEPS:
        graph.add_node(step, getattr(nodes, step))
    graph.add_edge(START, STEPS[0])
    for step, next_step in zip(STEPS, STEPS[1:]):
        if step in CAN_END_JOB:
            graph.add_conditional_edges(step, continue_unless_error(next_step), [next_step, END])
        else:
            graph.add_edge(step, next_step)
    graph.add_edge(STEPS[-1], END)
    return graph
