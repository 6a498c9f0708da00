"""The LLM side of planning: a tool-calling loop, the profile review and the result summary.

Each function returns what it decided plus how: every failure mode (HTTP error, timeout,
garbage, a second invalid tool call, too many rounds) raises `PlannerFailed`, and the
caller falls back to the deterministic path and tells the user. A first invalid tool
call is sent back to the model once, with the validation error, for repair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agents import prompts
from agents.llm import LLM, LLMUnavailable
from agents.summary import unsupported_numbers, with_next_steps
from agents.tools import TOOL_SPECS, PlannerTools, ToolError

MAX_ROUNDS = 6
MAX_REPAIRS = 1


class PlannerFailed(Exception):
    """The LLM path could not produce a valid decision; the message says why."""


@dataclass
class TurnOutcome:
    """What one user turn produced: a question, a plan to start, or plain text."""

    text: str = ""
    question: str | None = None
    start_plan_id: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)


def plan_turn(llm: LLM, history: list[dict[str, Any]], user_text: str, tools: PlannerTools) -> TurnOutcome:
    """Run the tool loop for one user message; `history` excludes the system prompt."""
    messages = [{"role": "system", "content": prompts.PLANNER}, *history, {"role": "user", "content": user_text}]
    repairs = 0
    for _ in range(MAX_ROUNDS):
        try:
            reply = llm.chat(messages, tools=TOOL_SPECS, tool_choice="auto", purpose="plan")
        except LLMUnavailable as error:
            raise PlannerFailed(f"the LLM endpoint failed ({error})") from None
        messages.append(reply.to_message())
        if not reply.tool_calls:
            if not reply.content.strip():
                raise PlannerFailed("the LLM returned neither text nor a tool call")
            return TurnOutcome(text=reply.content.strip(), messages=messages[1:])
        outcome = TurnOutcome(messages=messages)
        for call in reply.tool_calls:
            try:
                result = tools.call(call.name, call.arguments)
            except ToolError as error:
                repairs += 1
                if repairs > MAX_REPAIRS:
                    raise PlannerFailed(f"the LLM's tool call was invalid twice ({error})") from None
                result = {"error": str(error)}
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result, default=str)})
            if "question" in result:
                outcome.question = result["question"]
            if "start" in result:
                outcome.start_plan_id = result["start"]
        if outcome.question or outcome.start_plan_id:
            outcome.messages = messages[1:]
            return outcome
    raise PlannerFailed(f"the LLM did not finish planning within {MAX_ROUNDS} rounds")


AMEND_TOOL = {"type": "function", "function": {
    "name": "amend_plan",
    "description": "Drop leaking/identifying columns or keep flagged-but-safe ones.",
    "parameters": {"type": "object", "properties": {
        "drop_columns": {"type": "array", "items": {"type": "string"}},
        "keep_columns": {"type": "array", "items": {"type": "string"}},
        "reason": {"type": "string"}}, "required": ["reason"]},
}}


def review_profile(llm: LLM, profile: dict[str, Any]) -> dict[str, Any] | None:
    """The LLM's amendment to the plan after profiling, validated against the profile; None = no change."""
    view = {"target": profile["target"], "columns": [
        {k: c[k] for k in ("name", "inferred_type", "missing_share", "n_unique", "flags", "action", "leak_auc")}
        for c in profile["columns"]]}
    messages = [{"role": "system", "content": prompts.REVIEW},
                {"role": "user", "content": "Data profile (JSON):\n" + json.dumps(view, default=str)}]
    try:
        reply = llm.chat(messages, tools=[AMEND_TOOL], tool_choice="auto", purpose="review")
    except LLMUnavailable as error:
        raise PlannerFailed(f"the LLM endpoint failed ({error})") from None
    if not reply.tool_calls:
        return None
    call = reply.tool_calls[0]
    try:
        args = json.loads(call.arguments)
    except json.JSONDecodeError:
        raise PlannerFailed("the review's arguments were not valid JSON") from None
    if call.name != "amend_plan" or not isinstance(args, dict):
        raise PlannerFailed(f"the review called an unknown tool '{call.name}'")
    names = {c["name"] for c in profile["columns"]}
    flagged = {c["name"] for c in profile["columns"] if c["action"] == "drop"}
    drop = [c for c in args.get("drop_columns") or [] if isinstance(c, str)]
    keep = [c for c in args.get("keep_columns") or [] if isinstance(c, str)]
    unknown = [c for c in drop + keep if c not in names]
    if unknown or profile["target"]["name"] in drop or any(c not in flagged for c in keep):
        raise PlannerFailed(f"the review named columns it may not use: {unknown or drop + keep}")
    if not drop and not keep:
        return None
    return {"drop_columns": drop, "keep_columns": keep, "reason": str(args.get("reason", ""))[:300]}


def summarize(llm: LLM, record: dict[str, Any]) -> str:
    """An LLM explanation whose every number is in `record`; raises PlannerFailed otherwise.

    When the gate refused the model, the record's next steps follow the LLM's text word for word: commands
    are never left to the model to restate."""
    messages = [{"role": "system", "content": prompts.SUMMARY},
                {"role": "user", "content": "Metrics record (JSON):\n" + json.dumps(record, default=str)}]
    try:
        reply = llm.chat(messages, purpose="summary")
    except LLMUnavailable as error:
        raise PlannerFailed(f"the LLM endpoint failed ({error})") from None
    text = reply.content.strip()
    if not text:
        raise PlannerFailed("the LLM returned an empty summary")
    wrong = unsupported_numbers(text, record)
    if wrong:
        raise PlannerFailed(f"the LLM summary has numbers not in the metrics record: {', '.join(wrong[:5])}")
    return with_next_steps(text, record)
