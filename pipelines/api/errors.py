"""The one place where Poise's errors become HTTP answers.

Code that finds a problem raises the error of its kind (`agents.errors`, `pipelines.access`); routes do not catch
and translate them. `STATUS` maps each kind to its status (the most specific kind of an error decides), and every
answer is `{"detail": <message>}` plus the error's own data (`PoiseError.details()`: the versions and next steps of a
model without champion, the ids an ambiguous prefix matches), with no server path in it (`hide_paths`).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from poise.agents.errors import AmbiguousId, Conflict, DataError, NoChampion, NotFound, PoiseError, SpecError, TooLargeError
from poise.pipelines.access import Forbidden, NoSuchFile, PathRefused, TooManyAttempts, Unauthenticated, hide_paths
from poise.pipelines.settings import Settings

STATUS: dict[type[PoiseError], int] = {
    PoiseError: 422,  # any other problem with the input
    DataError: 422,
    SpecError: 422,
    TooLargeError: 413,
    NotFound: 404,
    NoSuchFile: 404,
    AmbiguousId: 400,  # the request does not name one thing (as Docker's API answers an ambiguous id prefix)
    Conflict: 409,
    NoChampion: 409,
    Unauthenticated: 401,
    Forbidden: 403,
    PathRefused: 400,
    TooManyAttempts: 429,
}


def status_of(error: PoiseError) -> int:
    """The HTTP status of `error`: that of the most specific of its kinds in `STATUS`."""
    return next(STATUS[kind] for kind in type(error).__mro__ if kind in STATUS)


def headers_of(error: PoiseError) -> dict[str, str] | None:
    if isinstance(error, Unauthenticated):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(error, TooManyAttempts):
        return {"Retry-After": str(error.retry_after)}
    return None


def add_error_handlers(app: FastAPI, settings: Settings) -> None:
    @app.exception_handler(PoiseError)
    async def poise_error(request: Request, error: PoiseError) -> JSONResponse:
        body = hide_paths({"detail": str(error), **error.details()}, settings)
        return JSONResponse(body, status_code=status_of(error), headers=headers_of(error))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        """Every error detail names files as the caller would, never by the server's absolute paths."""
        error.detail = hide_paths(error.detail, settings)
        return await http_exception_handler(request, error)
