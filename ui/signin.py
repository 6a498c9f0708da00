"""Signing in to the web UI with an API key: the same keys and scopes as the REST API.

A browser cannot send an `Authorization` header to a Gradio page, so the key is entered once on
`/ui/login` and exchanged for a session: a random token in an HttpOnly, SameSite=Strict cookie,
mapped in this process to the key's id for `SESSION_HOURS`. Every UI event reads that key afresh
(`pipelines.access.caller_by_id`), so revoking the key ends its sessions at once, and checks the
scope the event needs exactly as the API would.

`POISE_UI_OPEN=true` serves the UI without signing in, as the `open web UI` caller with every scope,
for one person on their own machine; `poise serve` refuses it on any address but loopback.
"""

from __future__ import annotations

import html
import secrets
import time
from datetime import UTC, datetime

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from poise.pipelines.access import Forbidden, TooManyAttempts, Unauthenticated, authorize, caller_by_id
from poise.pipelines.settings import Settings
from poise.registry.keys import KeyInfo

COOKIE = "poise_ui_session"
SESSION_HOURS = 12
OPEN_UI_CALLER = KeyInfo(0, "open web UI (loopback only)", "", ["admin"], datetime(1970, 1, 1, tzinfo=UTC), None,
                         False)
LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Poise · sign in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:30rem;margin:5rem auto;padding:0 1rem}}
input{{width:100%;padding:.5rem;margin:.5rem 0;font-family:monospace}}button{{padding:.5rem 1rem}}
.error{{color:#b00020}}</style></head><body><h2>Poise</h2>
<p>Sign in with an API key (<code>poise keys create NAME --scope submit</code>).</p>
<form method="post" action="login"><input id="api-key" name="api_key" type="password" autocomplete="off"
placeholder="poise_..." required maxlength="200"><button id="sign-in" type="submit">Sign in</button></form>
<p class="error" id="sign-in-error">{error}</p></body></html>"""


class UiSessions:
    """Signed-in browsers of this process: token -> (API key id, expiry)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._tokens: dict[str, tuple[int, float]] = {}

    def start(self, key: str, source: str) -> str:
        info = authorize(self.settings, key, "read", "submit", source=source)  # a predict-only key has nothing to do
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        self._tokens = {t: entry for t, entry in self._tokens.items() if entry[1] > now}
        self._tokens[token] = (info.id, now + SESSION_HOURS * 3600)
        return token

    def end(self, token: str | None) -> None:
        self._tokens.pop(token or "", None)

    def user(self, request: Request) -> str | None:
        """Gradio's `auth_dependency`: the signed-in key's id as the user name, or None (Gradio answers 401)."""
        if self.settings.ui_open:
            return str(OPEN_UI_CALLER.id)
        entry = self._tokens.get(request.cookies.get(COOKIE, ""))
        if entry is None or entry[1] < time.monotonic():
            return None
        return str(entry[0])

    def caller(self, username: str | None, *scopes: str) -> KeyInfo:
        """The key behind a UI event's user, holding one of `scopes`; raises `Unauthenticated` or `Forbidden`."""
        if self.settings.ui_open:
            return OPEN_UI_CALLER
        if not username or not username.isdigit():
            raise Unauthenticated("sign in again")
        return caller_by_id(self.settings, int(username), *scopes)


def add_signin_routes(app: FastAPI, sessions: UiSessions) -> None:
    """`/ui/login` and `/ui/logout`, and a redirect to the login page for a browser that is not signed in.
    Added before the UI is mounted at `/ui`, so they take precedence over it."""

    @app.get("/ui/login", include_in_schema=False)
    def login_page() -> HTMLResponse:
        return HTMLResponse(LOGIN_PAGE.format(error=""))

    @app.post("/ui/login", include_in_schema=False)
    def login(request: Request, api_key: str = Form(..., max_length=200)) -> Response:
        try:
            token = sessions.start(api_key, request.client.host if request.client else "unknown")
        except (Unauthenticated, Forbidden, TooManyAttempts) as problem:
            status = 429 if isinstance(problem, TooManyAttempts) else 401
            return HTMLResponse(LOGIN_PAGE.format(error=html.escape(str(problem))), status_code=status)
        response = RedirectResponse("./", status_code=303)
        response.set_cookie(COOKIE, token, max_age=SESSION_HOURS * 3600, path="/ui", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    @app.get("/ui/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("login", status_code=303)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    @app.middleware("http")
    async def sign_in_first(request: Request, call_next):
        if request.method == "GET" and request.url.path in ("/ui", "/ui/") and sessions.user(request) is None:
            return RedirectResponse("/ui/login", status_code=303)
        return await call_next(request)
