"""One metrics module: every metric Poise reports has one declared direction, and the thresholded metrics computed
from the weighted confusion matrix match scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poise.agents.drift.performance import performance
from poise.agents.drift.reference import Reference, Window
from poise.agents.evaluation import classification_metrics
from poise.agents.metrics import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    PRIMARY_METRICS,
    brier_scores,
    is_better,
    lower_is_better,
    metric_value,
)

NOT_SCORES = {"n_holdout", "positive_class", "per_class", "confusion_matrix", "decision_threshold"}
EXPECTED = {  # the direction each metric must have
    "f1": False, "macro_f1": False, "balanced_accuracy": False, "accuracy": False, "precision": False, "recall": False,
    "minority_recall": False, "minority_precision": False, "roc_auc": False, "pr_auc": False,
    "expected_cost": True, "brier": True, "log_loss": True,
}


def _holdout(classes: list[str], n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = pd.Series(rng.choice(classes, n))
    proba = pd.DataFrame(rng.dirichlet(np.ones(len(classes)), n), columns=classes)
    return truth, proba.idxmax(axis=1), proba


def _reported() -> set[str]:
    """The names of the metrics Poise reports: the holdout evaluation (binary with a cost, multiclass), its per-class
    table, and the drift agent's performance judgement."""
    names: set[str] = set()
    for classes, policy in ((["bad", "good"], {"problem_type": "binary", "objective": "cost", "cost_fn": 5.0,
                                                "cost_fp": 1.0, "positive_class": "bad", "minority_class": "bad"}),
                            (["a", "b", "c"], {"problem_type": "multiclass", "objective": "f1", "cost_fn": None,
                                               "cost_fp": None, "positive_class": None, "minority_class": "c"})):
        metrics = classification_metrics(*_holdout(classes), policy)
        names |= set(metrics) - NOT_SCORES
        names |= {key for values in metrics["per_class"].values() for key in values if key != "support"}
    truth, predicted, proba = _holdout(["negative", "positive"])
    predictions = pd.DataFrame({"label": predicted, **{f"proba_{c}": proba[c] for c in proba}})
    for metric in PRIMARY_METRICS:
        meta = {"classes": ["negative", "positive"], "positive_class": "positive", "primary_metric": metric,
                "cost": [5.0, 1.0], "prior": {"negative": 0.5, "positive": 0.5}, "target": "y", "features": []}
        reference = Reference(train=pd.DataFrame({"y": truth}), holdout=pd.DataFrame({"y": truth}),
                              predictions=predictions, meta=meta)
        window = Window(pd.DataFrame(index=truth.index), predictions, truth.astype("string"), len(truth))
        judged = performance(reference, window, {"prior": meta["prior"]}, seed=0, n_boot=20)
        names |= {judged["primary"]["metric"], judged["brier"]["metric"]}
    return names


def test_every_reported_metric_has_one_declared_direction():
    assert not HIGHER_IS_BETTER & LOWER_IS_BETTER
    reported = _reported()
    assert {"f1", "macro_f1", "expected_cost", "brier", "precision", "pr_auc"} <= reported  # the search found them
    undeclared = reported - HIGHER_IS_BETTER - LOWER_IS_BETTER
    assert not undeclared, f"metrics reported without a direction: {sorted(undeclared)}"
    assert set(PRIMARY_METRICS) <= HIGHER_IS_BETTER | LOWER_IS_BETTER
    for metric in reported | set(EXPECTED):
        assert lower_is_better(metric) == EXPECTED[metric], metric


def test_better_follows_the_direction_and_a_tie_is_not_better():
    assert is_better(0.8, 0.7, "f1") and not is_better(0.7, 0.8, "f1")
    assert is_better(0.1, 0.2, "expected_cost") and is_better(0.1, 0.2, "brier") and is_better(0.3, 0.5, "log_loss")
    assert not is_better(0.5, 0.5, "f1") and not is_better(0.5, 0.5, "expected_cost")
    with pytest.raises(Exception, match="unknown metric"):
        lower_is_better("r2")


def test_brier_scores_are_the_multiclass_brier_score():
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(0)
    truth = pd.Series(rng.choice(["negative", "positive"], 400, p=[0.8, 0.2]))
    positive = rng.random(400)
    proba = pd.DataFrame({"negative": 1 - positive, "positive": positive})
    scores = brier_scores(truth, proba, ["negative", "positive"])
    # two classes: the squared error of each class's probability, i.e. twice scikit-learn's binary score
    assert scores.mean() == pytest.approx(2 * brier_score_loss(truth == "positive", positive))
    assert scores.min() >= 0 and scores.max() <= 2


def test_metrics_from_the_confusion_matrix_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    truth = pd.Series(rng.choice(classes, 500, p=[0.7, 0.2, 0.1]))
    predicted = pd.Series(rng.choice(classes, 500, p=[0.6, 0.3, 0.1]))
    for weights in (None, rng.random(500)):
        assert metric_value("macro_f1", truth, predicted, "c", classes, weights) == pytest.approx(
            f1_score(truth, predicted, labels=classes, average="macro", sample_weight=weights))
        assert metric_value("f1", truth, predicted, "c", classes, weights) == pytest.approx(
            f1_score(truth, predicted, labels=["c"], average="macro", sample_weight=weights))
        assert metric_value("balanced_accuracy", truth, predicted, "c", classes, weights) == pytest.approx(
            balanced_accuracy_score(truth, predicted, sample_weight=weights))
    binary = ["negative", "positive"]
    t, p = pd.Series(["positive", "positive", "negative", "negative"]), pd.Series(["negative", "positive", "positive", "negative"])
    assert metric_value("expected_cost", t, p, "positive", binary, cost=(10.0, 1.0)) == pytest.approx((10 + 1) / 4)
