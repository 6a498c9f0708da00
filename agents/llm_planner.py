"""The LLM side of planning: a tool-calling loop, the profile review and the result summary.

Each function returns what it decided plus how: every failure mode (HTTP error, timeout,
garbage, a second invalid tool call, too many rounds) raises `PlannerFailed`, and the
caller falls back to the deterministic path and tells the user. A first invalid tool
call is sent back to the model once, with the validation error, for repair.

Nothing the model writes reaches the user unchecked. Tool results, profiles and metrics
records go to it marked as data (`agents.tools.as_data`). A chat turn that ends in text is
judged by `ground_turn`: a reply to a request for work (the rule parser finds a file and a
target) that did not start a job, or a reply that states results while no record of
results is in scope, is a fault and the deterministic planner answers instead; any other
sentence quoting a number found in no record in scope is removed (`summary.ground_text`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from poise.agents import prompts
from poise.agents.llm import LLM, LLMUnavailable
from poise.agents.rule_planner.parsing import parse_message
from poise.agents.summary import claims_results, ground_text, unsupported_numbers, with_next_steps
from poise.agents.tools import TOOL_SPECS, PlannerTools, ToolError, as_data, tool_message

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
    tool_results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (tool, result) sent this turn


def plan_turn(llm: LLM, history: list[dict[str, Any]], user_text: str, tools: PlannerTools) -> TurnOutcome:
    """Run the tool loop for one user message; `history` excludes the system prompt."""
    messages = [{"role": "system", "content": prompts.PLANNER}, *history, {"role": "user", "content": user_text}]
    repairs = 0
    received: list[tuple[str, dict[str, Any]]] = []
    for _ in range(MAX_ROUNDS):
        try:
            reply = llm.chat(messages, tools=TOOL_SPECS, tool_choice="auto", purpose="plan")
        except LLMUnavailable as error:
            raise PlannerFailed(f"the LLM endpoint failed ({error})") from None
        messages.append(reply.to_message())
        if not reply.tool_calls:
            if not reply.content.strip():
                raise PlannerFailed("the LLM returned neither text nor a tool call")
            return TurnOutcome(text=reply.content.strip(), messages=messages[1:], tool_results=received)
        outcome = TurnOutcome(messages=messages, tool_results=received)
        for call in reply.tool_calls:
            try:
                result = tools.call(call.name, call.arguments)
                messages.append(tool_message(call.id, call.name, result))
            except ToolError as error:
                repairs += 1
                if repairs > MAX_REPAIRS:
                    raise PlannerFailed(f"the LLM's tool call was invalid twice ({error})") from None
                result = {"error": str(error)}
                messages.append(tool_message(call.id, call.name, error=str(error)))
            received.append((call.name, result))
            if "question" in result:
                outcome.question = result["question"]
            if "start" in result:
                outcome.start_plan_id = result["start"]
        if outcome.question or outcome.start_plan_id:
            outcome.messages = messages[1:]
            return outcome
    raise PlannerFailed(f"the LLM did not finish planning within {MAX_ROUNDS} rounds")


RESULT_TOOLS = ("job_status", "list_models")  # tools whose output is a record of results (jobs, the registry)
ECHO_TOOLS = ("ask_user", "start_job")  # tools whose output only repeats the model's own words: no record


@dataclass
class Grounding:
    """What may be shown of a chat turn's text reply. `fault` (None: none) is why the reply was not shown as
    written, in words safe to show (never the ungrounded numbers); `detail` adds them, for the LLM trace.
    `fall_back`: the deterministic planner answers instead."""

    text: str
    fault: str | None = None
    detail: str | None = None
    fall_back: bool = False


def ground_turn(outcome: TurnOutcome, user_text: str, jobs: list[dict[str, Any]]) -> Grounding:
    """Judge a turn that ended in text (a reply or an ask_user question) rather than a started job.

    `jobs` are the session's job records (`{"status", "versions", ...}`; a job with registered versions holds
    results). Records in scope: those jobs, the tool results of this turn and the user's message; a result
    may only be stated when a job's or the registry's record is among them, and quote only its numbers."""
    text = outcome.question or outcome.text
    request = parse_message(user_text)
    if request.data and request.target:
        return Grounding("", "it answered a request to train a model without planning and starting a job",
                         f"unacted_request: {text}", fall_back=True)
    results = [job for job in jobs if job.get("versions")]
    results += [result for name, result in outcome.tool_results if name in RESULT_TOOLS and "error" not in result]
    context = [job for job in jobs if not job.get("versions")]
    context += [result for name, result in outcome.tool_results
                if name not in RESULT_TOOLS + ECHO_TOOLS or "error" in result]
    context.append(user_text)
    if not results and any(claims_results(sentence) for sentence in _sentences(text)):
        return Grounding("", "its reply stated training results, but no job in this session has any",
                         f"claim_without_job: {text}", fall_back=True)
    kept, removed = ground_text(text, results, context)
    if not removed:
        return Grounding(text)
    detail = f"ungrounded_numbers: {', '.join(removed[:10])}"
    if not kept:
        return Grounding("", "its reply quoted numbers that are in no record of this session", detail,
                         fall_back=True)
    note = "(Poise removed what the LLM wrote with numbers found in no job or tool record.)"
    return Grounding(f"{kept}\n{note}", "its reply quoted numbers that are in no record", detail)


def _sentences(text: str) -> list[str]:
    return [s for line in text.splitlines() for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s]


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
                {"role": "user", "content": "Data profile (JSON):\n" + as_data(view)}]
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
    reason, removed = ground_text(str(args.get("reason", ""))[:300], [], [view])  # shown in the plan
    if removed:
        llm.tracer.mark_fault(f"ungrounded_numbers in the review's reason: {', '.join(removed[:10])}")
        reason = (reason + " " if reason else "") + "(Poise removed what it said with numbers found nowhere in the profile.)"
    return {"drop_columns": drop, "keep_columns": keep, "reason": reason}


def summarize(llm: LLM, record: dict[str, Any]) -> str:
    """An LLM explanation whose every number is in `record`; raises PlannerFailed otherwise.

    When the gate refused the model, the record's next steps follow the LLM's text word for word: commands
    are never left to the model to restate."""
    messages = [{"role": "system", "content": prompts.SUMMARY},
                {"role": "user", "content": "Metrics record (JSON):\n" + as_data(record)}]
    try:
        reply = llm.chat(messages, purpose="summary")
    except LLMUnavailable as error:
        raise PlannerFailed(f"the LLM endpoint failed ({error})") from None
    text = reply.content.strip()
    if not text:
        raise PlannerFailed("the LLM returned an empty summary")
    wrong = unsupported_numbers(text, record)
    if wrong:  # the numbers go to the trace only: the failure's message is shown in the job's steps
        llm.tracer.mark_fault(f"ungrounded_numbers: {', '.join(wrong[:10])}")
        raise PlannerFailed(f"the LLM summary quoted {len(wrong)} number(s) not in the metrics record")
    return with_next_steps(text, record)
