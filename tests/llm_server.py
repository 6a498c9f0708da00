"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests of the LLM path.

Why this exists: `openai` 3.x is built on `httpx2`, which respx and httpx's
`MockTransport` do not intercept, and patching the client would skip exactly
the code under test (serialisation, retries, timeouts, error mapping). So tests
talk real HTTP to this server, which answers `POST /v1/chat/completions` from a
queue of scripted responses and records every request body.

    server = ScriptedLLMServer()
    server.push_tool_call("set_budget", {"seconds": 60})
    server.push_text("Done.")
    ... Settings(llm_model="test-model", llm_base_url=server.base_url) ...
    server.requests[-1]["messages"]    # what the client sent
    server.close()

Each request consumes one scripted response; with the queue empty the server
answers HTTP 500 "script exhausted" (with `x-should-retry: false`), so a test
that scripts too few responses fails loudly instead of hanging. Every `push_*`
takes `delay=` seconds to wait before answering (to provoke client timeouts).

Responses follow the OpenAI `chat.completion` shape. Token counts in `usage` are
deterministic estimates (characters / 4), not real tokenisation.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

MODEL = "test-model"

# (status, headers, body) for one HTTP answer, computed from the request body.
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class _Step:
    delay: float
    answer: Callable[[dict], Answer]


def _json_answer(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def _estimate_tokens(value: Any) -> int:
    return len(json.dumps(value)) // 4 + 1


def tool_call(name: str, arguments: dict | str, call_id: str | None = None) -> dict:
    """One entry of an assistant message's `tool_calls`; a str `arguments` is sent verbatim (may be malformed)."""
    return {
        "id": call_id or f"call_{name}",
        "type": "function",
        "function": {"name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
    }


class ScriptedLLMServer:
    """OpenAI-compatible chat server answering from a script; see the module docstring."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._script: deque[_Step] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-llm", daemon=True
        )
        self._thread.start()

    # --- scripting -------------------------------------------------------------

    def push_text(self, content: str, *, delay: float = 0.0) -> None:
        """Answer with an assistant text message."""
        self._push(delay, lambda request: self._completion(request, {"content": content}))

    def push_tool_call(
        self, name: str, arguments: dict | str, call_id: str | None = None, *, delay: float = 0.0
    ) -> None:
        """Answer with one tool call (content null, as OpenAI does)."""
        self.push_tool_calls([(name, arguments)], call_ids=[call_id], delay=delay)

    def push_tool_calls(
        self,
        calls: list[tuple[str, dict | str]],
        *,
        call_ids: list[str | None] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer with several tool calls in one assistant message; ids default to `call_<name>_<n>`."""
        ids = call_ids or [None] * len(calls)
        entries = [
            tool_call(name, arguments, call_id or f"call_{name}_{n}")
            for n, ((name, arguments), call_id) in enumerate(zip(calls, ids, strict=True))
        ]
        self._push(delay, lambda request: self._completion(request, {"content": None, "tool_calls": entries}))

    def push_http_error(
        self,
        status: int = 500,
        body: str = '{"error": {"message": "scripted failure", "type": "server_error"}}',
        *,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer with an HTTP error. `headers` e.g. {"retry-after-ms": "10"} to make client retries fast."""
        answer = (status, {"Content-Type": "application/json", **(headers or {})}, body.encode())
        self._push(delay, lambda request: answer)

    def push_sleep(self, seconds: float) -> None:
        """Wait `seconds`, then answer a text reply (meant to arrive after the client gave up)."""
        self.push_text("(late reply)", delay=seconds)

    def push_garbage(self, raw: str = "not json", *, content_type: str = "application/json") -> None:
        """Answer 200 with a body that is not JSON (by default while claiming to be JSON)."""
        self._push(0.0, lambda request: (200, {"Content-Type": content_type}, raw.encode()))

    def push_json(self, body: dict, *, status: int = 200, delay: float = 0.0) -> None:
        """Answer with `body` verbatim (e.g. a completion with no choices)."""
        self._push(delay, lambda request: _json_answer(body, status))

    def push_responder(self, fn: Callable[[dict], dict], *, delay: float = 0.0) -> None:
        """Answer with what `fn(request_body)` returns.

        A dict with "choices" is sent verbatim as the body; any other dict is the
        assistant message (`{"content": ...}` and/or `{"tool_calls": [tool_call(...)]}`)
        and is wrapped into a chat.completion.
        """

        def answer(request: dict) -> Answer:
            result = fn(request)
            return _json_answer(result) if "choices" in result else self._completion(request, result)

        self._push(delay, answer)

    @property
    def pending(self) -> int:
        """Scripted responses not consumed yet."""
        with self._lock:
            return len(self._script)

    # --- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Stop serving; handlers still waiting on a delay give up at once. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedLLMServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals -------------------------------------------------------------

    def _push(self, delay: float, answer: Callable[[dict], Answer]) -> None:
        with self._lock:
            self._script.append(_Step(delay, answer))

    def _next_step(self, request: dict) -> _Step | None:
        with self._lock:
            self.requests.append(request)
            return self._script.popleft() if self._script else None

    def _completion(self, request: dict, message: dict) -> Answer:
        message = {"role": "assistant", "content": None, **message}
        finish_reason = "tool_calls" if message.get("tool_calls") else "stop"
        prompt_tokens = _estimate_tokens(request.get("messages", []))
        completion_tokens = _estimate_tokens(message)
        body = {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", MODEL),
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return _json_answer(body)

    def _answer(self, request: dict) -> Answer:
        step = self._next_step(request)
        if step is None:
            body = {"error": {"message": f"script exhausted: request #{len(self.requests)} has no scripted response"}}
            return _json_answer(body, 500, {"x-should-retry": "false"})
        if step.delay and self._closing.wait(step.delay):
            raise ConnectionAbortedError("server closing")
        try:
            return step.answer(request)
        except Exception as exc:  # a broken responder must fail the test, not hang or retry
            body = {"error": {"message": f"scripted responder raised {type(exc).__name__}: {exc}"}}
            return _json_answer(body, 500, {"x-should-retry": "false"})


def _handler_for(server: ScriptedLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so no handler thread lingers on keep-alive.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                models = {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "tests"}]}
                self._send(*_json_answer(models))
            else:
                self._send(*_json_answer({"error": {"message": f"no route {self.path}"}}, 404))

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(*_json_answer({"error": {"message": f"no route {self.path}"}}, 404))
                return
            try:
                request = json.loads(raw)
            except ValueError as exc:
                self._send(*_json_answer({"error": {"message": f"request body is not JSON: {exc}"}}, 400))
                return
            try:
                answer = server._answer(request)
            except ConnectionAbortedError:
                return
            self._send(*answer)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            try:
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before the answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def llm_server() -> Iterator[ScriptedLLMServer]:
    """A fresh scripted server per test, closed afterwards."""
    server = ScriptedLLMServer()
    try:
        yield server
    finally:
        server.close()
