"""The FastAPI application: routers per resource, JSON errors (`api.errors`), metrics, a warm model server."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from poise.agents.deployment.serving import ModelServer
from poise.pipelines.api.errors import add_error_handlers
from poise.pipelines.api.limits import BodyLimitMiddleware
from poise.pipelines.api.metrics import ApiMetrics, MetricsMiddleware
from poise.pipelines.api.routes import chat, checks, health, jobs, models
from poise.pipelines.settings import Settings
from poise.registry.db import get_engine

UPLOAD_FORM_BYTES = 1 << 20  # an upload's multipart framing and its form fields (the job options)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.ensure_home()
    get_engine(settings.db_url)  # migrations run now, not on the first request
    app = FastAPI(title="Poise", version="0.1.0",
                  description="Imbalance-aware AutoML: submit jobs, chat, serve champions, log predictions, "
                              "watch them for drift.")
    app.state.settings = settings
    app.state.model_server = ModelServer(settings)
    app.state.metrics = ApiMetrics(settings.db_url, app.state.model_server)
    # 413 before a body is read: uploads up to their limit (plus room for the multipart form around the file),
    # every other route up to `request_max_bytes`; the UI at /ui keeps Gradio's own limit (`max_file_size`)
    app.add_middleware(BodyLimitMiddleware, default=settings.request_max_bytes, exempt=("/ui",),
                       routes={"/api/v1/jobs/upload": settings.upload_max_bytes + UPLOAD_FORM_BYTES})
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outside: counts the 413s too
    # One CORS policy for the API and the UI (Gradio defers to it): no other origin unless configured. Gradio's own
    # would answer any localhost origin, and a page on another localhost port is same-site for the UI's cookie.
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"])
    for router in (health.router, jobs.router, chat.router, models.router, checks.router):
        app.include_router(router)

    add_error_handlers(app, settings)  # Poise's errors to HTTP statuses, in one table (pipelines.api.errors)

    from poise.ui.app import mount_ui

    mount_ui(app, settings)
    return app
