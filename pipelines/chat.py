"""Chat sessions: plain-words job submission, planned by an LLM or by the built-in rules.

A `ChatSession` turns a user's messages into a validated job plan, starts the job (which
profiles the data, then waits at its approval step unless auto-approve is on), and turns
the user's "yes" into the approval that resumes it. Sessions live in the database, so a
conversation continues across processes; the CLI, the API and the web UI share this class.
When an LLM endpoint is configured it plans through typed tools; if it fails (HTTP error,
timeout, garbage, an invalid call after one repair) the rule-based planner takes over and
the reply says so.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from poise.agents.data_engineering.loading import load_table
from poise.agents.errors import PoiseError, SpecError
from poise.agents.plan import check_against_data, describe
from poise.agents.rule_planner.intent import ChatIntent, merge, missing_question
from poise.agents.rule_planner.parsing import parse_message
from poise.pipelines import runner
from poise.pipelines.access import DataAccess, Forbidden, hide_paths
from poise.pipelines.settings import Settings
from poise.registry import queries
from poise.registry.db import session_scope
from poise.registry.keys import KeyInfo
from poise.registry.models import ChatMessage
from poise.registry.models import ChatSession as ChatSessionRow

MAX_MESSAGE_CHARS = 4000


@dataclass
class ChatReply:
    session_id: str
    text: str
    planner: str
    fell_back: str | None = None
    plan: list[str] = field(default_factory=list)
    job_id: str | None = None
    status: str | None = None
    result: runner.JobResult | None = None


class InlineJobs:
    """Runs a chat's jobs in this process (the CLI): until done, or until they wait for approval."""

    def start(self, spec, settings: Settings, on_event) -> runner.JobResult:
        return runner.run_spec(spec, settings, on_event)

    def decide(self, job_id: str, approved: bool, settings: Settings, on_event) -> runner.JobResult:
        return runner.decide(job_id, approved, settings, on_event)


class QueuedJobs:
    """Hands a chat's jobs to the worker (the API): returns at once with the job queued."""

    def start(self, spec, settings: Settings, on_event) -> runner.JobResult:
        return runner.JobResult(job_id=runner.create_job(spec, settings), status="queued", name=spec.name)

    def decide(self, job_id: str, approved: bool, settings: Settings, on_event) -> runner.JobResult:
        return runner.queue_decision(job_id, approved, settings, by="chat")


class ChatSession:
    """One conversation; `send` is the whole interface."""

    def __init__(self, settings: Settings, session_id: str, state: dict[str, Any], jobs: InlineJobs | QueuedJobs,
                 access: DataAccess):
        self.settings = settings
        self.id = session_id
        self.state = state
        self.jobs = jobs
        self.access = access

    @classmethod
    def open(cls, settings: Settings | None = None, session_id: str | None = None,
             jobs: InlineJobs | QueuedJobs | None = None, caller: KeyInfo | None = None) -> ChatSession:
        """The session `session_id` (a new one when None or unknown). `caller` is the API key of a remote user (API,
        web UI), who reads only the data folder and uploads and continues only sessions that key started; None is
        the local CLI user, who reads any path."""
        settings = settings or Settings()
        settings.ensure_home()
        owner = caller.id if caller is not None else None
        with session_scope(settings.db_url) as db:
            row = queries.get_chat_session(db, session_id) if session_id else None
            if row is not None and caller is not None and row.owner_key_id != owner:
                raise Forbidden(f"chat session '{session_id}' belongs to another key; start a new one")
            if row is None:
                if session_id is not None and (len(session_id) > 32 or not session_id.isalnum()):
                    raise SpecError("a session id is up to 32 letters or digits")
                row = ChatSessionRow(id=session_id or uuid.uuid4().hex, state={}, owner_key_id=owner)
                db.add(row)
            access = DataAccess.local() if caller is None else DataAccess.remote(settings)
            return cls(settings, row.id, dict(row.state or {}), jobs or InlineJobs(), access)

    def send(self, text: str, *, approve: bool = False, on_event: runner.EventHandler | None = None) -> ChatReply:
        text = "".join(ch for ch in text if ch.isprintable() or ch in "\n\t").strip()
        if len(text) > MAX_MESSAGE_CHARS:
            raise SpecError(f"message too long ({len(text)} characters; at most {MAX_MESSAGE_CHARS})")
        if not text and not approve:
            raise SpecError("empty message")
        self._record("user", text or "(approve)")
        reply = self._turn(text, approve, on_event)
        if self.access.roots is not None:  # a remote caller sees files as they name them, not the server's paths
            reply.text, reply.plan = hide_paths(reply.text, self.settings), hide_paths(reply.plan, self.settings)
        self._record("assistant", reply.text, {"planner": reply.planner, "fell_back": reply.fell_back,
                                               "job_id": reply.job_id, "status": reply.status})
        self._save()
        return reply

    # --- one turn -------------------------------------------------------------------

    def _turn(self, text: str, approve: bool, on_event) -> ChatReply:
        intent = parse_message(text) if text else ChatIntent(approve=True)
        pending = self.state.get("job_id")
        if pending:
            status = runner.find_job(self.settings, pending).status
            if status != runner.AWAITING_APPROVAL:
                if status in ("queued", "running"):
                    return ChatReply(self.id, f"Job {pending[:12]} is {status}; its plan is not ready for approval yet.",
                                     "deterministic", job_id=pending, status=status)
                self.state["job_id"] = None
            elif approve or intent.approve:
                return self._decide(pending, True, on_event)
            elif intent.reject:
                return self._decide(pending, False, on_event)
            else:
                self.jobs.decide(pending, False, self.settings, on_event)  # new instructions replace the plan
                self.state["job_id"] = None
        if intent.approve or intent.reject:
            return ChatReply(self.id, "No plan is waiting for approval. Which file, and which column to predict?",
                             "deterministic")
        if self.settings.llm_configured:
            return self._llm_turn(text, approve, on_event)
        return self._rule_turn(text, approve, on_event)

    def _rule_turn(self, text: str, approve: bool, on_event, fell_back: str | None = None) -> ChatReply:
        earlier = ChatIntent.model_validate(self.state.get("intent") or {})
        intent = merge(earlier, parse_message(text))
        columns = self._columns(intent.data)
        if columns is not None and intent.target is not None:
            intent = merge(earlier, parse_message(text, columns))
        self.state["intent"] = intent.model_dump()
        note = f"(The LLM planner failed: {fell_back}. I used the built-in planner.) " if fell_back else ""
        question = missing_question(intent, columns)
        if question is None and columns is None:
            question = f"I cannot read '{intent.data}'. Which file should I use?"
        if question:
            return ChatReply(self.id, note + question, "deterministic", fell_back)
        options = {k: v for k, v in intent.model_dump().items()
                   if k not in ("approve", "reject") and v not in (None, [])}
        problems = check_against_data(options, columns, None)
        if problems:
            return ChatReply(self.id, note + "; ".join(problems), "deterministic", fell_back)
        reply = self._start(options, approve, on_event)
        reply.text, reply.fell_back = note + reply.text, fell_back
        return reply

    def _llm_turn(self, text: str, approve: bool, on_event) -> ChatReply:
        from poise.agents.llm import LLM, CallTracer
        from poise.agents.llm_planner import PlannerFailed, ground_turn, plan_turn
        from poise.agents.tools import PlannerTools

        plans = self.state.setdefault("plans", {})
        tools = PlannerTools(self.settings, plans, self.access, validate_spec=self._validate_options)
        llm = LLM(self.settings.llm_config, CallTracer(self.settings.db_url, session_id=self.id))
        try:
            outcome = plan_turn(llm, self.state.get("llm_history", []), text, tools)
        except PlannerFailed as failure:
            llm.tracer.mark_fault(str(failure))  # a reply that came back but could not be used
            return self._rule_turn(text, approve, on_event, fell_back=str(failure))
        if outcome.start_plan_id:
            self.state["llm_history"] = outcome.messages[-40:]
            reply = self._start(plans[outcome.start_plan_id], approve, on_event)
            reply.planner = "llm"
            return reply
        grounding = ground_turn(outcome, text, self._job_records())
        if grounding.fault:
            llm.tracer.mark_fault(grounding.detail or grounding.fault)
        if grounding.fall_back:  # the faulty exchange stays out of the history the LLM sees next turn
            return self._rule_turn(text, approve, on_event, fell_back=grounding.fault)
        self.state["llm_history"] = self._as_shown(outcome.messages, grounding.text)[-40:]
        return ChatReply(self.id, grounding.text, "llm")

    def _job_records(self) -> list[dict[str, Any]]:
        """This session's jobs (the latest 20) as records an LLM reply may quote: status, options and, for each
        registered version, its metrics and gate verdict."""
        with session_scope(self.settings.db_url) as db:
            jobs = queries.session_jobs(db, self.id, limit=20)
            return [{"job_id": job.id, "name": job.name, "status": job.status, "error": job.error, "spec": job.spec,
                     "versions": [{"version": v.version, "metrics": v.metrics, "threshold": v.threshold,
                                   "gate": v.gate_reason, "champion_at_registration": v.champion_at_registration}
                                  for v in job.model_versions]}
                    for job in jobs]

    @staticmethod
    def _as_shown(messages: list[dict[str, Any]], shown: str) -> list[dict[str, Any]]:
        """The turn's messages with the LLM's final text as the user saw it (sentences with ungrounded numbers
        removed), so the next turn does not build on what Poise refused to show."""
        last = messages[-1] if messages else {}
        if last.get("role") != "assistant" or last.get("tool_calls") or last.get("content") == shown:
            return messages
        return [*messages[:-1], {**last, "content": shown}]

    # --- jobs -------------------------------------------------------------------------

    def _validate_options(self, options: dict[str, Any]) -> None:
        runner.make_spec(self.access.resolve(options["data"]), options["target"], self.settings,
                         **self._spec_options(options))

    @staticmethod
    def _spec_options(options: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in options.items() if k not in ("data", "target")}

    def _start(self, options: dict[str, Any], approve: bool, on_event) -> ChatReply:
        spec_options = {**self._spec_options(options), "session_id": self.id, "require_approval": not approve}
        try:
            spec = runner.make_spec(self.access.resolve(options["data"]), options["target"], self.settings,
                                    **spec_options)
        except PoiseError as problem:
            return ChatReply(self.id, str(problem), "deterministic")
        result = self.jobs.start(spec, self.settings, on_event)
        return self._job_reply(result, describe(spec.model_dump()))

    def _decide(self, job_id: str, approved: bool, on_event) -> ChatReply:
        result = self.jobs.decide(job_id, approved, self.settings, on_event)
        return self._job_reply(result, [])

    def _job_reply(self, result: runner.JobResult, plan: list[str]) -> ChatReply:
        waiting = (runner.AWAITING_APPROVAL, "queued")
        self.state["job_id"] = result.job_id if result.status in waiting else None
        if result.status == "queued":
            self.state["intent"] = {}
            return ChatReply(self.id, f"Job {result.job_id[:12]} is queued; a worker runs it. "
                             f"Its plan and results appear at /api/v1/jobs/{result.job_id}.", "deterministic",
                             plan=plan, job_id=result.job_id, status=result.status)
        if result.status == runner.AWAITING_APPROVAL:
            self.state["intent"] = {}
            lines = "\n".join(f"- {line}" for line in result.plan)
            text = f"Here is the plan for job {result.job_id[:12]}:\n{lines}\nReply 'yes' to run it, or tell me what to change."
            return ChatReply(self.id, text, "deterministic", plan=result.plan, job_id=result.job_id, status=result.status)
        if result.status == "succeeded":
            self.state["intent"] = {}
            text = self._with_gate_steps(result, result.summary or f"Job {result.job_id[:12]} succeeded.")
            return ChatReply(self.id, text, "deterministic", plan=plan, job_id=result.job_id, status=result.status,
                             result=result)
        if result.status == "cancelled":
            return ChatReply(self.id, f"Cancelled job {result.job_id[:12]}. What should I do instead?", "deterministic",
                             job_id=result.job_id, status=result.status)
        return ChatReply(self.id, f"Job {result.job_id[:12]} {result.status}: {result.error}", "deterministic",
                         job_id=result.job_id, status=result.status, result=result)

    def _with_gate_steps(self, result: runner.JobResult, text: str) -> str:
        """The reply for a finished job: its summary (the built-in planner's or the LLM's), followed by why the
        gate refused the version and the exact next steps whenever the summary does not already carry them."""
        from poise.agents.summary import facts_steps

        if not result.gate or result.gate.get("passed") or result.is_champion:
            return text
        spec = runner.find_job(self.settings, result.job_id).spec
        return facts_steps(text, spec, result.gate, result.metrics, result.model_version)

    # --- persistence ------------------------------------------------------------------

    def _columns(self, data: str | None) -> list[str] | None:
        if not data:
            return None
        try:
            table, _ = load_table(self.access.resolve(data), max_bytes=self.settings.max_file_bytes)
        except PoiseError:
            return None
        return [str(c) for c in table.columns]

    def _record(self, role: str, content: str, meta: dict[str, Any] | None = None) -> None:
        with session_scope(self.settings.db_url) as db:
            db.add(ChatMessage(session_id=self.id, role=role, content=content, meta=meta))

    def _save(self) -> None:
        with session_scope(self.settings.db_url) as db:
            row = queries.get_chat_session(db, self.id)
            row.state, row.job_id, row.updated_at = dict(self.state), self.state.get("job_id"), datetime.now(UTC)
