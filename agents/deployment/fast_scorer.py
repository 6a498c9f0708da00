"""The fast tree scorer: a champion's class probabilities without AutoGluon's per-call overhead, and the record of
whether a loaded model uses it and, when not, why.

AutoGluon spends ~1.5 ms per single-row `predict_proba` on bookkeeping around five ~25 µs LightGBM calls
(measured; CatBoost: 2.5 ms in all, five ~70 µs model calls), most of a served request. `BaggedTreeScorer`
replays its arithmetic for the models Poise's presets usually pick; `choose_path` decides once per loaded
model whether to use it and records the decision as a `ScoringPath`, which the API, its metrics and
`poise show` report: a fallback to AutoGluon's own `predict_proba` is never silent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from poise.agents.deployment import autogluon_internals as internals
from poise.agents.deployment.signature import conform_to_signature

FAST_TREES = "fast_trees"  # `BaggedTreeScorer`, checked bit-identical to AutoGluon on the model's input example
AUTOGLUON = "autogluon"  # the Poise pyfunc's own code, with AutoGluon's `predict_proba`
MLFLOW_PYFUNC = "mlflow_pyfunc"  # MLflow's pyfunc as it is: not a Poise AutoGluon model, or no signature


@dataclass(frozen=True)
class ScoringPath:
    """How a loaded version computes its predictions (`path`, one of the three above), decided when it is loaded.

    Unless it is `fast_trees`, `reason` says why not and `cause` classifies it (for metrics and tests):
    `unsupported_model`, `private_attribute_missing`, `version_mismatch`, `no_input_example`, `output_differs`,
    `scorer_error`, `no_probabilities`, `no_signature` or `not_autogluon`."""

    path: str
    reason: str | None = None
    cause: str | None = None

    def describe(self) -> str:
        """One line for people: the path, and why when it is not the fast one."""
        if self.path == FAST_TREES:
            return (f"serving path: {FAST_TREES} (AutoGluon's bagged trees scored directly, checked bit-identical "
                    f"to its predict_proba when loaded)")
        return f"serving path: {self.path} ({self.cause}: {self.reason})"


class Unsupported(Exception):
    """The model is outside what `BaggedTreeScorer` reproduces exactly; `cause` as in `ScoringPath`."""

    def __init__(self, reason: str, cause: str = "unsupported_model"):
        super().__init__(reason)
        self.cause = cause


class BaggedTreeScorer:
    """The champion's class probabilities, computed like AutoGluon does but without its per-call overhead.

    Covers bagged LightGBM models (one booster per fold), bagged CatBoost models on numeric columns
    (what the default presets fit on tables with few minority rows), and weighted ensembles of such
    models. This replays AutoGluon's arithmetic step by step (each fold model's own input columns in its own
    order, as AutoGluon selects them, since a fold leaves out a column constant in its training rows; one input
    array for folds with the same columns, float32 after each, the fold average, the ensemble's own weighting
    function, AutoGluon's own feature transform and post-processing), so it can be checked for bit-identical
    output; `choose_path` uses it only after that check passes on the model's input example. Anything else
    raises `Unsupported`, a library version other than the pinned one `internals.UnverifiedVersion`, a missing
    private attribute `internals.MissingInternal`."""

    def __init__(self, predictor):
        internals.check_versions("autogluon.tabular", "autogluon.core")
        from autogluon.core.models import (
            GreedyWeightedEnsembleModel,
            StackerEnsembleModel,
            WeightedEnsembleModel,
        )

        if predictor.problem_type not in ("binary", "multiclass"):
            raise Unsupported(f"problem type {predictor.problem_type}")
        trainer = internals.trainer(predictor)
        learner = internals.learner(predictor)
        self._transform_features = learner.transform_features
        self._post_process = internals.post_process_predict_proba(learner)
        self._lightgbm_array = None
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

    def _fold_call(self, name: str, fold) -> tuple:
        """How AutoGluon's fold model calls its library: (kind, input columns, library model, input-array key)."""
        from autogluon.tabular.models.catboost.catboost_model import CatBoostModel
        from autogluon.tabular.models.lgb.lgb_model import LGBModel

        if type(fold) is LGBModel and not internals.lightgbm_renames_columns(fold):
            kind = "lightgbm"
        elif type(fold) is CatBoostModel and internals.catboost_category_columns(fold) == []:
            kind = "catboost"  # (categories would take CatBoost's own encoding)
        else:
            raise Unsupported(f"{name} is neither bagged LightGBM nor bagged CatBoost on numeric columns")
        # A column constant in a fold's training rows is left out of that fold's model: each fold model gets
        # exactly its own columns, in its own order, selected from the transformed frame as AutoGluon does.
        features, columns = list(fold.features), internals.fold_input_columns(fold)
        if not columns or not set(columns) <= set(features):
            raise Unsupported(f"a fold model of {name} reads columns outside its features")
        internals.check_versions(kind)
        if kind == "catboost":
            return "catboost", columns, fold.model, ("catboost", tuple(columns))
        if self._lightgbm_array is None:
            self._lightgbm_array = internals.lightgbm_input_array()
        return "lightgbm", columns, fold.model, ("lightgbm", tuple(columns), repr(fold.model.pandas_categorical))

    @staticmethod
    def _plain(*models) -> None:
        for model in models:
            if model.temperature_scalar is not None or model.conformalize is not None or model.normalize_pred_probas:
                raise Unsupported(f"{model.name} rescales its probabilities")

    def predict_proba(self, features: pd.DataFrame) -> pd.DataFrame:
        """Like `TabularPredictor.predict_proba(features)`: one column per class, in AutoGluon's order."""
        index = features.index
        transformed = self._transform_features(features)
        arrays: dict[tuple, np.ndarray] = {}  # folds usually share their columns: one array for all of them
        per_bag = [self._bag_proba(transformed, folds, arrays) for folds in self.bags]
        if self.ensemble is None:
            proba = per_bag[0]
        else:  # the inner model's own weighting, then its float32 cast, then the (single-fold) average
            proba = self.ensemble.model.predict_proba(per_bag).astype(np.float32) / 1
        return self._post_process(y_pred_proba=proba, as_pandas=True, index=index, as_multiclass=True,
                                  inverse_transform=True)

    def _bag_proba(self, transformed: pd.DataFrame, folds, arrays: dict) -> np.ndarray:
        total = None
        for kind, columns, model, key in folds:
            if kind == "lightgbm":
                if key not in arrays:  # the array `Booster.predict(frame)` builds, built once per call
                    arrays[key] = self._lightgbm_array(transformed[columns], model)
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


def choose_path(pyfunc, schema) -> tuple[Any, ScoringPath]:
    """The Python model to call for a loaded pyfunc (None: call MLflow's pyfunc itself) and the path it takes.

    A Poise AutoGluon pyfunc keeps its predictor as `_predictor` (see `registry.pyfunc_model`). The scorer
    serves it only when it gives exactly the pyfunc's output on the model's input example plus a row of gaps;
    else the pyfunc's own code (AutoGluon's `predict_proba`) does, and the path says why."""
    try:
        inner = pyfunc.unwrap_python_model()
    except (MlflowException, AttributeError, ValueError):
        inner = None
    if schema is None:
        return None, ScoringPath(MLFLOW_PYFUNC, "the model was logged without an input signature", "no_signature")
    predictor = getattr(inner, "_predictor", None)
    if predictor is None:
        return None, ScoringPath(MLFLOW_PYFUNC, "not a Poise AutoGluon model", "not_autogluon")
    if not predictor.can_predict_proba:
        return inner, ScoringPath(AUTOGLUON, "the predictor gives no class probabilities", "no_probabilities")
    try:
        fast = copy.copy(inner)
        fast._predictor = _ScoredPredictor(predictor, BaggedTreeScorer(predictor))
        _check(pyfunc, schema, inner, fast)
    except Unsupported as problem:
        return inner, ScoringPath(AUTOGLUON, str(problem), problem.cause)
    except internals.UnverifiedVersion as problem:
        return inner, ScoringPath(AUTOGLUON, str(problem), "version_mismatch")
    except internals.MissingInternal as problem:
        return inner, ScoringPath(AUTOGLUON, f"private attribute `{problem}` is missing", "private_attribute_missing")
    except Exception as error:  # noqa: BLE001 - any surprise means: keep AutoGluon's own path
        return inner, ScoringPath(AUTOGLUON, f"the scorer failed its check ({type(error).__name__}: {error})"[:300],
                                  "scorer_error")
    return fast, ScoringPath(FAST_TREES)


def _check(pyfunc, schema, inner, fast) -> None:
    """Raise `Unsupported` unless `fast` predicts exactly as `inner` on the input example plus a row of gaps."""
    example = pyfunc.input_example
    if not isinstance(example, pd.DataFrame) or example.empty:
        raise Unsupported("no input example to check the scorer against", "no_input_example")
    gaps = pd.DataFrame([{name: None for name in example.columns}], dtype=object)
    sample = conform_to_signature(pd.concat([example.astype(object), gaps], ignore_index=True), schema)
    try:
        pd.testing.assert_frame_equal(fast.predict(None, sample), inner.predict(None, sample), check_exact=True)
    except AssertionError as difference:
        raise Unsupported(f"scorer output differs from the pyfunc's: {' '.join(str(difference).split())[:200]}",
                          "output_differs") from None
