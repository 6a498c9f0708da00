"""Holdout metrics and the quality gate, checked against hand-computed values."""

import pandas as pd
import pytest

from poise.agents.deployment.gate import ChampionEvidence, quality_gate
from poise.agents.evaluation import baseline_metrics, classification_metrics

POLICY = {"problem_type": "binary", "objective": "f1", "positive_class": "bad", "minority_class": "bad",
          "cost_fn": None, "cost_fp": None}


def _case():
    y_true = pd.Series(["bad", "bad", "bad", "good", "good", "good", "good", "good"])
    y_pred = pd.Series(["bad", "bad", "good", "bad", "good", "good", "good", "good"])
    p_bad = [0.9, 0.8, 0.4, 0.6, 0.3, 0.2, 0.1, 0.05]
    proba = pd.DataFrame({"bad": p_bad, "good": [1 - p for p in p_bad]})
    return y_true, y_pred, proba


def test_binary_metrics_match_hand_computation():
    metrics = classification_metrics(*_case(), POLICY)
    # bad: TP 2, FN 1, FP 1 -> precision 2/3, recall 2/3, F1 2/3; good: 4/5 each
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["good"]["f1"] == pytest.approx(4 / 5)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert metrics["minority_recall"] == pytest.approx(2 / 3)
    # ranking: positives at 0.9, 0.8, 0.4; one negative (0.6) outranks 0.4 -> AUC 14/15
    assert metrics["roc_auc"] == pytest.approx(14 / 15)
    # AP: hits at ranks 1, 2, 4 -> (1 + 1 + 3/4) / 3
    assert metrics["pr_auc"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert metrics["confusion_matrix"] == {"labels": ["bad", "good"], "matrix": [[2, 1], [1, 4]]}


def test_cost_metric_and_gate_direction():
    policy = {**POLICY, "objective": "cost", "cost_fn": 10.0, "cost_fp": 1.0}
    metrics = classification_metrics(*_case(), policy)
    assert metrics["expected_cost"] == pytest.approx((10 * 1 + 1 * 1) / 8)
    worse = {**metrics, "expected_cost": 5.0}
    tie = {"data": "reference holdout of champion v3", "rows": 8, "metric": "expected_cost", "challenger": 1.0,
           "champion": 1.0, "difference_interval": [0.0, 0.0], "worse": False}
    assert quality_gate(metrics, {}, policy, "holdout", ChampionEvidence("m", "3", on_holdout=worse,
                                                                         reference=tie))["passed"]  # lower is better
    assert not quality_gate(worse, {}, policy, "holdout", ChampionEvidence("m", "3", on_holdout=metrics,
                                                                           reference=tie))["passed"]


def test_first_version_must_beat_the_dummies():
    y_true = pd.concat([_case()[0]] * 25, ignore_index=True)
    baselines = baseline_metrics(y_true, y_true, POLICY)
    assert baselines["stratified"]["f1"] == pytest.approx(3 / 8, abs=0.15)  # ~prevalence by chance
    assert baselines["majority"]["f1"] == 0.0  # the majority dummy never predicts 'bad'
    metrics = classification_metrics(*_case(), POLICY)
    verdict = quality_gate(metrics, baselines, POLICY, "holdout")
    assert verdict["passed"] and "baseline" in verdict["compared_with"]
    useless = {**metrics, "f1": 0.0}
    assert not quality_gate(useless, baselines, POLICY, "holdout")["passed"]


def test_champion_that_cannot_score_the_holdout_keeps_its_alias():
    metrics = classification_metrics(*_case(), POLICY)
    verdict = quality_gate(metrics, {}, POLICY, "holdout", ChampionEvidence(
        "m", "1", on_holdout={"error": "champion v1 cannot score"}, reference={"error": "no reference holdout"}))
    assert not verdict["passed"] and "keeping the current champion" in verdict["reason"]
