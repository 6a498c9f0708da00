"""Serving from memory: the API's champions, loaded once, called without MLflow's per-call wrapper.

The API answers a single-row request in a few milliseconds, which MLflow's pyfunc wrapper and a registry
call per request would dominate. `ModelServer` keeps each model's champion loaded and checks its alias at
most every few seconds; `ServedModel` conforms the input to the signature itself and calls the model by
the path `agents.deployment.fast_scorer.choose_path` decided when it was loaded, which it reports
(`ModelServer.scoring_paths`, `describe_serving_path`) so nobody has to guess which code served a request.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import pandas as pd

from poise.agents.deployment.fast_scorer import ScoringPath, choose_path
from poise.agents.deployment.signature import conform_records, conform_to_signature, predict_table
from poise.registry import tracking


def _settle_heap() -> None:
    """Take what is alive now (libraries, loaded models) out of the cyclic collector's view.

    A full collection walks every tracked object; with AutoGluon, MLflow and the web UI loaded
    that stalled a request for ~0.35 s every few hundred requests (measured). Frozen objects are
    still freed by reference counting; a replaced model's cycles are collected here first."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ServedModel:
    """A loaded version: its pyfunc, and the Poise AutoGluon model inside it, called directly.

    `predict` conforms the table to the signature (what MLflow's schema enforcement would check) and
    then calls the model by `scoring.path` (see `ScoringPath`): MLflow's pyfunc as it is, the pyfunc's
    own `predict` without MLflow's wrapper, or that `predict` with its probabilities from the fast tree
    scorer. Every path returns the pyfunc's output (label at the calibrated threshold, prior weights if
    any, one `proba_<class>` column per class)."""

    def __init__(self, version: str, pyfunc):
        self.version = version
        self.pyfunc = pyfunc
        self.schema = pyfunc.metadata.get_input_schema()
        self._python_model, self.scoring = choose_path(pyfunc, self.schema)

    def predict(self, table: pd.DataFrame) -> pd.DataFrame:
        if self._python_model is None:
            return predict_table(self.pyfunc, table)
        return self._python_model.predict(None, conform_to_signature(table, self.schema))

    def predict_records(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        """`predict(pd.DataFrame(records))`, skipping the intermediate frame when the records are plain."""
        features = conform_records(records, self.schema) if self._python_model is not None else None
        if features is None:
            return self.predict(pd.DataFrame(records))
        return self._python_model.predict(None, features)


class ModelServer:
    """Serves each model's champion from memory, reloading it when the alias moves.

    The alias is looked up at most every `alias_ttl` seconds, so a promotion or a
    rollback reaches the API within that time without a registry call per request.
    """

    def __init__(self, settings, alias_ttl: float = 2.0):
        self.settings = settings
        self.alias_ttl = alias_ttl
        self._client = tracking.configure(settings.tracking_uri, settings.registry_uri)
        self._loaded: dict[str, ServedModel] = {}
        self._alias_seen: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def champion(self, name: str) -> str | None:
        now = time.monotonic()
        seen = self._alias_seen.get(name)
        if seen is None or now - seen[0] > self.alias_ttl:
            seen = (now, tracking.champion_version(self._client, name))
            self._alias_seen[name] = seen
        return seen[1]

    def model(self, name: str) -> ServedModel:
        """The current champion, loaded; raises NoChampion (naming the versions and next steps) when there is none,
        NotFound when no version of the model is registered."""
        version = self.champion(name)
        if version is None:
            from poise.agents.summary import no_champion_error

            raise no_champion_error(self.settings, self._client, name)
        loaded = self._loaded.get(name)
        if loaded is None or loaded.version != version:
            with self._lock:
                loaded = self._loaded.get(name)
                if loaded is None or loaded.version != version:
                    loaded = ServedModel(version, tracking.load_model(name, version))
                    self._loaded[name] = loaded
                    _settle_heap()
        return loaded

    def warm(self, name: str) -> ServedModel | None:
        """The loaded champion if it can serve now without a registry call (alias checked within
        `alias_ttl`, that version loaded), else None."""
        seen, loaded = self._alias_seen.get(name), self._loaded.get(name)
        if seen is None or loaded is None or loaded.version != seen[1] or time.monotonic() - seen[0] > self.alias_ttl:
            return None
        return loaded

    def predict(self, name: str, table: pd.DataFrame) -> tuple[str, pd.DataFrame]:
        served = self.model(name)
        return served.version, served.predict(table)

    def predict_records(self, name: str, records: list[dict[str, Any]]) -> tuple[str, pd.DataFrame]:
        served = self.model(name)
        return served.version, served.predict_records(records)

    def forget(self, name: str) -> None:
        """Drop the cached alias so the next request sees a promotion or rollback at once."""
        self._alias_seen.pop(name, None)

    def scoring_paths(self) -> dict[str, tuple[str, ScoringPath]]:
        """For each model loaded in this process: the version loaded and the path it is served by."""
        return {name: (served.version, served.scoring) for name, served in list(self._loaded.items())}


def describe_serving_path(settings, name: str, version: str) -> str:
    """One line saying how this installation serves `name` v`version` (loading it to decide, as the API
    does), or why that cannot be told."""
    tracking.configure(settings.tracking_uri, settings.registry_uri)
    try:
        served = ServedModel(version, tracking.load_model(name, version))
    except Exception as error:  # noqa: BLE001 - a report line: whatever stops the load is what it says
        return f"serving path: unknown (v{version} cannot be loaded: {str(error)[:200]})"
    return served.scoring.describe()
