"""Prometheus metrics of the API: requests, latencies, and jobs by state (read at scrape time)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from starlette.middleware.base import BaseHTTPMiddleware

from registry.db import session_scope
from registry.models import Job


class JobsCollector:
    def __init__(self, db_url: str):
        self.db_url = db_url

    def collect(self):
        gauge = GaugeMetricFamily("poise_jobs", "Jobs by status", labels=["status"])
        with session_scope(self.db_url) as session:
            for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
                gauge.add_metric([status], count)
        yield gauge


class ApiMetrics:
    def __init__(self, db_url: str):
        self.registry = CollectorRegistry()
        self.requests = Counter("poise_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("poise_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.registry.register(JobsCollector(db_url))


class MetricsMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        metrics: ApiMetrics = request.app.state.metrics  # before the call: a mounted sub-app replaces request.app
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        metrics.latency.labels(request.method, path).observe(time.perf_counter() - started)
        return response
