"""Serving from memory: the API's champions, loaded once, called without MLflow's per-call wrapper.

The API answers a single-row request in a few milliseconds, which MLflow's pyfunc wrapper and a registry
call per request would dominate. `ModelServer` keeps each model's champion loaded and checks its alias at
most every few seconds; `ServedModel` conforms the input to the signature itself and calls the Poise
AutoGluon model inside the pyfunc directly, with the fast tree scorer (`agents.deployment.fast_scorer`)
when that gives exactly the pyfunc's output.
"""

from __future__ import annotations

import copy
import gc
import threading
import time
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

from agents.deployment.fast_scorer import BaggedTreeScorer, ScoredPredictor, Unsupported
from agents.deployment.signature import conform_records, conform_to_signature, predict_table
from agents.errors import SpecError
from registry import tracking


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

    `predict` conforms the table to the signature (what MLflow's schema enforcement would check)
    and then, by `path`:
    - "pyfunc": `mlflow.pyfunc` as it is (a model that is not a Poise AutoGluon pyfunc);
    - "direct": the pyfunc's own `predict`, without MLflow's wrapper;
    - "scorer": the pyfunc's own `predict` on a copy whose predictor takes its probabilities from
      `BaggedTreeScorer`; chosen only when that gives exactly the pyfunc's output on the model's
      input example plus a row of gaps, else `note` says why not.
    So every path returns the pyfunc's output (label at the calibrated threshold, prior weights if
    any, one `proba_<class>` column per class)."""

    def __init__(self, version: str, pyfunc):
        self.version = version
        self.pyfunc = pyfunc
        self.schema = pyfunc.metadata.get_input_schema()
        self.path, self.note = "pyfunc", None
        self._python_model = None
        try:
            inner = pyfunc.unwrap_python_model()
        except (MlflowException, AttributeError, ValueError):
            inner = None
        if self.schema is None or getattr(inner, "_predictor", None) is None:
            return
        self._python_model, self.path = inner, "direct"
        if not inner._predictor.can_predict_proba:
            return
        try:
            fast = copy.copy(inner)
            fast._predictor = ScoredPredictor(inner._predictor, BaggedTreeScorer(inner._predictor))
            self._check(fast)
            self._python_model, self.path = fast, "scorer"
        except Unsupported as reason:
            self.note = f"AutoGluon's own predict_proba: {reason}"
        except Exception as error:  # noqa: BLE001 - any surprise means: keep AutoGluon's own path
            self.note = f"AutoGluon's own predict_proba: the scorer failed its check ({type(error).__name__}: {error})"

    def _check(self, fast) -> None:
        example = self.pyfunc.input_example
        if not isinstance(example, pd.DataFrame) or example.empty:
            raise Unsupported("no input example to check the scorer against")
        gaps = pd.DataFrame([{name: None for name in example.columns}], dtype=object)
        sample = conform_to_signature(pd.concat([example.astype(object), gaps], ignore_index=True), self.schema)
        try:
            pd.testing.assert_frame_equal(fast.predict(None, sample), self._python_model.predict(None, sample),
                                          check_exact=True)
        except AssertionError as difference:
            raise Unsupported(f"scorer output differs from the pyfunc's: {str(difference)[:200]}") from None

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
        """The current champion, loaded; raises SpecError when there is none."""
        version = self.champion(name)
        if version is None:
            raise SpecError(f"model '{name}' has no champion version")
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
