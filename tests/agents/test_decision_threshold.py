"""The decision threshold: tuned on validation rows, and only as far from the neutral 0.5 as those rows can tell."""

import numpy as np
import pandas as pd
import pytest
from autogluon.tabular import TabularPredictor
from sklearn.metrics import f1_score

from poise.agents.automl import fit
from poise.agents.decision_threshold import (
    bootstrap_best_threshold,
    middle_of_ties,
    scores_from_counts,
    steady_threshold,
    validation_predictions,
)
from poise.agents.imbalance_policy import MIN_BAGGED_TIME_LIMIT, choose_policy

F1 = {"eval_metric": "f1"}


def _profile(counts: dict[str, int]) -> dict:
    minority, majority = min(counts, key=counts.get), max(counts, key=counts.get)
    return {"target": {"name": "y", "problem_type": "binary", "class_counts": counts, "minority_class": minority,
                       "majority_class": majority, "imbalance_ratio": counts[majority] / counts[minority]}}


def test_a_tied_threshold_moves_to_the_middle_of_its_plateau():
    positive = np.array([0] * 10 + [1] * 3)
    proba = np.array([0.01] * 9 + [0.1, 0.3, 0.8, 0.9])
    # every threshold in [0.1, 0.3) separates the classes (a row is positive when p > t); AutoGluon keeps the end
    # nearest 0.5, just under the least confident positive
    assert middle_of_ties(0.29, positive, proba, "f1") == pytest.approx(0.1975)
    assert middle_of_ties(0.29, positive, proba, "balanced_accuracy") == pytest.approx(0.1975)
    # a better threshold next to the plateau is not a tie: the run stops before it ([0.3, 0.6) here, F1 0.5)
    assert middle_of_ties(0.5, np.array([0, 1, 0, 1]), np.array([0.2, 0.3, 0.6, 0.7]), "f1") == pytest.approx(0.4475)


@pytest.mark.parametrize("policy", [F1, {"eval_metric": "f1_macro"}, {"eval_metric": "balanced_accuracy"},
                                    {"eval_metric": "expected_cost", "cost_fn": 10.0, "cost_fp": 1.0}])
def test_scores_from_counts_agree_with_the_metric_definitions(policy):
    rng = np.random.default_rng(1)
    truth, predicted = rng.random(300) < 0.2, rng.random(300) < 0.3
    tp, fp = np.sum(truth & predicted), np.sum(~truth & predicted)
    fn, tn = np.sum(truth & ~predicted), np.sum(~truth & ~predicted)
    expected = {"f1": f1_score(truth, predicted), "f1_macro": f1_score(truth, predicted, average="macro"),
                "balanced_accuracy": (tp / (tp + fn) + tn / (tn + fp)) / 2,
                "expected_cost": -(10 * fn + fp) / 300}[policy["eval_metric"]]
    assert scores_from_counts(tp, fp, fn, tn, policy) == pytest.approx(expected)


def test_a_clear_optimum_is_taken_and_a_flat_noisy_curve_stays_at_the_neutral_threshold():
    rng = np.random.default_rng(0)
    positive = rng.random(2000) < 0.1
    # strong signal, every probability pushed up (as balanced weights do): F1 is clearly best well above 0.5
    separated = np.clip(np.where(positive, rng.normal(0.9, 0.05, 2000), rng.normal(0.6, 0.1, 2000)), 0, 1)
    threshold = steady_threshold(positive, separated, F1)
    assert 0.7 <= threshold <= 0.85
    assert f1_score(positive, separated > threshold) > f1_score(positive, separated > 0.5) + 0.2
    # weak signal on a few validation positives: F1's curve is flat and its argmax sits wherever the noise put it,
    # flagging most rows; the rule stays near 0.5
    few = rng.random(600) < 0.1
    weak = np.clip(rng.normal(0.45, 0.15, 600) + 0.05 * few, 0, 1)
    grid = np.linspace(0, 1, 201)
    argmax = grid[np.argmax([f1_score(few, weak > t) for t in grid])]
    assert (weak > argmax).mean() > 0.5
    assert steady_threshold(few, weak, F1) == pytest.approx(0.5, abs=0.1)


def test_the_bootstrap_is_deterministic_and_subsamples_big_validation_sets():
    rng = np.random.default_rng(2)
    positive = rng.random(50_000) < 0.05
    proba = np.clip(positive * 0.3 + rng.random(50_000) * 0.7, 0, 1)
    assert steady_threshold(positive, proba, F1) == steady_threshold(positive, proba, F1)


def test_out_of_fold_threshold_is_the_smoothed_best_without_a_pull_to_the_neutral_threshold():
    rng = np.random.default_rng(3)
    # a clear optimum well above 0.5: taken, as the one-SE rule would
    positive = rng.random(5000) < 0.1
    separated = np.clip(np.where(positive, rng.normal(0.9, 0.05, 5000), rng.normal(0.6, 0.1, 5000)), 0, 1)
    assert 0.7 <= bootstrap_best_threshold(positive, separated, F1) <= 0.85
    # a modest signal on many rows: the best mean score sits above 0.5 and the one-SE rule, pulled to 0.5, scores
    # worse on these rows than the smoothed best does
    signal = np.clip(rng.normal(0.45, 0.15, 5000) + 0.25 * positive, 0, 1)
    best, steady = bootstrap_best_threshold(positive, signal, F1), steady_threshold(positive, signal, F1)
    assert best > steady
    assert f1_score(positive, signal > best) > f1_score(positive, signal > steady)
    # classes apart with a gap: every threshold in the gap scores 1 on every resample; the middle of it is taken
    gap_positive = np.array([False] * 40 + [True] * 10)
    gap_proba = np.concatenate([np.linspace(0.1, 0.3, 40), np.linspace(0.8, 0.9, 10)])
    assert bootstrap_best_threshold(gap_positive, gap_proba, F1) == pytest.approx((0.3 + 0.795) / 2)


@pytest.mark.slow
def test_a_weighted_fit_on_noise_does_not_flag_every_row(tmp_path):
    """>= 200 minority rows and a budget too short for bagging: balanced weights, AutoGluon's validation split. On a
    table without signal AutoGluon's F1-optimal threshold flags every row (F1 is then the minority share's best);
    Poise's stops where the validation rows can no longer tell thresholds apart, flagging at most half of them."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({f"x{i}": rng.normal(size=3000) for i in range(4)})
    table["y"] = np.where(rng.random(3000) < 0.10, "rare", "common")
    policy = choose_policy(_profile(table["y"].value_counts().to_dict()), time_limit=MIN_BAGGED_TIME_LIMIT - 1)
    assert policy["sample_weight"] == "balance_weight" and not policy["num_bag_folds"]
    summary, fitted = fit(table, "y", policy, path=tmp_path / "ag", deploy_path=tmp_path / "deploy", time_limit=10,
                          presets="medium_quality")
    positive, proba = validation_predictions(fitted, "rare")
    assert len(proba) < len(table) / 4 and positive.any()  # AutoGluon's validation split
    autogluon_threshold = fitted.calibrate_decision_threshold(metric="f1", verbose=False)
    assert (proba > autogluon_threshold).mean() > 0.9
    assert (proba > summary["threshold"]).mean() <= 0.5 and summary["threshold"] > autogluon_threshold
    assert TabularPredictor.load(summary["deploy_dir"], verbosity=0).decision_threshold == summary["threshold"]
