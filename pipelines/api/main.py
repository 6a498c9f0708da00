"""The FastAPI application: routers per resource, JSON errors, metrics, a warm model server."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agents.deployment import ModelServer
from agents.errors import PoiseError
from pipelines.api.metrics import ApiMetrics, MetricsMiddleware
from pipelines.api.routes import chat, checks, health, jobs, models
from pipelines.settings import Settings
from registry.db import get_engine


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.ensure_home()
    get_engine(settings.db_url)  # migrations run now, not on the first request
    app = FastAPI(title="Poise", version="0.1.0",
                  description="Imbalance-aware AutoML: submit jobs, chat, serve champions, log predictions, "
                              "watch them for drift.")
    app.state.settings = settings
    app.state.metrics = ApiMetrics(settings.db_url)
    app.state.model_server = ModelServer(settings)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    for router in (health.router, jobs.router, chat.router, models.router, checks.router):
        app.include_router(router)

    @app.exception_handler(PoiseError)
    async def user_error(request: Request, error: PoiseError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    from ui.app import mount_ui

    mount_ui(app, settings)
    return app
