"""Liveness and Prometheus metrics (no API key: for load balancers and scrapers)."""

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from poise.pipelines.api.deps import get_settings
from poise.pipelines.settings import Settings
from poise.registry.db import session_scope

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(settings: Settings = Depends(get_settings)) -> dict[str, str]:
    with session_scope(settings.db_url) as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok", "database": "ok"}


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
