"""The training graph, assembled declaratively.

load → profile → prepare → train → evaluate → gate → register → report.
A user-facing data or option problem ends the job after the node that found it;
a failed gate still registers the version (without moving `champion`).
"""

from langgraph.graph import END, START, StateGraph

from pipelines.training import nodes
from pipelines.training.configuration import TrainingContext
from pipelines.training.state import TrainingState

STEPS = ("load", "profile", "prepare", "train", "evaluate", "gate", "register", "report")
AGENT_OF_STEP = {
    "load": "data_engineering", "profile": "data_engineering", "prepare": "data_engineering",
    "train": "automl", "evaluate": "automl",
    "gate": "deployment", "register": "deployment", "report": "deployment",
}


def _continue_unless_error(next_step: str):
    def route(state: TrainingState) -> str:
        return END if state.get("error") else next_step

    return route


def build_graph() -> StateGraph:
    graph = StateGraph(TrainingState, context_schema=TrainingContext)
    for step in STEPS:
        graph.add_node(step, getattr(nodes, step))
    graph.add_edge(START, "load")
    for step, next_step in zip(STEPS[:4], STEPS[1:5]):
        graph.add_conditional_edges(step, _continue_unless_error(next_step), [next_step, END])
    for step, next_step in zip(STEPS[4:], STEPS[5:]):
        graph.add_edge(step, next_step)
    graph.add_edge("report", END)
    return graph
