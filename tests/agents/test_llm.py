"""Tests of `agents.llm` through the real `openai` client over real HTTP.

The endpoint is `tests/llm_server.py`'s scripted server on 127.0.0.1 (respx and
httpx mocks do not intercept openai 3.x, and patching the client would skip the
code under test). Every call is checked in the `llm_calls` table too.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import sys
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from poise.agents.llm import LLM, CallTracer, LLMConfig, LLMUnavailable, make_client
from poise.pipelines.settings import Settings
from poise.registry.db import dispose_engine, session_scope
from poise.registry.models import LLMCall


def _load_llm_server():
    # By path: with --import-mode=importlib the tests folder is not importable as a package.
    name = "poise_tests_llm_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "llm_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_llm_server = _load_llm_server()
ScriptedLLMServer = _llm_server.ScriptedLLMServer
tool_call = _llm_server.tool_call

HOSTILE = "'; DROP TABLE llm_calls;-- <script>alert(\"x\")</script> \\ \"q\" 日本語 🚀\n\t"
FAST_RETRY = {"retry-after-ms": "10"}  # the client honours it instead of its ~0.5 s backoff
SET_BUDGET = {
    "type": "function",
    "function": {
        "name": "set_budget",
        "description": "Set the training time budget.",
        "parameters": {"type": "object", "properties": {"seconds": {"type": "integer"}}, "required": ["seconds"]},
    },
}


@pytest.fixture
def make_llm(tmp_path: Path, llm_server: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch):
    """`make_llm(**settings)` -> (LLM, tracer) against the scripted server, tracing to a SQLite file."""
    db_url = f"sqlite:///{tmp_path / 'poise.db'}"
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    def make(**overrides) -> tuple[LLM, CallTracer]:
        fields = {
            "home": tmp_path,
            "database_url": db_url,
            "llm_model": "test-model",
            "llm_base_url": llm_server.base_url,
            "llm_max_retries": 0,
            "llm_timeout": 10.0,
            **overrides,
        }
        settings = Settings(**fields)
        tracer = CallTracer(settings.db_url, session_id="s" * 32)
        return LLM(settings.llm_config, tracer), tracer

    try:
        yield make
    finally:
        dispose_engine(db_url)


def _rows(tracer: CallTracer) -> list[LLMCall]:
    with session_scope(tracer.db_url) as session:
        return list(session.scalars(select(LLMCall).order_by(LLMCall.id)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_text_reply(make_llm, llm_server) -> None:
    llm, tracer = make_llm()
    llm_server.push_text("Use f1 and a 60 s budget.")
    messages = [{"role": "system", "content": "You plan AutoML jobs."}, {"role": "user", "content": HOSTILE}]

    reply = llm.chat(messages, purpose="plan")

    assert reply.content == "Use f1 and a 60 s budget."
    assert reply.tool_calls == []
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.latency_ms > 0
    assert llm.model == "test-model"
    (sent,) = llm_server.requests
    assert sent["model"] == "test-model" and sent["temperature"] == 0
    assert sent["messages"] == messages
    assert "tools" not in sent and "tool_choice" not in sent

    (row,) = _rows(tracer)
    assert (row.outcome, row.purpose, row.model, row.error) == ("ok", "plan", "test-model", None)
    assert row.session_id == "s" * 32 and row.job_id is None
    assert row.request == {"messages": messages, "tools": None}
    assert row.response == {"content": "Use f1 and a 60 s budget.", "tool_calls": []}
    assert row.tool_calls is None
    assert (row.prompt_tokens, row.completion_tokens) == (reply.prompt_tokens, reply.completion_tokens)
    assert row.latency_ms == pytest.approx(reply.latency_ms)


def test_tool_call_reply(make_llm, llm_server) -> None:
    llm, tracer = make_llm()
    llm_server.push_tool_call("set_budget", {"seconds": 60, "note": HOSTILE}, call_id="call_abc")

    reply = llm.chat(
        [{"role": "user", "content": "plan"}],
        tools=[SET_BUDGET],
        tool_choice={"type": "function", "function": {"name": "set_budget"}},
        purpose="plan",
    )

    assert reply.content == ""
    (call,) = reply.tool_calls
    assert (call.id, call.name) == ("call_abc", "set_budget")
    assert json.loads(call.arguments) == {"seconds": 60, "note": HOSTILE}
    (sent,) = llm_server.requests
    assert sent["tools"] == [SET_BUDGET]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "set_budget"}}

    (row,) = _rows(tracer)
    assert row.outcome == "ok"
    assert row.request["tools"] == [SET_BUDGET]
    expected = [{"id": "call_abc", "type": "function", "function": {"name": "set_budget", "arguments": call.arguments}}]
    assert row.tool_calls == expected
    assert row.response == {"content": "", "tool_calls": expected}


def test_several_tool_calls_keep_malformed_arguments_raw(make_llm, llm_server) -> None:
    llm, _ = make_llm()
    llm_server.push_tool_calls([("set_budget", {"seconds": 30}), ("set_metric", '{"metric": "f1",')])

    reply = llm.chat([{"role": "user", "content": "plan"}], tools=[SET_BUDGET], tool_choice="auto", purpose="plan")

    assert [(c.name, c.arguments) for c in reply.tool_calls] == [
        ("set_budget", '{"seconds": 30}'),
        ("set_metric", '{"metric": "f1",'),
    ]
    assert len({c.id for c in reply.tool_calls}) == 2
    assert llm_server.requests[0]["tool_choice"] == "auto"


def test_tool_loop_with_responder_and_null_content_sent_as_empty_string(make_llm, llm_server) -> None:
    llm, tracer = make_llm()
    llm_server.push_tool_call("count_rows", {})

    def echo_tool_result(request: dict) -> dict:
        tool_message = next(m for m in request["messages"] if m["role"] == "tool")
        numbers = re.findall(r"\d+", tool_message["content"])
        return {"content": f"The table has {numbers[0]} rows."}

    llm_server.push_responder(echo_tool_result)

    messages: list[dict] = [{"role": "user", "content": "How many rows?"}]
    first = llm.chat(messages, tools=[SET_BUDGET], purpose="chat")
    (call,) = first.tool_calls
    assistant = {**first.to_message(), "content": None}  # as an OpenAI-style history would hold it
    tool_result = {"role": "tool", "tool_call_id": call.id, "content": '{"rows": 9817}'}
    messages += [assistant, tool_result]
    second = llm.chat(messages, tools=[SET_BUDGET], purpose="chat")

    assert second.content == "The table has 9817 rows."
    assert assistant["content"] is None  # the caller's message is not modified
    sent_assistant = llm_server.requests[1]["messages"][1]
    assert sent_assistant["role"] == "assistant" and sent_assistant["content"] == ""
    assert sent_assistant["tool_calls"] == [
        {"id": call.id, "type": "function", "function": {"name": "count_rows", "arguments": "{}"}}
    ]
    assert llm_server.requests[1]["messages"][2] == tool_result
    assert _rows(tracer)[1].request["messages"][1]["content"] == ""  # the trace holds what was sent


def test_http_500_without_retries(make_llm, llm_server) -> None:
    llm, tracer = make_llm(llm_max_retries=0)
    llm_server.push_http_error(500, '{"error": {"message": "model crashed"}}')

    with pytest.raises(LLMUnavailable) as info:
        llm.chat([{"role": "user", "content": "plan"}], purpose="plan")

    assert info.value.outcome == "http_error"
    assert "500" in str(info.value) and "model crashed" in str(info.value)
    assert len(llm_server.requests) == 1
    (row,) = _rows(tracer)
    assert (row.outcome, row.error) == ("http_error", str(info.value))
    assert row.response is None and row.prompt_tokens is None and row.latency_ms > 0


def test_one_retry_after_500_succeeds(make_llm, llm_server) -> None:
    llm, tracer = make_llm(llm_max_retries=1)
    llm_server.push_http_error(503, headers=FAST_RETRY)
    llm_server.push_text("second attempt")

    reply = llm.chat([{"role": "user", "content": "plan"}], purpose="plan")

    assert reply.content == "second attempt"
    assert len(llm_server.requests) == 2
    assert llm_server.requests[0] == llm_server.requests[1]
    assert [row.outcome for row in _rows(tracer)] == ["ok"]  # one call, whatever the attempts


def test_retries_exhausted_is_http_error(make_llm, llm_server) -> None:
    llm, _ = make_llm(llm_max_retries=1)
    llm_server.push_http_error(500, headers=FAST_RETRY)
    llm_server.push_http_error(502, headers=FAST_RETRY)

    with pytest.raises(LLMUnavailable) as info:
        llm.chat([{"role": "user", "content": "plan"}], purpose="plan")

    assert info.value.outcome == "http_error" and "502" in str(info.value)
    assert len(llm_server.requests) == 2


def test_timeout(make_llm, llm_server) -> None:
    llm, tracer = make_llm(llm_timeout=0.5, llm_max_retries=0)
    llm_server.push_sleep(2)

    with pytest.raises(LLMUnavailable) as info:
        llm.chat([{"role": "user", "content": "plan"}], purpose="review")

    assert info.value.outcome == "timeout"
    assert "timed out" in str(info.value)
    (row,) = _rows(tracer)
    assert (row.outcome, row.purpose) == ("timeout", "review")
    assert 400 < row.latency_ms < 1900


def test_connection_refused(make_llm) -> None:
    llm, tracer = make_llm(llm_base_url=f"http://127.0.0.1:{_free_port()}/v1")

    with pytest.raises(LLMUnavailable) as info:
        llm.chat([{"role": "user", "content": "plan"}], purpose="plan")

    assert info.value.outcome == "connection_error"
    assert "cannot reach" in str(info.value)
    assert [row.outcome for row in _rows(tracer)] == ["connection_error"]


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_garbage_body_is_invalid_response(make_llm, llm_server, content_type: str) -> None:
    # Claiming JSON: the client's JSON decoding fails. Plain text: the client returns
    # the text as is, and reading it as a completion fails. Both: "invalid_response".
    llm, tracer = make_llm()
    llm_server.push_garbage("<html>not json</html>", content_type=content_type)

    with pytest.raises(LLMUnavailable) as info:
        llm.chat([{"role": "user", "content": "plan"}], purpose="plan")

    assert info.value.outcome == "invalid_response"
    assert [row.outcome for row in _rows(tracer)] == ["invalid_response"]


def test_completion_without_choices_is_invalid_response(make_llm, llm_server) -> None:
    llm, _ = make_llm()
    llm_server.push_json({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []})

    with pytest.raises(LLMUnavailable) as info:
        llm.chat([{"role": "user", "content": "plan"}], purpose="plan")

    assert info.value.outcome == "invalid_response"


def test_exhausted_script_fails_loudly(make_llm, llm_server) -> None:
    llm, _ = make_llm(llm_max_retries=2)

    with pytest.raises(LLMUnavailable) as info:
        llm.chat([{"role": "user", "content": "plan"}], purpose="plan")

    assert info.value.outcome == "http_error" and "script exhausted" in str(info.value)
    assert len(llm_server.requests) == 1  # x-should-retry: false, no waiting on retries


def test_every_call_traced_in_db_and_jsonl(make_llm, llm_server) -> None:
    llm, tracer = make_llm()
    llm_server.push_text("plan A")
    llm_server.push_http_error(500)
    llm_server.push_tool_call("set_budget", {"seconds": 60})

    llm.chat([{"role": "user", "content": HOSTILE}], purpose="plan")
    with pytest.raises(LLMUnavailable):
        llm.chat([{"role": "user", "content": "again"}], purpose="plan")
    tracer.job_id = "j" * 32  # the job now exists
    llm.chat([{"role": "user", "content": "budget?"}], tools=[SET_BUDGET], purpose="review")

    rows = _rows(tracer)
    assert [(r.purpose, r.outcome, r.job_id) for r in rows] == [
        ("plan", "ok", None),
        ("plan", "http_error", None),
        ("review", "ok", "j" * 32),
    ]
    assert all(r.latency_ms > 0 and r.session_id == "s" * 32 for r in rows)
    assert rows[0].request["messages"][0]["content"] == HOSTILE
    assert rows[1].prompt_tokens is None and rows[2].prompt_tokens > 0

    lines = tracer.to_jsonl().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert records == tracer.records
    for record, row in zip(records, rows, strict=True):
        assert (record["outcome"], record["purpose"], record["job_id"]) == (row.outcome, row.purpose, row.job_id)
        assert record["request"] == row.request and record["response"] == row.response
        assert record["tool_calls"] == row.tool_calls
        assert record["latency_ms"] == pytest.approx(row.latency_ms)
        assert datetime.fromisoformat(record["created_at"]) == row.created_at
    assert records[0]["request"]["messages"][0]["content"] == HOSTILE


def test_make_client(tmp_path: Path, llm_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert Settings(home=tmp_path).llm_config is None
    with pytest.raises(ValueError, match="POISE_LLM_MODEL"):
        LLMConfig(model="", base_url=None, api_key=None, timeout=60.0, max_retries=1)

    local = make_client(
        Settings(home=tmp_path, llm_model="m", llm_base_url=llm_server.base_url, llm_timeout=7).llm_config)
    assert local.api_key == "not-needed"
    assert str(local.base_url).rstrip("/") == llm_server.base_url
    assert local.timeout == 7 and local.max_retries == 1

    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    hosted = make_client(Settings(home=tmp_path, llm_model="gpt-x", llm_max_retries=3).llm_config)
    assert hosted.api_key == "sk-env" and hosted.max_retries == 3
    assert str(hosted.base_url).startswith("https://api.openai.com")
    assert make_client(Settings(home=tmp_path, llm_model="gpt-x", llm_api_key="sk-set").llm_config).api_key == "sk-set"


def test_mark_fault_marks_only_the_last_call_that_answered(make_llm, llm_server) -> None:
    llm, tracer = make_llm(llm_max_retries=0)
    llm_server.push_text("first")
    llm_server.push_text("The model reached a macro-F1 of 0.991.")
    llm.chat([{"role": "user", "content": "a"}], purpose="plan")
    llm.chat([{"role": "user", "content": "b"}], purpose="plan")

    assert tracer.mark_fault("claim_without_job: The model reached a macro-F1 of 0.991.")

    rows = _rows(tracer)
    assert [(row.outcome, row.error) for row in rows] == [
        ("ok", None), ("fault", "claim_without_job: The model reached a macro-F1 of 0.991.")]
    assert rows[1].response["content"] == "The model reached a macro-F1 of 0.991."  # the reply stays traced
    assert [r["outcome"] for r in tracer.records] == ["ok", "fault"]  # and so in llm_trace.jsonl
    assert json.loads(tracer.to_jsonl().splitlines()[1])["error"].startswith("claim_without_job")

    llm_server.push_http_error(500)
    with pytest.raises(LLMUnavailable):
        llm.chat([{"role": "user", "content": "c"}], purpose="plan")
    assert not tracer.mark_fault("unusable")  # a call that failed at the endpoint keeps its outcome
    assert [row.outcome for row in _rows(tracer)] == ["ok", "fault", "http_error"]
