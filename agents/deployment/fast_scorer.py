"""The fast tree scorer: a champion's class probabilities without AutoGluon's per-call overhead.

AutoGluon spends ~1.5 ms per single-row `predict_proba` on bookkeeping around five ~25 µs LightGBM calls
(measured; CatBoost: 2.5 ms in all, five ~70 µs model calls), most of a served request. `BaggedTreeScorer`
replays its arithmetic for the models Poise's presets usually pick; `agents.deployment.serving` uses it
only after checking that it gives exactly AutoGluon's output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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


class ScoredPredictor:
    """The AutoGluon predictor, with plain `predict_proba(frame)` calls answered by a scorer."""

    def __init__(self, predictor, scorer: BaggedTreeScorer):
        self._predictor, self._scorer = predictor, scorer

    def predict_proba(self, data, *args, **kwargs):
        if args or kwargs or not isinstance(data, pd.DataFrame):
            return self._predictor.predict_proba(data, *args, **kwargs)
        return self._scorer.predict_proba(data)

    def __getattr__(self, name: str):
        return getattr(self._predictor, name)
