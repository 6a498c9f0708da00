"""AutoML agent: fits AutoGluon under the imbalance policy (`agents.imbalance_policy`).

Tables up to `imbalance_policy.MAX_BAGGED_ROWS` rows are fitted with 5-fold bagging, so models, their
ensemble and the decision threshold are validated on out-of-fold predictions of every
training row; bigger ones on AutoGluon's validation split. Weights follow the number of
minority rows (the policy chose): with enough (>= 200), balanced sample weights; with
few, none: weights there only distort the out-of-fold probabilities the threshold is
chosen on (measured: hypothyroid 0.908 -> 0.982 and yeast4 0.696 -> 0.743 macro-F1
without them). The decision threshold is tuned on those validation predictions, never
the holdout (`agents.decision_threshold`).

The default presets (`medium_quality`) fit CatBoost alone: on the benchmark tables
it scored as well as AutoGluon's whole portfolio in a fraction of the time
(`LEAN_MODEL_TYPES`); other presets fit AutoGluon's own portfolio.
"""

from __future__ import annotations

import copy
import functools
import gc
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from poise.agents import decision_threshold
from poise.agents.imbalance_policy import autogluon_metric

FIT_SHARE_OF_BUDGET = 0.8  # the rest of the job budget goes to profiling, evaluation and registration
# A job that refits its model on every labelled row gives the first fit (the one its holdout scores) this share of the
# fitting budget; the refit gets the rest, plus whatever the first fit left unused.
HOLDOUT_FIT_SHARE = 0.5
# Measured and rejected (real-table suite, 60 s, 3 seeds, against this code's per-table means): the refit repeating its
# 5-fold bagging in the time it leaves unused (AutoGluon's num_bag_sets up to 5 with delay_bag_sets). Only the small
# tables had time for a second set, and it cost them: attrition -0.007, headInjury -0.006, NCbirths -0.009 macro-F1
# (HMDA +0.004); the six time-bound tables measured were unchanged.
# What models that early-stop (boosted trees, networks) stop on. AutoGluon would use the eval metric; for F1 that is
# a thresholded, noisy signal on a few validation positives, computed in Python every boosting round (a LightGBM
# on ~1,300 rows: 5.1 s for 275 rounds). Model choice, ensembling and the threshold still follow the eval metric.
STOPPING_METRIC = "log_loss"
# Poise sets OMP_WAIT_POLICY=PASSIVE (agents/__init__.py) so that spinning OpenMP threads cannot starve other work;
# the price is that each parallel region wakes sleeping threads, and LightGBM and XGBoost open several per boosting
# round. Measured here under PASSIVE, two threads against one: LightGBM 4.5 vs 0.2 ms a round on 1.5k rows and
# 2.8 vs 0.4 ms on 8k; one thread stays faster up to ~60k rows for XGBoost and ~250k for LightGBM.
OPENMP_MODEL_TYPES = ("GBM", "XGB")
ONE_THREAD_BELOW_ROWS = 50_000
# The default presets fit CatBoost alone (bagged or not, as the policy says); other presets keep AutoGluon's portfolio.
# Measured, 3 seeds per table: medium_quality's whole portfolio fitted once under the policy, then the weighted
# ensemble of each subset thresholded on the same rows and scored on the holdout. On the ten imbalance benchmark
# tables CatBoost alone scored a mean macro-F1 of 0.851 after 1.9 s of model fitting, all nine models 0.851 after
# 6.9 s (their ensembles gave CatBoost most of the weight); on ten other KEEL tables, chosen afterwards to check the
# choice (yeast3, yeast5, vehicle1, pima, abalone9_18, car_good, kc1, pc1, haberman, sylva), 0.767 after 1.6 s
# against 0.762 after 6.6 s (per table -0.034 on kc1 to +0.034 on haberman). A bagged CatBoost predicts one row in
# 2.3 ms through AutoGluon (bagged LightGBM 2.1).
LEAN_MODEL_TYPES = {"medium_quality": ("CAT",)}
# CatBoost alone leaves most of a real table's budget unused (HMDA: 2 s of 24). When at least this many seconds of a
# fit's limit remain after it, the rest of the presets' portfolio is fitted in them and AutoGluon's weighted ensemble,
# fitted on validation (out-of-fold) predictions, decides how much each model counts: nothing, if they do not help.
# Two ways round this threshold were measured on the real-table suite (60 s, 3 seeds, the same session as this rule's
# 0.7521 mean macro-F1) and rejected: CatBoost then LightGBM in the first fit, 0.7522 (Caravan +0.015, taxi +0.011,
# attrition -0.009 and ResumeNames -0.010: LightGBM's seconds pushed what remained under 15 s, so their other models
# went); the whole portfolio in one fit with CatBoost first, 0.7512 (attrition -0.009).
EXTRA_MODELS_MIN_SECONDS = 15


def presets_portfolio(presets: str) -> dict[str, Any]:
    """AutoGluon's own models (and their settings) for the presets, a copy the caller may change."""
    from autogluon.tabular.configs.hyperparameter_configs import get_hyperparameter_config
    from autogluon.tabular.configs.presets_configs import tabular_presets_dict

    config_name = tabular_presets_dict[presets].get("hyperparameters", "default")
    return copy.deepcopy(get_hyperparameter_config(config_name))


def model_portfolio(presets: str, excluded_model_types: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The AutoGluon models (and their settings) that Poise fits under the presets: `LEAN_MODEL_TYPES` where the
    presets have them and the user excluded not all of them, else the presets' own portfolio."""
    portfolio = presets_portfolio(presets)
    lean = {model_type: portfolio[model_type] for model_type in LEAN_MODEL_TYPES.get(presets, ())
            if model_type in portfolio and model_type not in excluded_model_types}
    return lean or portfolio


def extra_portfolio(presets: str, fitted: dict[str, Any], excluded_model_types) -> dict[str, Any]:
    """The presets' portfolio less what was already fitted and what is excluded (empty for presets without a lean
    portfolio: those fitted their whole portfolio at once)."""
    if presets not in LEAN_MODEL_TYPES:
        return {}
    return {model_type: config for model_type, config in presets_portfolio(presets).items()
            if model_type not in fitted and model_type not in excluded_model_types}


def with_fast_threads(portfolio: dict[str, Any], rows: int) -> dict[str, Any]:
    """The portfolio with LightGBM and XGBoost on one thread where that is faster (see `OPENMP_MODEL_TYPES`)."""
    if rows >= ONE_THREAD_BELOW_ROWS or os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        return portfolio
    one_thread = {}
    for model_type in set(OPENMP_MODEL_TYPES) & set(portfolio):
        configs = portfolio[model_type] if isinstance(portfolio[model_type], list) else [portfolio[model_type]]
        one_thread[model_type] = [
            config | {"ag_args_fit": config.get("ag_args_fit", {}) | {"num_cpus": 1}} for config in configs
        ]
    return portfolio | one_thread


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist before a fit out of the garbage collections AutoGluon runs during it.

    AutoGluon calls `gc.collect()` before every LightGBM fit and every model-size check: a bagged fit makes dozens
    of those calls, and in a process that has imported MLflow, Evidently and AutoGluon each walks ~385k objects
    (0.2 s here). Frozen, they walk only what the fit itself allocated.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def scan_packages_once() -> None:
    """Make AutoGluon list the installed packages once per process instead of at every predictor save and load.

    Each `save()` and `load()` of a predictor records (or compares) the version of every installed distribution,
    parsing ~210 metadata files: 0.1 s here, and a job saves or loads a predictor five or six times (twice inside
    AutoGluon's fit, the threshold, the deployment copy, MLflow's check that the logged model loads, the gate's
    champion). What is installed does not change while a process trains.
    """
    from autogluon.common.utils import utils

    if hasattr(utils.get_package_versions, "cache_info"):
        return
    scan = functools.cache(utils.get_package_versions)

    @functools.wraps(utils.get_package_versions)
    def package_versions(*, strict: bool = False) -> tuple[dict[str, str], list[str]]:
        versions, invalid = scan(strict=strict)
        return dict(versions), list(invalid)  # callers own what they get, as before

    package_versions.cache_info = scan.cache_info
    utils.get_package_versions = package_versions


def text_metadata(train: pd.DataFrame, label: str, policy: dict[str, Any], text_columns) -> Any:
    """AutoGluon's feature metadata with `text_columns` marked as text, or "infer" (its default) when there are none.

    AutoGluon calls a column text only when its values average three words or more; titles and short comments average
    two or three, and as categories with nearly every value unique they would be dropped."""
    if not text_columns:
        return "infer"
    from autogluon.common.features.feature_metadata import FeatureMetadata

    not_features = [label] + ([policy["sample_weight"]] if policy["sample_weight"] in train.columns else [])
    metadata = FeatureMetadata.from_df(train.drop(columns=not_features))
    return metadata.add_special_types({name: ["text"] for name in text_columns})


def fit_time_limit(job_seconds: int, *, refit_follows: bool = False, used: float | None = None) -> int:
    """The time limit of one fit in a job of `job_seconds`: the first fit's (its share depends on whether a refit
    follows), or the refit's, after a first fit that took `used` seconds."""
    fitting = job_seconds * FIT_SHARE_OF_BUDGET
    if used is not None:
        return max(5, round(fitting - used))
    return max(5, round(fitting * HOLDOUT_FIT_SHARE if refit_follows else fitting))


def fit(
    train: pd.DataFrame,
    label: str,
    policy: dict[str, Any],
    *,
    path: Path,
    deploy_path: Path,
    time_limit: int,
    presets: str,
    num_cpus: int | None = None,
    text_columns: list[str] | tuple[str, ...] = (),
    model_types: list[str] | None = None,
    fold_fitting: str = "sequential_local",
) -> tuple[dict[str, Any], Any]:
    """Fit AutoGluon under the policy within `time_limit` seconds (see `fit_time_limit`), in `path`, and copy what the
    best model needs to predict to `deploy_path` (for logging and serving).

    `text_columns` are free text: AutoGluon featurises them as word n-grams, whatever its own guess would be.
    `model_types` (a refit) fits exactly those AutoGluon model types, with no extra models afterwards.
    `fold_fitting` is AutoGluon's fold-fitting strategy for bagged models: one fold after another in this process
    (how every default here was measured), or `parallel_distributed` on a Ray cluster (pipelines/cluster.py).
    Returns a JSON-able summary, including the calibrated threshold, and the fitted predictor."""
    from autogluon.tabular import TabularPredictor

    scan_packages_once()
    feature_metadata = text_metadata(train, label, policy, text_columns)

    common = {"ag_args_fit": {"stopping_metric": STOPPING_METRIC}, "num_cpus": num_cpus or "auto", "num_gpus": 0,
              "excluded_model_types": policy["excluded_model_types"] or None,
              "ag_args_ensemble": {"fold_fitting_strategy": fold_fitting}}

    def fit_once(fit_path: Path, hyperparameters: dict[str, Any], **limits: Any):
        predictor = TabularPredictor(
            label=label,
            problem_type=policy["problem_type"],
            eval_metric=autogluon_metric(policy),
            path=str(fit_path),
            sample_weight=policy["sample_weight"],
            weight_evaluation=policy.get("weight_evaluation", False),
            positive_class=policy["positive_class"],
            verbosity=0,
        )
        with frozen_heap():
            return predictor.fit(
                train,
                presets=presets,
                hyperparameters=hyperparameters,
                num_bag_folds=policy["num_bag_folds"] or None,
                num_stack_levels=0 if policy["num_bag_folds"] else None,
                calibrate_decision_threshold=False,
                feature_metadata=feature_metadata,
                **common,
                **limits,
            )

    started = time.perf_counter()
    fallback = None
    try:
        portfolio = model_portfolio(presets, policy["excluded_model_types"])
        if model_types is not None:  # a refit: the model types the first fit ended with, fitted at once
            whole = presets_portfolio(presets)
            portfolio = {model_type: whole[model_type] for model_type in model_types if model_type in whole} or portfolio
        predictor = fit_once(path, with_fast_threads(portfolio, len(train)), time_limit=time_limit)
        extra = {} if model_types is not None else extra_portfolio(presets, portfolio, policy["excluded_model_types"])
        remaining = time_limit - (time.perf_counter() - started)
        if extra and remaining >= EXTRA_MODELS_MIN_SECONDS:
            with frozen_heap():
                predictor.fit_extra(with_fast_threads(extra, len(train)), time_limit=remaining, **common)
            portfolio = portfolio | extra
    except RuntimeError as error:
        if "No models were trained" not in str(error):
            raise
        # A tiny budget on a busy machine can leave AutoGluon without a single model:
        # fit one LightGBM (fast on any table AutoGluon accepts) without a time limit instead.
        shutil.rmtree(path, ignore_errors=True)
        portfolio = {"GBM": {}}
        predictor = fit_once(path, with_fast_threads(portfolio, len(train)))
        fallback = (f"no model finished within the {time_limit} s budget on this machine; "
                    "fitted a single LightGBM without a time limit")
    threshold, threshold_note = None, None
    if policy["calibrate_threshold"]:
        threshold, threshold_note = decision_threshold.calibrate(predictor, policy)
        predictor.set_decision_threshold(threshold)
        predictor.save()
    fit_seconds = round(time.perf_counter() - started, 2)
    predictor.clone_for_deployment(str(deploy_path), dirs_exist_ok=True)
    leaderboard = predictor.leaderboard(silent=True)
    summary = {
        "rows": len(train),
        "time_limit": time_limit,
        "predictor_dir": str(path),
        "deploy_dir": str(deploy_path),
        "model_types": sorted(set(portfolio) - set(policy["excluded_model_types"])),
        "best_model": predictor.model_best,
        "threshold": threshold,
        "threshold_note": threshold_note,
        "fit_seconds": fit_seconds,
        "excluded_model_types": policy["excluded_model_types"],
        "fallback": fallback,
        "n_models": int(len(leaderboard)),
        "leaderboard": [
            {"model": str(row["model"]), "score_val": float(row["score_val"]), "fit_time": float(row["fit_time"])}
            for _, row in leaderboard.head(10).iterrows()
        ],
    }
    return summary, predictor
