"""Run-time context of a drift check: settings, check id and an MLflow client, passed to every node."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient

from poise.pipelines.settings import Settings
from poise.registry import tracking
from poise.registry.db import session_scope


@dataclass
class MonitorContext:
    settings: Settings
    check_id: str
    _client: MlflowClient | None = field(default=None, repr=False)

    @property
    def work_dir(self) -> Path:
        """The check's folder (mirrored to the file store after every step)."""
        return self.settings.check_dir(self.check_id)

    @property
    def mlflow(self) -> MlflowClient:
        if self._client is None:
            self._client = tracking.configure(self.settings.tracking_uri, self.settings.registry_uri)
        return self._client

    @contextmanager
    def session(self) -> Iterator:
        """A database session for the queries of `registry.queries` (committed on leaving, rolled back on an
        error): the nodes' one way to the database."""
        with session_scope(self.settings.db_url) as session:
            yield session
