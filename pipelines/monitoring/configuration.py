"""Run-time context of a drift check: settings, check id and an MLflow client, passed to every node."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient

from pipelines.settings import Settings
from registry import tracking


@dataclass
class MonitorContext:
    settings: Settings
    check_id: str
    _client: MlflowClient | None = field(default=None, repr=False)

    @property
    def check_dir(self) -> Path:
        return self.settings.home / "checks" / self.check_id

    @property
    def mlflow(self) -> MlflowClient:
        if self._client is None:
            self._client = tracking.configure(self.settings.tracking_uri, self.settings.registry_uri)
        return self._client
