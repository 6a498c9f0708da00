"""Request body limits, enforced before a route reads or parses the body (plain ASGI).

A request that declares a `Content-Length` over its route's limit is answered 413 at once, without
calling the application: no byte of its body is read into memory. A body sent without a length
(chunked) is counted as it streams in; the read that crosses the limit raises `BodyTooLarge`, a 413
the route cannot mistake for a parse error (FastAPI passes `HTTPException`s from body reading through),
and if the route does not turn it into a response, this middleware does. Paths under an `exempt`
prefix (the Gradio UI at /ui, which enforces its own `max_file_size` and streams uploads) pass through
untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson
from fastapi import HTTPException


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes")
        self.limit = limit


def _declared_length(scope) -> int | None:
    """The request's Content-Length, None when it has none; -1 when it is not a number (or several differ)."""
    values = {value for name, value in scope.get("headers", ()) if name.lower() == b"content-length"}
    if not values:
        return None
    if len(values) > 1:
        return -1
    text = values.pop().strip()
    return int(text) if text.isdigit() else -1


class BodyLimitMiddleware:
    """413 for request bodies over `default` bytes, or over `routes[path]` for those paths."""

    def __init__(self, app, default: int, routes: Mapping[str, int] | None = None, exempt: Iterable[str] = ()):
        self.app = app
        self.default = default
        self.routes = dict(routes or {})
        self.exempt = tuple(prefix.rstrip("/") for prefix in exempt)

    def limit(self, path: str) -> int | None:
        """The body limit of `path`, None when it is exempt."""
        if any(path == prefix or path.startswith(prefix + "/") for prefix in self.exempt):
            return None
        return self.routes.get(path.rstrip("/") or "/", self.default)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or (limit := self.limit(scope["path"])) is None:
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and (declared < 0 or declared > limit):
            # before the application runs: the body stays unread (the server drains or drops it)
            await _send_413(send, limit, "a malformed Content-Length" if declared < 0 else None)
            return
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def noted_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, noted_send)
        except BodyTooLarge:
            if started:  # too late for a 413: the connection is dropped
                raise
            await _send_413(send, limit)


async def _send_413(send, limit: int, problem: str | None = None) -> None:
    detail = f"request body larger than {limit} bytes" if problem is None else f"{problem}; the limit is {limit} bytes"
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
