"""The monitor graph, assembled declaratively.

collect → analyse → decide → act → compare → approve → promote → report.
No champion or a bad batch ends the check after `collect`; a window too small to judge,
or a decision that needs no action, goes straight to `report`; `approve` pauses the
check (a LangGraph interrupt) before a promotion when the check asks for approval.
"""

from langgraph.graph import END, START, StateGraph

from poise.pipelines.graph_runner import Step, add_steps, continue_unless_error
from poise.pipelines.monitoring import nodes
from poise.pipelines.monitoring.configuration import MonitorContext
from poise.pipelines.monitoring.state import MonitorState

STEPS = (
    Step("collect", nodes.collect, "drift"),
    Step("analyse", nodes.analyse, "drift"),
    Step("decide", nodes.decide, "drift"),
    Step("act", nodes.act, "automl"),
    Step("compare", nodes.compare, "deployment"),
    Step("approve", nodes.approve, "planner"),
    Step("promote", nodes.promote, "deployment"),
    Step("report", nodes.report, "deployment"),
)


def _after_collect(state: MonitorState) -> str:
    return END if state.get("error") else "report" if state.get("decision") == "no_data" else "analyse"


def _after_decide(state: MonitorState) -> str:
    return "report" if state["action"]["kind"] == "none" else "act"


def build_graph() -> StateGraph:
    graph = add_steps(StateGraph(MonitorState, context_schema=MonitorContext), STEPS)
    graph.add_edge(START, "collect")
    graph.add_conditional_edges("collect", _after_collect, ["analyse", "report", END])
    graph.add_conditional_edges("analyse", continue_unless_error("decide"), ["decide", END])
    graph.add_conditional_edges("decide", _after_decide, ["act", "report"])
    graph.add_conditional_edges("act", continue_unless_error("compare"), ["compare", END])
    graph.add_edge("compare", "approve")
    graph.add_edge("approve", "promote")
    graph.add_edge("promote", "report")
    graph.add_edge("report", END)
    return graph
