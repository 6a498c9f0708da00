"""The MLflow pyfunc flavour of a Poise model, logged as "models from code".

MLflow copies this file into the model artifact and runs it at load time, so a
registered model needs only `autogluon.tabular`, `pandas` and `mlflow` to serve,
not Poise itself. It wraps the AutoGluon predictor folder (an artifact) and the
decision threshold calibrated at training time (in `model_config`), and returns
the label plus one probability column per class, with string column names.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402
from mlflow.pyfunc import PythonModel  # noqa: E402

MAX_MEMORY_SHARE = 0.4  # AutoGluon's default: models larger than this share of free memory stay on disk


def boolean_words(values: pd.Series, true_tokens: set[str], false_tokens: set[str]) -> pd.Series:
    """'true', 'false' or None for each value, read with training's tokens (lower case, whole floats without '.0').

    Boolean columns were trained as the words 'true'/'false', whatever the file spelled (Yes/No, Y/N, 1/0,
    True/False); a served row spells them as its client does, so they are read the same way here."""
    tokens = values.map(lambda value: None if value is None or value != value
                        else str(value).strip().lower().removesuffix(".0"))
    return tokens.map(lambda token: "true" if token in true_tokens else "false" if token in false_tokens else None)


class AutoGluonPyfunc(PythonModel):
    """Predicts with the AutoGluon predictor at the threshold stored in `model_config`."""

    def load_context(self, context):
        from autogluon.tabular import TabularPredictor

        self._predictor = TabularPredictor.load(context.artifacts["predictor_dir"], check_packages=False)
        # AutoGluon's own memory check before persisting pickles every model after a full garbage
        # collection (3 s for a bagged page_blocks0 model); the folder's size on disk, the same pickles,
        # answers the same question at once
        if self._predictor.disk_usage() < MAX_MEMORY_SHARE * psutil.virtual_memory().available:
            self._predictor.persist(max_memory=None)
        config = context.model_config or {}
        self._threshold = config.get("decision_threshold")
        self._prior_weights = config.get("prior_weights")
        self._boolean_columns = config.get("boolean_columns") or []
        tokens = config.get("boolean_tokens") or {}
        self._true_tokens, self._false_tokens = set(tokens.get("true", [])), set(tokens.get("false", []))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if self._boolean_columns:
            model_input = model_input.assign(**{
                name: boolean_words(model_input[name], self._true_tokens, self._false_tokens)
                for name in self._boolean_columns if name in model_input})
        if not self._predictor.can_predict_proba:
            return pd.DataFrame({"label": self._predictor.predict(model_input).to_numpy()})
        proba = self._predictor.predict_proba(model_input)
        if self._prior_weights:
            proba = proba * [self._prior_weights[str(label)] for label in proba.columns]
            proba = proba.div(proba.sum(axis=1).replace(0.0, 1.0), axis=0)
        labels = self._predictor.predict_from_proba(proba, decision_threshold=self._threshold)
        columns = {"label": labels.astype(str).to_numpy()}
        for label in proba.columns:
            columns[f"proba_{label}"] = proba[label].to_numpy(dtype="float64")
        return pd.DataFrame(columns)


mlflow.models.set_model(AutoGluonPyfunc())
