"""Run-time context of a training job: settings and job id, passed to every node.

Kept out of the checkpointed state so a resumed job uses the current settings and
a fresh MLflow client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from poise.pipelines.settings import Settings
from poise.registry import tracking
from poise.registry.db import session_scope


@dataclass
class TrainingContext:
    settings: Settings
    job_id: str
    session_id: str | None = None
    _client: MlflowClient | None = field(default=None, repr=False)
    _llm: object | None = field(default=None, repr=False)
    # AutoGluon predictors fitted in this process, by folder: later nodes use them instead of loading them again
    fitted_predictors: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def work_dir(self) -> Path:
        """The job's folder (mirrored to the file store after every step)."""
        return self.settings.job_dir(self.job_id)

    def predictor(self, path: str):
        """The AutoGluon predictor in `path`: the one this process fitted, or loaded (a resumed job)."""
        if path not in self.fitted_predictors:
            from autogluon.tabular import TabularPredictor

            self.fitted_predictors[path] = TabularPredictor.load(path, verbosity=0)
        return self.fitted_predictors[path]

    @property
    def llm(self):
        """The traced LLM client when an endpoint is configured, else None (deterministic path)."""
        if self._llm is None and self.settings.llm_configured:
            from poise.agents.llm import LLM, CallTracer

            self._llm = LLM(self.settings.llm_config, CallTracer(self.settings.db_url, self.session_id, self.job_id))
        return self._llm

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
