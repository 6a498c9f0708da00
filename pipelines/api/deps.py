"""Request dependencies: settings, a database session, and API-key authentication by scope."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from poise.pipelines.access import authorize
from poise.pipelines.settings import Settings
from poise.registry.db import session_scope
from poise.registry.keys import KeyInfo, recently_verified

bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


async def get_settings(request: Request) -> Settings:  # async: no thread hop for a plain lookup
    return request.app.state.settings


def get_db(settings: Settings = Depends(get_settings)) -> Iterator[Session]:
    with session_scope(settings.db_url) as session:
        yield session


def require(scope: str) -> Callable[..., KeyInfo]:
    """A dependency that admits a valid key holding `scope` (or `admin`), by `pipelines.access.authorize`: the
    rule the web UI and chat go through too. A key verified in the last few seconds is admitted from memory;
    otherwise the database decides, in a worker thread. A refusal is raised as it is (`Unauthenticated` 401,
    `Forbidden` 403, `TooManyAttempts` 429: `pipelines.api.errors`)."""

    async def check(
        request: Request,
        settings: Settings = Depends(get_settings),
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
        header_key: str | None = Security(api_key_header),
    ) -> KeyInfo:
        key = header_key or (credentials.credentials if credentials else None)
        source = request.client.host if request.client else "unknown"
        if key and recently_verified(settings.db_url, key):
            return authorize(settings, key, scope, source=source)
        return await asyncio.to_thread(authorize, settings, key, scope, source=source)

    return check
