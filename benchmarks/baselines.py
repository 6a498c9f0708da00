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
        --seed S --methods a,b

reads RUNDIR/train.parquet and RUNDIR/holdout.parquet and writes RUNDIR/baselines.json:
`{method: {"status": "ok", "seconds", "pred", "proba"}}` (labels and minority-class
probabilities of the holdout rows, in order) or `{method: {"status": "failed", "error"}}`.
"""

import argparse
import importlib.util
import json
import logging
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
from sklearn.compose import ColumnTransformer
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
            ("encode", encoder(train.drop(columns=[args.target]), scale=False)),
            ("smote", SMOTE(random_state=args.seed)),
            ("model", LGBMClassifier(random_state=args.seed, verbose=-1)),
        ]
    )
    return fit_sklearn(model, train, holdout, args)


def fit_balanced_logreg(train, holdout, args):
    model = Pipeline(
        [
            ("encode", encoder(train.drop(columns=[args.target]), scale=True)),
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
            pred, proba, seconds = BASELINES[method](train, holdout, args)
            results[method] = {"status": "ok", "seconds": seconds, "pred": np.asarray(pred, dtype=str).tolist(),
                               "proba": np.asarray(proba, dtype=float).tolist()}
        except Exception as error:  # record and go on: one failing method must not lose the others
            results[method] = {"status": "failed", "error": repr(error)}
    (args.rundir / "baselines.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
