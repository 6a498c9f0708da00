"""The one door to the LLM: an OpenAI-compatible chat client that fails in a known way and leaves a trace.

Why this module exists: the planner, reviewer and chat layer all talk to whatever
OpenAI-compatible endpoint the user configured (OpenAI itself, or a local
llama.cpp / vLLM / Ollama server). Each of them needs the same three things, so
they live here once:

* one way to fail: every transport or protocol problem (HTTP error, timeout,
  unreachable server, a body that is not a chat completion) becomes
  `LLMUnavailable` with an `outcome` code, so callers can fall back to the
  deterministic path instead of crashing on a dozen `openai` exception types;
* one trace: every call, successful or not, is written to the `llm_calls` table
  (prompt, tools offered, raw reply, tokens, latency, outcome) and kept in memory
  so it can be logged to MLflow as `llm_trace.jsonl`; a reply that arrived but that
  Poise refused to use or show (see `agents.llm_planner`) is marked outcome "fault";
* the quirks of local servers handled in one place (llama.cpp rejects
  `content: null` on assistant messages that carry tool calls).

Retries are left to the `openai` client (`LLMConfig.max_retries`; it retries
timeouts, connection errors, 408/409/429 and 5xx); one `LLM.chat` call is one
trace record whatever the number of attempts, and its latency includes them.

The endpoint comes in as an `LLMConfig`, built by the caller (the pipelines layer
builds it from its settings: `Settings.llm_config`), so this module depends on no
layer above it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import openai

from poise.registry.db import session_scope
from poise.registry.models import LLMCall

MAX_ERROR_CHARS = 2_000
FAULT = "fault"  # the outcome of a call whose reply was received but could not be used or shown


@dataclass(frozen=True)
class LLMConfig:
    """The OpenAI-compatible endpoint to talk to and how patiently."""

    model: str
    base_url: str | None  # None: OpenAI's own endpoint (or OPENAI_BASE_URL)
    api_key: str | None  # None: OPENAI_API_KEY, else a placeholder that local servers ignore
    timeout: float  # seconds per request
    max_retries: int  # retries of a failed request, by the `openai` client

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("no LLM configured: set POISE_LLM_MODEL (and POISE_LLM_BASE_URL for a local server)")


class LLMUnavailable(Exception):
    """The LLM could not give a usable answer; `outcome` says how it failed.

    `outcome` is one of "http_error", "timeout", "connection_error", "invalid_response".
    """

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text as sent by the model; may be malformed


@dataclass
class LLMReply:
    content: str
    tool_calls: list[ToolCall]
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float

    def to_message(self) -> dict[str, Any]:
        """The reply as an assistant message, ready to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [_tool_call_dict(call) for call in self.tool_calls]
        return message


def make_client(config: LLMConfig) -> openai.OpenAI:
    """An `openai.OpenAI` client for the configured endpoint."""
    return openai.OpenAI(
        # Local servers ignore the key, but the client refuses to start without one.
        api_key=config.api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
        base_url=config.base_url,
        timeout=config.timeout,
        max_retries=config.max_retries,
    )


class CallTracer:
    """Writes one `llm_calls` row per LLM call and keeps the same records in memory.

    `job_id` may be set later, once the job exists; calls recorded before keep `None`.
    """

    def __init__(self, db_url: str, session_id: str | None = None, job_id: str | None = None) -> None:
        self.db_url = db_url
        self.session_id = session_id
        self.job_id = job_id
        self.records: list[dict[str, Any]] = []
        self._row_ids: list[int] = []  # the `llm_calls` id of each record, to mark a fault on it later

    def record(
        self,
        *,
        purpose: str,
        model: str,
        messages: list[dict],
        tools: list[dict] | None,
        reply: LLMReply | None,
        outcome: str,
        error: str | None,
        latency_ms: float,
    ) -> None:
        """Store one call (a failed one has `reply=None` and an `error`)."""
        tool_calls = [_tool_call_dict(call) for call in reply.tool_calls] if reply else None
        created_at = datetime.now(UTC)
        record = _jsonable({
            "created_at": created_at.isoformat(),
            "session_id": self.session_id,
            "job_id": self.job_id,
            "purpose": purpose,
            "model": model,
            "request": {"messages": messages, "tools": tools},
            "response": {"content": reply.content, "tool_calls": tool_calls} if reply else None,
            "tool_calls": tool_calls or None,
            "prompt_tokens": reply.prompt_tokens if reply else None,
            "completion_tokens": reply.completion_tokens if reply else None,
            "latency_ms": latency_ms,
            "outcome": outcome,
            "error": error,
        })
        with session_scope(self.db_url) as session:
            row = LLMCall(**{**record, "created_at": created_at})
            session.add(row)
            session.flush()
            self._row_ids.append(row.id)
        self.records.append(record)

    def mark_fault(self, detail: str) -> bool:
        """Mark the last call an LLM fault: the endpoint answered (outcome "ok"), but Poise could not use or show
        the reply (an ungrounded number, results claimed with no job, a request for work answered without acting,
        an invalid tool call). Its row and record get outcome "fault" and `detail` as the error; a call that
        already failed at the endpoint keeps its outcome. Returns whether a call was marked."""
        if not self.records or self.records[-1]["outcome"] != "ok":
            return False
        detail = _clip(detail)
        with session_scope(self.db_url) as session:
            row = session.get(LLMCall, self._row_ids[-1])
            row.outcome, row.error = FAULT, detail
        self.records[-1].update(outcome=FAULT, error=detail)
        return True

    def to_jsonl(self) -> str:
        """The records as JSON lines, one call per line (the MLflow `llm_trace.jsonl` artifact)."""
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in self.records)


class LLM:
    """Chat completions against the configured endpoint, traced, with failures as `LLMUnavailable`."""

    def __init__(self, config: LLMConfig, tracer: CallTracer) -> None:
        self._client = make_client(config)
        self._model: str = config.model
        self.tracer = tracer

    @property
    def model(self) -> str:
        return self._model

    def chat(
        self,
        messages: list[dict],
        *,
        tools: list[dict] | None = None,
        tool_choice: str | dict | None = None,
        purpose: str,
    ) -> LLMReply:
        """One chat completion at temperature 0; raises `LLMUnavailable` on any endpoint failure."""
        sent = [_sanitise(message) for message in messages]
        kwargs: dict[str, Any] = {"model": self._model, "messages": sent, "temperature": 0}
        if tools:
            kwargs["tools"] = tools
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice

        start = time.perf_counter()
        try:
            completion = self._client.chat.completions.create(**kwargs)
            latency_ms = (time.perf_counter() - start) * 1000
            reply = _parse(completion, latency_ms)
        except (openai.APIError, json.JSONDecodeError, LLMUnavailable) as exc:
            latency_ms = (time.perf_counter() - start) * 1000
            failure = self._as_unavailable(exc)
            self.tracer.record(
                purpose=purpose, model=self._model, messages=sent, tools=tools, reply=None,
                outcome=failure.outcome, error=str(failure), latency_ms=latency_ms,
            )
            raise failure from exc
        self.tracer.record(
            purpose=purpose, model=self._model, messages=sent, tools=tools, reply=reply,
            outcome="ok", error=None, latency_ms=latency_ms,
        )
        return reply

    def _as_unavailable(self, exc: Exception) -> LLMUnavailable:
        endpoint = str(self._client.base_url)
        if isinstance(exc, LLMUnavailable):
            return exc
        # APITimeoutError subclasses APIConnectionError: test it first.
        if isinstance(exc, openai.APITimeoutError):
            message = (
                f"LLM request to {endpoint} timed out after {self._client.timeout} s "
                f"({self._client.max_retries} retries)"
            )
            return LLMUnavailable("timeout", message)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return LLMUnavailable("connection_error", _clip(f"cannot reach LLM endpoint {endpoint}: {cause}"))
        if isinstance(exc, openai.APIStatusError):
            return LLMUnavailable(
                "http_error", _clip(f"LLM endpoint {endpoint} answered HTTP {exc.status_code}: {exc.message}")
            )
        # openai.APIResponseValidationError, or a body that claims to be JSON and is not.
        return LLMUnavailable(
            "invalid_response", _clip(f"LLM endpoint {endpoint} sent a body that is not a chat completion: {exc}")
        )


def _sanitise(message: dict) -> dict:
    """A copy of `message` that local servers accept: assistant tool-call messages get content "" not null."""
    if message.get("role") == "assistant" and message.get("tool_calls") and message.get("content") is None:
        return {**message, "content": ""}
    return dict(message)


def _parse(completion: Any, latency_ms: float) -> LLMReply:
    """Read an `openai` ChatCompletion; anything that is not one raises `LLMUnavailable("invalid_response")`.

    The client does not validate bodies: a non-JSON content type comes back as a str,
    and missing fields only show up when read.
    """
    try:
        message = completion.choices[0].message
        content = message.content
        if content is not None and not isinstance(content, str):
            raise TypeError(f"message content is {type(content).__name__}, not a string")
        tool_calls = []
        for index, call in enumerate(message.tool_calls or []):
            arguments = call.function.arguments
            if isinstance(arguments, dict):  # some local servers send an object, not JSON text
                arguments = json.dumps(arguments)
            if not isinstance(call.function.name, str) or not isinstance(arguments, str):
                raise TypeError("tool call without a string name and arguments")
            call_id = getattr(call, "id", None) or f"call_{index}"  # not every server sends one
            tool_calls.append(ToolCall(id=call_id, name=call.function.name, arguments=arguments))
        usage = getattr(completion, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        snippet = _clip(repr(completion), 300)
        raise LLMUnavailable("invalid_response", f"the LLM reply is not a chat completion ({exc}): {snippet}") from exc
    return LLMReply(
        content=content or "",
        tool_calls=tool_calls,
        prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
        completion_tokens=completion_tokens if isinstance(completion_tokens, int) else None,
        latency_ms=latency_ms,
    )


def _tool_call_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _jsonable(value: Any) -> Any:
    """`value` as plain JSON types (anything else as its str), so DB rows and JSONL lines agree."""
    return json.loads(json.dumps(value, default=str))


def _clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
