"""Prometheus metrics of the API: requests, latencies, jobs by state and the serving path of each loaded
model (both read at scrape time)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from poise.registry import queries
from poise.registry.db import session_scope


class JobsCollector:
    def __init__(self, db_url: str):
        self.db_url = db_url

    def collect(self):
        gauge = GaugeMetricFamily("poise_jobs", "Jobs by status", labels=["status"])
        with session_scope(self.db_url) as session:
            for status, count in queries.job_status_counts(session).items():
                gauge.add_metric([status], count)
        yield gauge


class ServingPathsCollector:
    """One series per model this API process has loaded: its version, the path that computes its predictions
    (`fast_trees`, `autogluon`, `mlflow_pyfunc`) and, when not `fast_trees`, the kind of reason why (`fallback`;
    the reason in words is in `GET /api/v1/models`)."""

    def __init__(self, server):
        self.server = server

    def collect(self):
        gauge = GaugeMetricFamily("poise_model_serving_path", "The path serving each loaded model's predictions (1)",
                                  labels=["model", "version", "path", "fallback"])
        for name, (version, scoring) in sorted(self.server.scoring_paths().items()):
            gauge.add_metric([name, version, scoring.path, scoring.cause or ""], 1)
        yield gauge


class ApiMetrics:
    def __init__(self, db_url: str, model_server=None):
        self.registry = CollectorRegistry()
        self.requests = Counter("poise_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("poise_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.dropped_predictions = Counter(
            "poise_prediction_log_dropped_rows_total", "Served predictions the prediction log failed to store",
            registry=self.registry)
        self.registry.register(JobsCollector(db_url))
        if model_server is not None:
            self.registry.register(ServingPathsCollector(model_server))


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (plain ASGI: no per-request task overhead)."""

    def __init__(self, app, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status["code"])).inc()
            self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - started)
