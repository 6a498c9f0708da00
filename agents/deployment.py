"""Deployment agent: the quality gate, and what a registered version carries.

A version is always registered (so every run is reviewable), but `champion` moves
only through the gate: the first version must beat the dummy baselines on the
primary metric. A later one is judged on data its submitter chose and on data they
did not: it must beat the current champion on the job's own holdout (like for like)
and not be worse than the champion beyond chance on the champion's reference holdout
(stored when the champion was registered), by the champion's primary metric. Scored on its
own holdout alone, a model trained on a label-flipped copy of the data "beat" an
honest champion: whoever submits the data would decide the comparison. A change of
target, feature columns, feature types or label set against the champion is never
promoted by the gate: clients send the champion's columns and read its classes, so
an admin decides (`poise promote NAME VERSION --reason ...`).
"""

from __future__ import annotations

import copy
import gc
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from agents import drift
from agents.data_engineering import to_utc_naive
from agents.errors import DataError, SpecError
from agents.evaluation import (
    best_baseline,
    classification_metrics,
    is_better,
    primary_metric_name,
)
from registry import tracking


def serving_frame(features: pd.DataFrame) -> pd.DataFrame:
    """Features as a client sends them: numbers of every width as float64 (so the signature accepts
    integers, float32 and float64 alike), categories as plain strings (MLflow's schema has no category type)."""
    frame = features.copy()
    for column in frame.select_dtypes(["integer", "floating"]).columns:
        frame[column] = frame[column].astype("float64")
    for column in frame.select_dtypes("category").columns:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def example_rows(features: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """The first `rows` rows, plus for each column empty in all of them the first row where it has a value: MLflow types
    a signature from its input example, and a column with no value there (a mostly-missing category) becomes `Any`."""
    chosen = list(features.index[:rows])
    for column in features.columns:
        present = features[column].notna()
        if not present.loc[chosen].any() and present.any():
            chosen.append(present.idxmax())
    return features.loc[chosen]


def score_champion(name: str, version: str, holdout: pd.DataFrame, label: str, policy: dict[str, Any]) -> dict:
    """The champion's metrics on this job's holdout, or `{"error": ...}` when it cannot score it."""
    try:
        model = tracking.load_model(name, version)
        output = model.predict(serving_frame(holdout.drop(columns=[label])))
    except (MlflowException, KeyError, ValueError, TypeError) as error:
        return {"error": f"champion v{version} cannot score this holdout: {str(error)[:300]}"}
    proba = output[[c for c in output.columns if c.startswith("proba_")]]
    proba = proba.set_axis([c.removeprefix("proba_") for c in proba.columns], axis=1)
    return classification_metrics(holdout[label], output["label"], proba, policy)


def _listed(names: list[str]) -> str:
    return ", ".join(map(repr, names[:10])) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _label_set(labels: list[str]) -> str:
    return "{" + ", ".join(map(repr, sorted(labels))) + "}"


def schema_changes(meta: dict[str, Any], target: str, types: dict[str, str], classes: list[str]) -> list[str]:
    """How a challenger's table differs from the champion's (`meta`: the champion's reference meta, see
    `agents.drift.reference_meta`): its target, feature columns (a renamed column is one missing and one new),
    feature types (`types`: the challenger's, as profiling inferred them) and label set. Empty when none."""
    changes = []
    if target != meta["target"]:
        changes.append(f"target changed: {target!r} vs the champion's {meta['target']!r}")
    before = meta["types"]
    missing = [column for column in before if column not in types]
    added = [column for column in types if column not in before]
    retyped = [f"{column!r} {kind} (was {before[column]})" for column, kind in types.items()
               if column in before and kind != before[column]]
    if missing:
        changes.append(f"feature column(s) missing: {_listed(missing)}")
    if added:
        changes.append(f"new feature column(s): {_listed(added)}")
    if retyped:
        changes.append(f"feature type(s) changed: {', '.join(retyped[:10])}")
    if set(classes) != set(meta["classes"]):
        changes.append(f"label set changed: {_label_set(classes)} vs the champion's {_label_set(meta['classes'])}")
    return changes


def reference_scores(data: str, reference: drift.Reference, challenger: pd.Series, seed: int) -> dict[str, Any]:
    """Challenger and champion on the champion's reference holdout (`reference`: the champion's drift reference,
    stored with it), by the champion's primary metric and positive class, so neither the data nor the measure is
    the submitter's; `challenger`: the challenger's labels of those rows. `worse`: the challenger is worse beyond
    chance, the whole paired-bootstrap 95 % interval of the difference on the worse side.

    The champion's labels are those stored when it was judged (for a trained version its first fit's: the version
    registered was then refitted on these very rows, and scoring it now would score it on rows it learned)."""
    compared = drift.compare(reference, reference.holdout[reference.target], reference.predictions[drift.LABEL],
                             challenger, None, seed)
    low, high = compared["interval"]
    return {"data": data, "rows": compared["n_rows"], "metric": compared["metric"],
            "challenger": compared["challenger"], "champion": compared["champion"], "difference_interval": [low, high],
            "worse": bool(low > 0 if drift.lower_is_better(compared["metric"]) else high < 0)}


@dataclass
class ChampionEvidence:
    """What the gate knows of the current champion against a challenger. With any `changes` nothing is scored;
    `on_holdout` (the champion's metrics on the challenger's holdout) and `reference` (`reference_scores`) are
    otherwise set, either of them `{"error": ...}` when the comparison cannot be made."""

    name: str
    version: str
    changes: list[str] = field(default_factory=list)
    on_holdout: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None


def quality_gate(metrics: dict[str, Any], baselines: dict[str, dict], policy: dict[str, Any], holdout: str,
                 champion: ChampionEvidence | None = None) -> dict[str, Any]:
    """Decide whether the candidate may become champion, and say why, naming the data of every score (`holdout`:
    what the job's own holdout is called); `scores` lists them.

    With a champion the challenger passes only when its data has the champion's schema and label set, it beats
    the champion on its own holdout (strictly, as against the baselines) and it is not worse than the champion
    beyond chance on the champion's reference holdout (`reference_scores`). Chance, because that holdout is often
    small and the champion was promoted partly for scoring well on it: on 48 reference rows an honest challenger
    with F1 0.896 against 0.713 on its own 400 rows scored 0.800 against the champion's 0.842 there. A refusal
    keeps the current champion; the version is still registered, for an admin to promote if they see fit."""
    metric = primary_metric_name(policy)
    value = metrics[metric]
    own = {"data": holdout, "rows": metrics["n_holdout"], "metric": metric, "challenger": value}
    if champion is None:
        baseline_name, baseline_value = best_baseline(baselines, metric)
        passed = is_better(value, baseline_value, metric)
        return {"passed": passed, "metric": metric, "value": value, "compared_with": f"{baseline_name} baseline",
                "reference_value": baseline_value, "champion": None, "changes": [],
                "scores": [{**own, "baseline": baseline_value}],
                "reason": f"{metric} {value:.4f} {_beats(passed)} the {baseline_name} baseline ({baseline_value:.4f}) "
                          f"on the {holdout}"}
    named = f"champion v{champion.version}"
    refused = {"passed": False, "metric": metric, "value": value, "compared_with": named, "reference_value": None,
               "champion": champion.version, "changes": champion.changes, "scores": [{**own, "champion": None}]}
    if champion.changes:
        return refused | {"reason": f"{'; '.join(champion.changes)}: a change of schema or label set against "
                          f"{named} needs an admin, who can promote this version explicitly with `poise promote "
                          f"{champion.name} VERSION --reason ...`; keeping the current champion"}
    errors = [evidence["error"] for evidence in (champion.reference, champion.on_holdout)
              if evidence is not None and "error" in evidence]
    if errors:
        return refused | {"reason": "; ".join(errors) + "; keeping the current champion"}
    reference, champion_value = champion.reference, champion.on_holdout[metric]
    beats = is_better(value, champion_value, metric)
    passed = beats and not reference["worse"]
    low, high = reference["difference_interval"]
    reason = (f"{metric} {value:.4f} {_beats(beats)} {named} ({champion_value:.4f}) on the {holdout}; on the "
              f"{reference['data']} ({reference['rows']} rows) {reference['metric']} {reference['challenger']:.4f} "
              f"vs the champion's {reference['champion']:.4f} is {'worse' if reference['worse'] else 'not worse'} "
              f"beyond chance (difference 95% CI {low:+.4f} to {high:+.4f})")
    return {"passed": passed, "metric": metric, "value": value, "compared_with": named,
            "reference_value": champion_value, "champion": champion.version, "changes": [],
            "scores": [{**own, "champion": champion_value}, reference],
            "reason": reason + ("" if passed else "; keeping the current champion")}


def _beats(passed: bool) -> str:
    return "beats" if passed else "does not beat"


NUMERIC_TYPES = ("double", "float", "long", "integer")


def _type_name(spec) -> str:
    """A signature column's type name; "any" for MLflow's `Any` (no name), which a model logged with an empty
    example column has."""
    return getattr(spec.type, "name", "any")


def conform_to_signature(table: pd.DataFrame, input_schema) -> pd.DataFrame:
    """Select and cast the model's input columns from a raw table, naming what is missing.

    Columns that already have the right kind of values (numbers in numeric columns, plain strings
    or gaps in string columns) take a vectorised path; anything else is parsed value by value, so
    bad values are named, never silently turned into NaN."""
    if input_schema is None:  # a model logged without signature takes the table as it is
        return table
    names = input_schema.input_names()
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise DataError(f"input lacks the model's columns: {', '.join(map(repr, missing[:10]))}")
    columns = {}
    for spec in input_schema.inputs:
        values = table[spec.name]
        kind = _type_name(spec)
        if kind == "any":
            columns[spec.name] = values
        elif kind in NUMERIC_TYPES:
            numbers = _numbers(spec.name, values)
            if kind in ("double", "float"):
                columns[spec.name] = numbers
            elif np.isnan(numbers).any():
                raise DataError(f"column '{spec.name}' must be whole numbers without gaps for this model")
            else:
                columns[spec.name] = numbers.astype("int64" if kind == "long" else "int32")
        elif kind == "datetime":
            columns[spec.name] = to_utc_naive(values)
        elif kind == "boolean":
            columns[spec.name] = values.astype("boolean")
        else:
            columns[spec.name] = _strings(values)
    return pd.DataFrame(columns, index=table.index)


def conform_records(records: list[dict[str, Any]], input_schema) -> pd.DataFrame | None:
    """`conform_to_signature(pd.DataFrame(records), input_schema)`, built straight from JSON records when
    every value is plain (numbers or null in numeric columns, text or null in string columns); None
    otherwise, and for models without a signature or with integer, date or boolean inputs."""
    if input_schema is None:
        return None
    present = set().union(*records)
    columns = {}
    for spec in input_schema.inputs:
        if spec.name not in present:
            return None  # the frame path names what is missing
        values = [record.get(spec.name) for record in records]
        kind = spec.type.name
        if kind in ("double", "float"):
            if not all(value is None or type(value) is float or (type(value) is int and -2**53 < value < 2**53)
                       for value in values):
                return None
            columns[spec.name] = np.array([np.nan if value is None else value for value in values], dtype="float64")
            if np.isinf(columns[spec.name]).any():
                return None
        elif kind == "string":
            if not all(value is None or type(value) is str for value in values):
                return None
            columns[spec.name] = np.empty(len(values), dtype=object)
            columns[spec.name][:] = values
        else:
            return None
    return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))


def predict_table(model, table: pd.DataFrame) -> pd.DataFrame:
    """A loaded pyfunc model's predictions for a raw table, conformed to its signature first."""
    schema = model.metadata.get_input_schema()
    features = conform_to_signature(table, schema)
    try:
        return model.predict(features)
    except MlflowException:  # MLflow's message quotes the data rows themselves: name the columns and types instead
        raise DataError(f"input does not match the model's schema: {schema_mismatch(features, schema)}") from None


def schema_mismatch(features: pd.DataFrame, input_schema) -> str:
    """Which input columns have a type the signature does not take, as `column: expected T, got dtype`."""
    problems = []
    for spec in input_schema.inputs if input_schema is not None else []:
        if spec.name in features:
            expected, dtype = _type_name(spec), features[spec.name].dtype
            fits = {"double": dtype == "float64", "float": dtype == "float32", "long": dtype == "int64",
                    "integer": dtype == "int32", "datetime": str(dtype) == "datetime64[ns]",
                    "boolean": pd.api.types.is_bool_dtype(dtype), "string": dtype == object}.get(expected, True)
            if not fits:
                problems.append(f"{spec.name!r}: expected {expected}, got {dtype}")
    return "; ".join(problems[:10]) or "the model rejected the conformed columns (no column type differs)"


def _numbers(name: str, values: pd.Series) -> np.ndarray:
    """A numeric column as float64, refusing values that are present but not finite numbers (no silent NaN)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biuf":  # numbers already (booleans as 0/1)
        numbers = values.to_numpy(dtype="float64")
        if not np.isinf(numbers).any():
            return numbers
    parsed = pd.to_numeric(values.where(~values.map(lambda v: isinstance(v, (list, dict))), "x"),
                           errors="coerce").astype("float64")
    bad = values.notna() & ~np.isfinite(parsed.fillna(0.0).to_numpy()) | (values.notna() & parsed.isna())
    if bad.any():
        example = values[bad].iloc[0]
        raise DataError(f"column '{name}' needs numbers; got {str(example)[:40]!r} in {int(bad.sum())} row(s)")
    return parsed.to_numpy()


def _strings(values: pd.Series) -> np.ndarray:
    """A string column as objects: text stays text, gaps become None, anything else its string form."""
    if values.dtype == object:
        items = values.tolist()
        for i, item in enumerate(items):
            if type(item) is not str:
                if item is None or (type(item) is float and math.isnan(item)):
                    items[i] = None
                else:
                    break
        else:
            out = np.empty(len(items), dtype=object)
            out[:] = items
            return out
    return values.astype("string").astype(object).where(values.notna(), None).to_numpy()


def batch_predict(settings, name: str, data, out, version: str | None = None) -> tuple[Path, int, str]:
    """Predict a whole table with the champion (or `version`) and write it next to the predictions."""
    from agents.data_engineering import load_table

    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    used = version or tracking.champion_version(client, name)
    if used is None:
        from agents.summary import no_champion_error

        raise no_champion_error(settings, client, name, predict_with=(str(data), str(out)))
    try:
        model = tracking.load_model(name, used)
    except MlflowException as error:
        raise SpecError(f"cannot load model '{name}' v{used}: {str(error)[:200]}") from None
    # the file is read with the missing-value tokens the model was trained with
    table, _ = load_table(data, max_bytes=settings.max_file_bytes, na_values=model.model_config.get("na_values") or [])
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


def _settle_heap() -> None:
    """Take what is alive now (libraries, loaded models) out of the cyclic collector's view.

    A full collection walks every tracked object; with AutoGluon, MLflow and the web UI loaded
    that stalled a request for ~0.35 s every few hundred requests (measured). Frozen objects are
    still freed by reference counting; a replaced model's cycles are collected here first."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Unsupported(Exception):
    """The model is outside what `BaggedTreeScorer` reproduces exactly."""


class BaggedTreeScorer:
    """The champion's class probabilities, computed like AutoGluon does but without its per-call overhead.

    Covers bagged LightGBM models (one booster per fold), bagged CatBoost models on numeric columns
    (what the default presets fit on tables with few minority rows), and weighted ensembles of such
    models. AutoGluon spends ~1.5 ms per single-row call on bookkeeping around five ~25 µs booster
    calls (measured; CatBoost: 2.5 ms in all, five ~70 µs model calls). This replays its arithmetic
    step by step (the same input array for each fold model, float32 after each, the fold average,
    the ensemble's own weighting function, AutoGluon's own feature transform and post-processing),
    so it can be checked for bit-identical output; `ServedModel` uses it only after that check
    passes on the model's input example. Anything else raises `Unsupported`."""

    def __init__(self, predictor):
        from autogluon.core.models import GreedyWeightedEnsembleModel, StackerEnsembleModel, WeightedEnsembleModel

        if predictor.problem_type not in ("binary", "multiclass"):
            raise Unsupported(f"problem type {predictor.problem_type}")
        self.predictor = predictor
        trainer = predictor._trainer
        best = trainer.load_model(predictor.model_best)
        self.ensemble = None
        if type(best) is WeightedEnsembleModel:
            children = [best.load_child(child) for child in best.models]
            if len(children) != 1 or type(children[0]) is not GreedyWeightedEnsembleModel:
                raise Unsupported("weighted ensemble with an unexpected inner model")
            self._plain(best, *children)
            self.ensemble = children[0]
            bag_names = list(self.ensemble.base_model_names)
        else:
            bag_names = [best.name]
        self.bags = []
        for name in bag_names:
            bag = trainer.load_model(name)
            if type(bag) is not StackerEnsembleModel or bag.base_model_names:
                raise Unsupported(f"{name} is not a first-level bagged model")
            folds = [bag.load_child(child) for child in bag.models]
            if not folds:
                raise Unsupported(f"{name} has no fold models")
            self._plain(bag, *folds)
            self.bags.append([self._fold_call(name, fold) for fold in folds])

    @staticmethod
    def _fold_call(name: str, fold) -> tuple:
        """How AutoGluon's fold model calls its library: (kind, input columns, library model, input-array key)."""
        from autogluon.tabular.models.catboost.catboost_model import CatBoostModel
        from autogluon.tabular.models.lgb.lgb_model import LGBModel

        columns = list(fold.features)
        if type(fold) is LGBModel and not getattr(fold, "_requires_remap", True):
            return ("lightgbm", columns, fold.model,
                    ("lightgbm", tuple(columns), repr(fold.model.pandas_categorical)))
        if type(fold) is CatBoostModel and fold._category_features == []:  # categories take CatBoost's own encoding
            return "catboost", columns, fold.model, ("catboost", tuple(columns))
        raise Unsupported(f"{name} is neither bagged LightGBM nor bagged CatBoost on numeric columns")

    @staticmethod
    def _plain(*models) -> None:
        for model in models:
            if model.temperature_scalar is not None or model.conformalize is not None or model.normalize_pred_probas:
                raise Unsupported(f"{model.name} rescales its probabilities")

    def predict_proba(self, features: pd.DataFrame) -> pd.DataFrame:
        """Like `TabularPredictor.predict_proba(features)`: one column per class, in AutoGluon's order."""
        learner = self.predictor._learner
        index = features.index
        transformed = learner.transform_features(features)
        arrays: dict[tuple, np.ndarray] = {}  # folds usually share their columns: one array for all of them
        per_bag = [self._bag_proba(transformed, folds, arrays) for folds in self.bags]
        if self.ensemble is None:
            proba = per_bag[0]
        else:  # the inner model's own weighting, then its float32 cast, then the (single-fold) average
            proba = self.ensemble.model.predict_proba(per_bag).astype(np.float32) / 1
        return learner._post_process_predict_proba(y_pred_proba=proba, as_pandas=True, index=index,
                                                   as_multiclass=True, inverse_transform=True)

    @staticmethod
    def _bag_proba(transformed: pd.DataFrame, folds, arrays: dict) -> np.ndarray:
        from lightgbm.basic import _data_from_pandas

        total = None
        for kind, columns, model, key in folds:
            if kind == "lightgbm":
                if key not in arrays:  # the array `Booster.predict(frame)` builds, built once per call
                    arrays[key] = _data_from_pandas(transformed[columns], feature_name="auto",
                                                    categorical_feature="auto",
                                                    pandas_categorical=model.pandas_categorical)[0]
                raw = model.predict(arrays[key], num_threads=0)  # as AutoGluon's LightGBM model calls it
            else:  # CatBoost reads every numeric feature as float32
                if key not in arrays:
                    arrays[key] = transformed[columns].to_numpy(dtype=np.float32)
                raw = model.predict(arrays[key], prediction_type="Probability", thread_count=1)
            if raw.ndim == 2 and raw.shape[1] == 2:  # binary as two columns: AutoGluon keeps the positive one
                raw = raw[:, 1]
            proba = raw.astype(np.float32)
            if total is None:
                total = proba
            else:
                total += proba
        return total / len(folds)


class _ScoredPredictor:
    """The AutoGluon predictor, with plain `predict_proba(frame)` calls answered by a scorer."""

    def __init__(self, predictor, scorer: BaggedTreeScorer):
        self._predictor, self._scorer = predictor, scorer

    def predict_proba(self, data, *args, **kwargs):
        if args or kwargs or not isinstance(data, pd.DataFrame):
            return self._predictor.predict_proba(data, *args, **kwargs)
        return self._scorer.predict_proba(data)

    def __getattr__(self, name: str):
        return getattr(self._predictor, name)


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
            fast._predictor = _ScoredPredictor(inner._predictor, BaggedTreeScorer(inner._predictor))
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
        """The current champion, loaded; raises NoChampion (naming the versions and next steps) when there is none,
        NotFound when no version of the model is registered."""
        version = self.champion(name)
        if version is None:
            from agents.summary import no_champion_error

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
