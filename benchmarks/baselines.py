"""The imbalance benchmark's baselines, fitted the way their users run them.

`benchmarks/imbalance.py` runs Poise in its own process, and Poise sets
`OMP_WAIT_POLICY=PASSIVE` before LightGBM loads (see `agents/__init__.py`). Someone running
plain AutoGluon or LightGBM has no such setting, and under it multi-threaded LightGBM and
XGBoost are many times slower on small tables (every parallel region wakes sleeping threads;
measured in `agents/automl.py`, which is why Poise gives them one thread). Timed in Poise's
process, the baselines would carry a handicap they do not have in real use. So the benchmark
runs this script in a fresh process whose environment has no `OMP_WAIT_POLICY`, and this
script imports nothing from Poise (importing `pipelines` or `agents` would set it). Each fit
is timed in here around fit + predict, after an untimed AutoGluon warm-up fit on a slice of
the training rows: process start, imports and first-use costs are charged to no method, as
Poise's are not (its process is warmed up the same way). Measured on yeast4: AutoGluon's
defaults took 4.16 s as the first fit of a fresh process and 3.2 s after it.

    python benchmarks/baselines.py RUNDIR --target T --minority M --budget B --presets P
        --seed S --methods a,b [--preprocess plain|real]

reads RUNDIR/train.parquet and RUNDIR/holdout.parquet and writes RUNDIR/baselines.json:
`{method: {"status": "ok", "seconds", "pred", "proba", ...}}` (labels and minority-class
probabilities of the holdout rows, in order, plus what a method reports about itself, e.g.
`autogluon_tuned`'s decision threshold) or `{method: {"status": "failed", "error"}}`.

`autogluon_tuned` is AutoGluon configured by hand the way an expert would for an imbalanced
binary table: `positive_class` = the minority, `sample_weight="balance_weight"`,
`eval_metric="f1"`, and fit's default `calibrate_decision_threshold="auto"` (which calibrates
the threshold for F1 on binary problems); `predict` applies that threshold.

`--preprocess` picks the scikit-learn baselines' recipe. `plain` (the default, what
`benchmarks/imbalance.py` uses, whose tables are all-numeric without gaps): numeric columns
as they are (standardised for the logistic regression), other columns one-hot. `real`, for
real mixed-type tables with gaps (`benchmarks/real_tables.py`), a generic recipe a competent
user would write without looking at the table (`TableCleaner` and `real_encoder`):
- a non-numeric column whose values are ISO dates or timestamps (>= 95 % of a sample) becomes
  four numbers: year, month, day of week, hour;
- a non-numeric column with more than 100 distinct values making up more than half of its
  rows is free text or an identifier (a film title, a stop id) and is dropped;
- other non-numeric columns are categories, gaps becoming their own value "missing", one-hot
  encoded with at most 20 columns (rarer values share an "infrequent" column, unseen values
  map there too);
- numeric columns (booleans as 0/1, the date parts) get median imputation plus a
  missing-indicator column for each column with gaps in the training rows.
"""

import argparse
import importlib.util
import json
import logging
import re
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from autogluon.tabular import TabularPredictor
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline as ImbPipeline
from lightgbm import LGBMClassifier
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HAS_TORCH = importlib.util.find_spec("torch") is not None
WARM_UP_ROWS_PER_CLASS = 50
if not HAS_TORCH:
    # AutoGluon logs "Failed to import torch" at ERROR level on every GPU probe, whatever the
    # verbosity; without torch that is expected, and this logger emits nothing else.
    logging.getLogger("autogluon.common.utils.resource_utils").setLevel(logging.CRITICAL)


def encoder(X: pd.DataFrame, scale: bool) -> ColumnTransformer:
    """Numeric columns (optionally standardised) plus one-hot encoded non-numeric ones."""
    categorical = X.select_dtypes(exclude="number").columns.tolist()
    numeric = [c for c in X.columns if c not in categorical]
    return ColumnTransformer(
        [
            ("numeric", StandardScaler() if scale else "passthrough", numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ]
    )


ISO_DATETIME = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
DATETIME_SHARE = 0.95
TEXT_MIN_UNIQUE = 100
TEXT_UNIQUE_SHARE = 0.5
MAX_CATEGORIES = 20
MISSING_CATEGORY = "missing"


class TableCleaner(BaseEstimator, TransformerMixin):
    """The `real` recipe's column typing (see the module docstring): decided on the training rows,
    applied alike to any rows. Output: numeric columns as float, categorical ones as strings."""

    def fit(self, X: pd.DataFrame, y=None):
        self.numeric_, self.datetime_, self.categorical_, self.dropped_ = [], [], [], []
        for name in X.columns:
            values = X[name]
            if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
                self.numeric_.append(name)
                continue
            present = values.dropna().astype(str)
            sample = present.sample(min(len(present), 1000), random_state=0) if len(present) else present
            if len(sample) and sample.str.fullmatch(ISO_DATETIME).mean() >= DATETIME_SHARE:
                self.datetime_.append(name)
            elif present.nunique() > max(TEXT_MIN_UNIQUE, TEXT_UNIQUE_SHARE * len(present)):
                self.dropped_.append(name)
            else:
                self.categorical_.append(name)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        columns = {name: X[name].astype("float64") for name in self.numeric_}
        for name in self.datetime_:
            stamps = pd.to_datetime(X[name], errors="coerce", utc=True, format="ISO8601")
            for part in ("year", "month", "dayofweek", "hour"):
                columns[f"{name}_{part}"] = getattr(stamps.dt, part).astype("float64")
        for name in self.categorical_:
            columns[name] = X[name].astype(object).where(X[name].notna(), MISSING_CATEGORY).astype(str)
        return pd.DataFrame(columns, index=X.index)


def real_encoder(scale: bool) -> list[tuple[str, object]]:
    """The `real` recipe's pipeline steps: typing, imputation, capped one-hot (see the module docstring)."""
    numeric = [("impute", SimpleImputer(strategy="median", add_indicator=True))]
    if scale:
        numeric.append(("scale", StandardScaler()))
    return [
        ("clean", TableCleaner()),
        ("encode", ColumnTransformer([
            ("numeric", Pipeline(numeric), make_column_selector(dtype_include="number")),
            ("categorical", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=MAX_CATEGORIES,
                                          sparse_output=False), make_column_selector(dtype_exclude="number")),
        ])),
    ]


def encoding_steps(X: pd.DataFrame, args, scale: bool) -> list[tuple[str, object]]:
    """The steps before the model: the `plain` or the `real` recipe (`--preprocess`)."""
    return real_encoder(scale) if args.preprocess == "real" else [("encode", encoder(X, scale))]


def fit_autogluon(train, holdout, args, balanced):
    """`TabularPredictor(label=...)` with its defaults (no weights, default metric), or with balanced weights."""
    fit_kwargs = {"time_limit": args.budget, "presets": args.presets}
    if not HAS_TORCH:
        fit_kwargs["excluded_model_types"] = ["NN_TORCH", "FASTAI"]
    extra = {"sample_weight": "balance_weight"} if balanced else {}
    X = holdout.drop(columns=[args.target])
    with tempfile.TemporaryDirectory(dir=args.rundir, prefix="ag-") as path:
        start = time.perf_counter()
        predictor = TabularPredictor(label=args.target, path=path, verbosity=0, **extra)
        predictor.fit(train, **fit_kwargs)
        pred = predictor.predict(X).astype(str).to_numpy()
        proba = predictor.predict_proba(X)[args.minority].to_numpy()
        seconds = time.perf_counter() - start
    return pred, proba, seconds


def fit_autogluon_tuned(train, holdout, args):
    """AutoGluon set up by hand for the minority class (see the module docstring); `predict` applies
    the decision threshold fit calibrated, reported with the result so the calibration can be checked."""
    fit_kwargs = {"time_limit": args.budget, "presets": args.presets}
    if not HAS_TORCH:
        fit_kwargs["excluded_model_types"] = ["NN_TORCH", "FASTAI"]
    X = holdout.drop(columns=[args.target])
    with tempfile.TemporaryDirectory(dir=args.rundir, prefix="ag-tuned-") as path:
        start = time.perf_counter()
        predictor = TabularPredictor(label=args.target, path=path, verbosity=0, positive_class=args.minority,
                                     sample_weight="balance_weight", eval_metric="f1")
        predictor.fit(train, **fit_kwargs)
        pred = predictor.predict(X).astype(str).to_numpy()
        proba = predictor.predict_proba(X)[args.minority].to_numpy()
        seconds = time.perf_counter() - start
        # untimed evidence that fit calibrated the threshold: fit's "auto" rule (a metric that needs classes,
        # binary, >= 50 validation rows for calibration), and what a second calibration finds (the same value)
        validation_rows = predictor._trainer.num_rows_val_for_calibration
        info = {"decision_threshold": float(predictor.decision_threshold),
                "threshold_calibrated_by_fit": bool(predictor._can_calibrate_decision_threshold()
                                                    and validation_rows >= 50),
                "calibration_rows": int(validation_rows),
                "threshold_recalibrated": float(predictor.calibrate_decision_threshold(verbose=False)),
                "positive_class": str(predictor.positive_class), "best_model": predictor.model_best}
    return pred, proba, seconds, info


def fit_sklearn(model, train, holdout, args):
    X_train, y_train = train.drop(columns=[args.target]), train[args.target]
    X = holdout.drop(columns=[args.target])
    start = time.perf_counter()
    model.fit(X_train, y_train)
    pred = model.predict(X)
    proba = model.predict_proba(X)[:, list(model.classes_).index(args.minority)]
    return pred, proba, time.perf_counter() - start


def fit_smote_lightgbm(train, holdout, args):
    model = ImbPipeline(
        [
            *encoding_steps(train.drop(columns=[args.target]), args, scale=False),
            ("smote", SMOTE(random_state=args.seed)),
            ("model", LGBMClassifier(random_state=args.seed, verbose=-1)),
        ]
    )
    return fit_sklearn(model, train, holdout, args)


def fit_balanced_logreg(train, holdout, args):
    model = Pipeline(
        [
            *encoding_steps(train.drop(columns=[args.target]), args, scale=True),
            ("model", LogisticRegression(class_weight="balanced", max_iter=2000)),
        ]
    )
    return fit_sklearn(model, train, holdout, args)


def warm_up(train, args) -> None:
    """An untimed AutoGluon fit on a few rows per class: it loads what AutoGluon's models import on first use."""
    rows = train.groupby(args.target, group_keys=False).head(WARM_UP_ROWS_PER_CLASS)
    fit_kwargs = {"excluded_model_types": ["NN_TORCH", "FASTAI"]} if not HAS_TORCH else {}
    with tempfile.TemporaryDirectory(dir=args.rundir, prefix="warm-up-") as path:
        TabularPredictor(label=args.target, path=path, verbosity=0).fit(rows, presets=args.presets, **fit_kwargs)


BASELINES = {
    "autogluon_default": partial(fit_autogluon, balanced=False),
    "autogluon_balanced": partial(fit_autogluon, balanced=True),
    "autogluon_tuned": fit_autogluon_tuned,
    "smote_lightgbm": fit_smote_lightgbm,
    "balanced_logreg": fit_balanced_logreg,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rundir", type=Path)
    parser.add_argument("--target", required=True)
    parser.add_argument("--minority", required=True)
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--presets", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--methods", required=True, help=f"comma list of {', '.join(BASELINES)}")
    parser.add_argument("--preprocess", choices=("plain", "real"), default="plain",
                        help="the scikit-learn baselines' recipe (see the module docstring)")
    args = parser.parse_args()
    train = pd.read_parquet(args.rundir / "train.parquet")
    holdout = pd.read_parquet(args.rundir / "holdout.parquet")
    train[args.target] = train[args.target].astype(str)
    methods = args.methods.split(",")
    if any(method.startswith("autogluon") for method in methods):
        warm_up(train, args)
    results = {}
    for method in methods:
        try:
            pred, proba, seconds, *info = BASELINES[method](train, holdout, args)
            results[method] = {"status": "ok", "seconds": seconds, "pred": np.asarray(pred, dtype=str).tolist(),
                               "proba": np.asarray(proba, dtype=float).tolist(), **(info[0] if info else {})}
        except Exception as error:  # record and go on: one failing method must not lose the others
            results[method] = {"status": "failed", "error": repr(error)}
    (args.rundir / "baselines.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
