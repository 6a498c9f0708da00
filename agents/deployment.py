"""Deployment agent: the quality gate, and what a registered version carries.

A version is always registered (so every run is reviewable), but `champion` moves
only through the gate: the first version must beat the dummy baselines on the
primary metric; a later one must beat the current champion scored on the same
holdout, so the comparison is like for like.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from agents.errors import DataError, SpecError
from agents.evaluation import (
    best_baseline,
    classification_metrics,
    is_better,
    primary_metric_name,
)
from registry import tracking


def serving_frame(features: pd.DataFrame) -> pd.DataFrame:
    """Features as a client sends them: integers widened to float (so the signature
    accepts both), categories as plain strings (MLflow's schema has no category type)."""
    frame = features.copy()
    for column in frame.select_dtypes("integer").columns:
        frame[column] = frame[column].astype("float64")
    for column in frame.select_dtypes("category").columns:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def score_champion(name: str, version: str, holdout: pd.DataFrame, label: str, policy: dict[str, Any]) -> dict | None:
    """The champion's metrics on this job's holdout, or None when it cannot score it."""
    try:
        model = tracking.load_model(name, version)
        output = model.predict(serving_frame(holdout.drop(columns=[label])))
    except (MlflowException, KeyError, ValueError, TypeError) as error:
        return {"error": f"champion v{version} cannot score this holdout: {str(error)[:300]}"}
    proba = output[[c for c in output.columns if c.startswith("proba_")]]
    proba = proba.set_axis([c.removeprefix("proba_") for c in proba.columns], axis=1)
    return classification_metrics(holdout[label], output["label"], proba, policy)


def quality_gate(
    metrics: dict[str, Any],
    baselines: dict[str, dict],
    policy: dict[str, Any],
    champion: dict[str, Any] | None = None,
    champion_version: str | None = None,
) -> dict[str, Any]:
    """Decide whether the candidate may become champion, and say why."""
    metric = primary_metric_name(policy)
    value = metrics[metric]
    if champion is None:
        baseline_name, baseline_value = best_baseline(baselines, metric)
        return _verdict(metric, value, baseline_value, f"{baseline_name} baseline", f"the {baseline_name} baseline")
    if "error" in champion:
        return {"passed": False, "metric": metric, "value": value, "compared_with": f"champion v{champion_version}",
                "reference_value": None, "reason": champion["error"] + "; keeping the current champion"}
    return _verdict(metric, value, champion[metric], f"champion v{champion_version}",
                    f"champion v{champion_version}", " on this holdout")


def _verdict(metric: str, value: float, reference: float, compared_with: str, named: str,
             where: str = "") -> dict[str, Any]:
    passed = is_better(value, reference, metric)
    verdict = "beats" if passed else "does not beat"
    return {"passed": passed, "metric": metric, "value": value, "compared_with": compared_with,
            "reference_value": reference, "reason": f"{metric} {value:.4f} {verdict} {named} ({reference:.4f}){where}"}


def conform_to_signature(table: pd.DataFrame, input_schema) -> pd.DataFrame:
    """Select and cast the model's input columns from a raw table, naming what is missing."""
    if input_schema is None:  # a model logged without signature takes the table as it is
        return table
    names = input_schema.input_names()
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise DataError(f"input lacks the model's columns: {', '.join(map(repr, missing[:10]))}")
    columns = {}
    for spec in input_schema.inputs:
        values = table[spec.name]
        kind = spec.type.name
        if kind in ("double", "float", "long", "integer"):
            numbers = _numbers(spec.name, values)
            if kind in ("double", "float"):
                columns[spec.name] = numbers
            elif numbers.isna().any():
                raise DataError(f"column '{spec.name}' must be whole numbers without gaps for this model")
            else:
                columns[spec.name] = numbers.astype("int64" if kind == "long" else "int32")
        elif kind == "datetime":
            columns[spec.name] = pd.to_datetime(values, errors="coerce", format="mixed")
        elif kind == "boolean":
            columns[spec.name] = values.astype("boolean")
        else:
            columns[spec.name] = values.astype("string").astype(object).where(values.notna(), None)
    return pd.DataFrame(columns)


def predict_table(model, table: pd.DataFrame) -> pd.DataFrame:
    """A loaded pyfunc model's predictions for a raw table, conformed to its signature first."""
    features = conform_to_signature(table, model.metadata.get_input_schema())
    try:
        return model.predict(features)
    except MlflowException as error:
        raise DataError(f"input does not match the model's schema: {str(error)[:300]}") from None


def _numbers(name: str, values: pd.Series) -> pd.Series:
    """A numeric column, refusing values that are present but not finite numbers (no silent NaN)."""
    numbers = pd.to_numeric(values.where(~values.map(lambda v: isinstance(v, (list, dict))), "x"),
                            errors="coerce").astype("float64")
    bad = values.notna() & ~np.isfinite(numbers.fillna(0.0).to_numpy()) | (values.notna() & numbers.isna())
    if bad.any():
        example = values[bad].iloc[0]
        raise DataError(f"column '{name}' needs numbers; got {str(example)[:40]!r} in {int(bad.sum())} row(s)")
    return numbers


def batch_predict(settings, name: str, data, out, version: str | None = None) -> tuple[Path, int, str]:
    """Predict a whole table with the champion (or `version`) and write it next to the predictions."""
    from agents.data_engineering import load_table

    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    used = version or tracking.champion_version(client, name)
    if used is None:
        raise SpecError(f"model '{name}' has no champion yet; pass --version or train a better model")
    try:
        model = tracking.load_model(name, used)
    except MlflowException as error:
        raise SpecError(f"cannot load model '{name}' v{used}: {str(error)[:200]}") from None
    table, _ = load_table(data, max_bytes=settings.max_file_bytes)
    output = predict_table(model, table)
    result = pd.concat([table.reset_index(drop=True), output.add_prefix("predicted_")], axis=1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    if out.suffix.lower() in (".parquet", ".pq"):
        result.to_parquet(partial, index=False)
    else:
        result.to_csv(partial, index=False)
    partial.replace(out)
    return out, len(result), used


class ModelServer:
    """Serves each model's champion from memory, reloading it when the alias moves.

    The alias is looked up at most every `alias_ttl` seconds, so a promotion or a
    rollback reaches the API within that time without a registry call per request.
    """

    def __init__(self, settings, alias_ttl: float = 2.0):
        self.settings = settings
        self.alias_ttl = alias_ttl
        self._client = tracking.configure(settings.tracking_uri, settings.registry_uri)
        self._loaded: dict[str, tuple[str, Any]] = {}
        self._alias_seen: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def champion(self, name: str) -> str | None:
        now = time.monotonic()
        seen = self._alias_seen.get(name)
        if seen is None or now - seen[0] > self.alias_ttl:
            seen = (now, tracking.champion_version(self._client, name))
            self._alias_seen[name] = seen
        return seen[1]

    def model(self, name: str):
        """(version, pyfunc model) of the current champion; raises SpecError when there is none."""
        version = self.champion(name)
        if version is None:
            raise SpecError(f"model '{name}' has no champion version")
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is None or loaded[0] != version:
                loaded = (version, tracking.load_model(name, version))
                self._loaded[name] = loaded
        return loaded

    def predict(self, name: str, table: pd.DataFrame) -> tuple[str, pd.DataFrame]:
        version, model = self.model(name)
        return version, predict_table(model, table)

    def forget(self, name: str) -> None:
        """Drop the cached alias so the next request sees a promotion or rollback at once."""
        self._alias_seen.pop(name, None)
