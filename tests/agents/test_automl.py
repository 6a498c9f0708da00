"""The imbalance policy: which class is positive, which metric, weights, bagging, and refusals;
and how the fit uses the machine."""

import gc
import importlib.metadata
import json

import numpy as np
import pandas as pd
import pytest
from autogluon.tabular import TabularPredictor

from poise.agents.automl import (
    EXTRA_MODELS_MIN_SECONDS,
    fit,
    frozen_heap,
    model_portfolio,
    scan_packages_once,
    with_fast_threads,
)
from poise.agents.errors import SpecError
from poise.agents.imbalance_policy import MAX_BAGGED_ROWS, MIN_BAGGED_TIME_LIMIT, choose_policy, expected_cost


def _profile(counts: dict[str, int], problem_type: str = "binary") -> dict:
    minority = min(counts, key=counts.get)
    majority = max(counts, key=counts.get)
    return {"target": {"name": "y", "problem_type": problem_type, "class_counts": counts,
                       "minority_class": minority, "majority_class": majority,
                       "imbalance_ratio": counts[majority] / counts[minority]}}


def test_minority_is_positive_even_when_it_sorts_first():
    # AutoGluon would take 'good' (sorts last) as positive and optimise F1 of the majority
    policy = choose_policy(_profile({"good": 9300, "bad": 490}), time_limit=120)
    assert policy["positive_class"] == "bad"
    assert policy["eval_metric"] == "f1" and policy["sample_weight"] == "balance_weight"
    assert policy["calibrate_threshold"] and policy["num_bag_folds"] == 5
    assert any("minority" in reason for reason in policy["reasons"])
    assert any("out-of-fold" in reason and "neutral 0.5" in reason for reason in policy["reasons"])


def test_tables_beyond_the_bagging_limit_keep_a_validation_split_and_balanced_weights():
    policy = choose_policy(_profile({"good": MAX_BAGGED_ROWS, "bad": 490}), time_limit=120)
    assert policy["num_bag_folds"] == 0 and policy["sample_weight"] == "balance_weight"
    assert any("validation split" in reason and "neutral 0.5" in reason for reason in policy["reasons"])
    within = choose_policy(_profile({"good": MAX_BAGGED_ROWS - 490, "bad": 490}), time_limit=120)
    assert within["num_bag_folds"] == 5


def test_a_short_budget_keeps_a_validation_split_unless_the_minority_is_few():
    short = choose_policy(_profile({"good": 9300, "bad": 490}), time_limit=MIN_BAGGED_TIME_LIMIT - 1)
    assert short["num_bag_folds"] == 0 and short["sample_weight"] == "balance_weight"
    assert any(f"a {MIN_BAGGED_TIME_LIMIT - 1} s budget" in reason for reason in short["reasons"])
    assert choose_policy(_profile({"good": 9300, "bad": 490}), time_limit=MIN_BAGGED_TIME_LIMIT)["num_bag_folds"] == 5
    assert choose_policy(_profile({"no": 1400, "yes": 51}), time_limit=10)["num_bag_folds"] == 5


def test_few_minority_rows_switch_to_bagging_without_weights():
    policy = choose_policy(_profile({"no": 1400, "yes": 51}), time_limit=120)
    assert policy["num_bag_folds"] == 5 and policy["sample_weight"] is None
    assert any("out-of-fold" in reason for reason in policy["reasons"])
    assert not any("neutral 0.5" in reason for reason in policy["reasons"])


@pytest.mark.slow
def test_no_signal_does_not_flag_everyone(tmp_path):
    """On pure noise, F1 of the minority is maximised by flagging every row; the guard re-tunes for macro-F1."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({f"x{i}": rng.normal(size=600) for i in range(4)})
    table["y"] = np.where(rng.random(600) < 0.10, "rare", "common")
    policy = choose_policy(_profile(table["y"].value_counts().to_dict()), time_limit=120)
    summary, fitted = fit(table, "y", policy, path=tmp_path / "ag", deploy_path=tmp_path / "deploy", time_limit=15,
                          presets="medium_quality")
    predictor = TabularPredictor.load(summary["predictor_dir"], verbosity=0)
    flagged = (predictor.predict_proba_oof()["rare"] >= summary["threshold"]).mean()
    assert flagged <= 0.5 and "no usable signal" in summary["threshold_note"]
    assert predictor.decision_threshold == pytest.approx(summary["threshold"])
    # the deployment copy keeps the threshold and the best model, and predicts as the fitted predictor does
    deployed = TabularPredictor.load(summary["deploy_dir"], verbosity=0)
    assert deployed.decision_threshold == pytest.approx(summary["threshold"])
    assert deployed.model_best == fitted.model_best == summary["best_model"]
    # the default presets fit CatBoost alone
    assert summary["model_types"] == ["CAT"] and set(fitted.model_names()) == {"CatBoost_BAG_L1", fitted.model_best}
    features = table.drop(columns=["y"])
    pd.testing.assert_frame_equal(deployed.predict_proba(features), fitted.predict_proba(features))


def test_user_named_positive_class_and_unknown_label():
    named = choose_policy(_profile({"a": 900, "b": 100}), time_limit=120, positive_class="a")
    assert named["positive_class"] == "a"
    with pytest.raises(SpecError, match="'c' is not a label"):
        choose_policy(_profile({"a": 900, "b": 100}), time_limit=120, positive_class="c")


def test_a_weight_column_weighs_training_validation_and_threshold():
    policy = choose_policy(_profile({"no": 1400, "yes": 51}), time_limit=120, weight_column="poise_weight")
    assert policy["sample_weight"] == "poise_weight" and policy["weight_evaluation"]
    assert policy["num_bag_folds"] == 5  # few minority rows: still bagged, now with the given weights
    many = choose_policy(_profile({"no": 9300, "yes": 490}), time_limit=120, weight_column="poise_weight")
    assert many["num_bag_folds"] == 0 and many["sample_weight"] == "poise_weight"  # the weighted validation split
    assert not choose_policy(_profile({"good": 9300, "bad": 490}), time_limit=120)["weight_evaluation"]


def test_multiclass_uses_macro_f1_and_no_threshold():
    policy = choose_policy(_profile({"a": 500, "b": 300, "c": 40}, "multiclass"), time_limit=120)
    assert policy["eval_metric"] == "f1_macro" and policy["positive_class"] is None
    assert not policy["calibrate_threshold"]


@pytest.mark.parametrize(
    ("objective", "kwargs", "problem_type", "message"),
    [
        ("cost", {"cost_fn": 10}, "binary", "needs both"),
        ("cost", {"cost_fn": 10, "cost_fp": 0}, "binary", "each > 0"),
        ("f1", {"cost_fn": 10, "cost_fp": 1}, "binary", "only used with"),
        ("cost", {"cost_fn": 10, "cost_fp": 1}, "multiclass", "binary target"),
        ("accuracy", {}, "binary", "unknown objective"),
        ("f1", {}, "regression", "classifiers only"),
    ],
)
def test_inconsistent_requests_are_refused(objective, kwargs, problem_type, message):
    counts = {"a": 500, "b": 300, "c": 40} if problem_type == "multiclass" else {"a": 900, "b": 100}
    profile = _profile(counts, problem_type)
    with pytest.raises(SpecError, match=message):
        choose_policy(profile, objective, **kwargs, time_limit=120)


def test_expected_cost_counts_each_error_at_its_price():
    y_true = np.array([1, 1, 0, 0, 0])
    y_pred = np.array([0, 1, 1, 0, 0])  # one missed positive, one false alarm
    assert expected_cost(y_true, y_pred, cost_fn=10, cost_fp=1) == pytest.approx(11 / 5)


def _threads(portfolio: dict, model_type: str) -> set:
    configs = portfolio[model_type] if isinstance(portfolio[model_type], list) else [portfolio[model_type]]
    return {config.get("ag_args_fit", {}).get("num_cpus") for config in configs}


def test_the_default_presets_fit_catboost_unless_it_is_excluded():
    assert set(model_portfolio("medium_quality")) == {"CAT"}
    everything = model_portfolio("medium_quality", excluded_model_types=["CAT"])  # AutoGluon drops the excluded
    assert {"CAT", "GBM", "XGB", "RF", "XT"} <= set(everything)
    assert {"GBM", "CAT", "XGB"} <= set(model_portfolio("best_quality"))  # other presets keep AutoGluon's


@pytest.mark.parametrize("presets", ["high_quality", "best_quality"])
def test_lightgbm_and_xgboost_get_one_thread_on_small_tables_under_the_passive_policy(presets, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    portfolio = model_portfolio(presets)
    small = with_fast_threads(portfolio, rows=49_999)
    assert _threads(small, "GBM") == {1} and _threads(small, "XGB") == {1}
    assert _threads(small, "CAT") == {None}  # CatBoost has its own thread pool: two threads stay faster
    assert set(small) == set(portfolio) and _threads(portfolio, "GBM") == {None}  # the presets' own is untouched
    assert _threads(with_fast_threads(portfolio, rows=50_000), "GBM") == {None}
    assert _threads(with_fast_threads({"GBM": {}}, rows=1_000), "GBM") == {1}  # the fallback's single LightGBM
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert _threads(with_fast_threads(portfolio, rows=1_000), "XGB") == {None}


def test_the_heap_is_unfrozen_even_when_the_fit_fails():
    with pytest.raises(RuntimeError), frozen_heap():
        assert gc.get_freeze_count() > 0
        raise RuntimeError("fit failed")
    assert gc.get_freeze_count() == 0


def test_installed_packages_are_scanned_once_per_process():
    from autogluon.common.utils import utils

    scan_packages_once()
    scan_packages_once()  # a second fit in the process keeps the one cache
    first, _ = utils.get_package_versions()
    first["autogluon.tabular"] = "changed by a caller"
    second, _ = utils.get_package_versions()
    assert utils.get_package_versions.cache_info().misses == 1
    assert second["autogluon.tabular"] == importlib.metadata.version("autogluon.tabular")


@pytest.mark.slow
def test_a_small_fit_runs_openmp_models_on_one_thread(tmp_path):
    rng = np.random.default_rng(1)
    table = pd.DataFrame({f"x{i}": rng.normal(size=800) for i in range(4)})
    table["y"] = np.where(table["x0"] + rng.normal(scale=0.5, size=800) > 1.3, "rare", "common")
    policy = choose_policy(_profile(table["y"].value_counts().to_dict()), time_limit=120,
                           excluded_model_types=["CAT", "RF", "XT", "KNN"])
    summary, _ = fit(table, "y", policy, path=tmp_path / "ag", deploy_path=tmp_path / "deploy", time_limit=20,
                     presets="medium_quality")
    models = TabularPredictor.load(summary["predictor_dir"], verbosity=0).info()["model_info"]
    threads = {name: next(iter(info["children_info"].values()))["num_cpus"]
               for name, info in models.items() if info.get("children_info")}
    assert threads["LightGBM_BAG_L1"] == 1 and threads["XGBoost_BAG_L1"] == 1
    # the metadata AutoGluon saves beside the predictor still lists what is installed
    metadata = json.loads((tmp_path / "deploy" / "metadata.json").read_text())
    assert metadata["packages"]["lightgbm"] == importlib.metadata.version("lightgbm")


@pytest.mark.slow
def test_an_unused_budget_fits_the_rest_of_the_portfolio_and_a_refit_repeats_the_same_models(tmp_path):
    rng = np.random.default_rng(2)
    table = pd.DataFrame({f"x{i}": rng.normal(size=700) for i in range(4)})
    table["y"] = np.where(table["x0"] + rng.normal(scale=0.7, size=700) > 1.5, "rare", "common")
    policy = choose_policy(_profile(table["y"].value_counts().to_dict()), time_limit=120,
                           excluded_model_types=["KNN", "RF", "XT"])

    # CatBoost takes a few seconds here: the rest of the limit is over EXTRA_MODELS_MIN_SECONDS
    summary, fitted = fit(table, "y", policy, path=tmp_path / "ag", deploy_path=tmp_path / "deploy",
                          time_limit=EXTRA_MODELS_MIN_SECONDS + 12, presets="medium_quality")
    assert summary["model_types"] == ["CAT", "GBM", "XGB"]
    assert {"CatBoost_BAG_L1", "LightGBM_BAG_L1", "XGBoost_BAG_L1"} <= set(fitted.model_names())
    assert summary["best_model"].startswith("WeightedEnsemble")  # over all of them, weighted out of fold

    refit, refitted = fit(table, "y", policy, path=tmp_path / "full", deploy_path=tmp_path / "deploy_full",
                          time_limit=60, presets="medium_quality", model_types=summary["model_types"])
    assert refit["model_types"] == summary["model_types"]
    names = refitted.model_names()
    assert {"CatBoost_BAG_L1", "LightGBM_BAG_L1", "XGBoost_BAG_L1"} <= set(names)  # in one fit, none added later
    assert all(name.startswith(("CatBoost", "LightGBM", "XGBoost", "WeightedEnsemble_L")) for name in names)

    short, _ = fit(table, "y", policy, path=tmp_path / "short", deploy_path=tmp_path / "deploy_short",
                   time_limit=EXTRA_MODELS_MIN_SECONDS, presets="medium_quality")
    assert short["model_types"] == ["CAT"]  # too little left after CatBoost: no extra models
