"""Classification metrics, once: which way each one points, and how the thresholded ones are computed.

The holdout evaluation, the quality gate, the drift checks and the challenger comparison all
name metrics and ask which of two values is better; they read it here, so a metric cannot be
"lower is better" in one place and "higher is better" in another. The thresholded metrics
(F1, macro-F1, balanced accuracy, expected cost, and the per-class table) are computed from one
weighted confusion matrix: the holdout report, the drift agent's judgements under a reweighted
prior, and its thousands of bootstrap resamples all use the same arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from poise.agents.errors import DataError

# Every metric Poise reports, logs or decides on, by direction. `accuracy`, `precision` and `recall` also name the
# per-class table's entries; `log_loss` is what early-stopping models stop on; `brier` is the drift agent's
# calibration check.
HIGHER_IS_BETTER = frozenset({"f1", "macro_f1", "balanced_accuracy", "accuracy", "precision", "recall",
                              "minority_recall", "minority_precision", "roc_auc", "pr_auc"})
LOWER_IS_BETTER = frozenset({"expected_cost", "brier", "log_loss"})
PRIMARY_METRICS = ("f1", "macro_f1", "balanced_accuracy", "expected_cost")  # what a model is trained and gated on


def lower_is_better(metric: str) -> bool:
    if metric in LOWER_IS_BETTER:
        return True
    if metric in HIGHER_IS_BETTER:
        return False
    raise DataError(f"unknown metric '{metric}'")


def is_better(candidate: float, reference: float, metric: str) -> bool:
    """Strictly better: a tie is not."""
    return candidate < reference if lower_is_better(metric) else candidate > reference


def primary_metric_name(policy: dict[str, Any]) -> str:
    return {"f1": "f1" if policy["problem_type"] == "binary" else "macro_f1",
            "balanced_accuracy": "balanced_accuracy",
            "cost": "expected_cost"}[policy["objective"]]


def codes(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """Class index per row (labels outside `classes` get index len(classes): never a hit)."""
    index = {c: i for i, c in enumerate(classes)}
    return labels.astype(str).map(index).fillna(len(classes)).to_numpy(dtype="int64")


def confusion(truth: np.ndarray, predicted: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The (k+1)×(k+1) weighted confusion matrix of class codes (rows: truth, columns: predicted; the last
    index is "a label the model does not know")."""
    return np.bincount(truth * (k + 1) + predicted, weights=weights, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)


def per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 (0 where undefined) and support of each known class, from a `confusion` matrix."""
    k = matrix.shape[0] - 1
    hits = np.diag(matrix)[:k]
    true_totals, predicted_totals = matrix[:k].sum(axis=1), matrix[:, :k].sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"precision": np.where(predicted_totals > 0, hits / predicted_totals, 0.0),
                "recall": np.where(true_totals > 0, hits / true_totals, 0.0),
                "f1": np.where(true_totals + predicted_totals > 0, 2 * hits / (true_totals + predicted_totals), 0.0),
                "support": true_totals}


def from_confusion(metric: str, matrix: np.ndarray, positive: int, cost: tuple[float, float] | None = None) -> float:
    """A primary metric from a `confusion` matrix; `positive` is the positive class's index."""
    table = per_class(matrix)
    if metric == "f1":
        return float(table["f1"][positive])
    if metric == "macro_f1":
        return float(table["f1"].mean())
    if metric == "balanced_accuracy":  # classes without true rows do not count
        return float(table["recall"][table["support"] > 0].mean())
    if metric == "expected_cost":
        cost_fn, cost_fp = cost or (1.0, 1.0)
        missed = matrix[positive].sum() - matrix[positive, positive]
        false_alarm = matrix[:, positive].sum() - matrix[positive, positive]
        return float((cost_fn * missed + cost_fp * false_alarm) / matrix.sum())
    raise DataError(f"unknown primary metric '{metric}'")


def binary_from_counts(metric: str, tp, fp, fn, tn, cost: tuple[float, float] | None = None) -> np.ndarray:
    """A primary metric from a binary problem's confusion counts, given as arrays of any shape (one value per
    element): `from_confusion`'s arithmetic for many matrices at once, such as every bootstrap resample of a
    validation set at every candidate threshold."""
    with np.errstate(divide="ignore", invalid="ignore"):
        f1_positive = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        if metric == "f1":
            return f1_positive
        if metric == "macro_f1":
            return (f1_positive + np.where(2 * tn + fn + fp > 0, 2 * tn / (2 * tn + fn + fp), 0.0)) / 2
        if metric == "balanced_accuracy":  # classes without true rows do not count
            has_positive, has_negative = (tp + fn) > 0, (tn + fp) > 0
            recalls = np.where(has_positive, tp / (tp + fn), 0.0) + np.where(has_negative, tn / (tn + fp), 0.0)
            return recalls / (has_positive.astype(float) + has_negative)
        if metric == "expected_cost":
            cost_fn, cost_fp = cost or (1.0, 1.0)
            return (cost_fn * fn + cost_fp * fp) / (tp + fp + fn + tn)
    raise DataError(f"unknown primary metric '{metric}'")


def metric_value(metric: str, truth: pd.Series, predicted: pd.Series, positive: str, classes: list[str],
                 weights: np.ndarray | None = None, cost: tuple[float, float] | None = None) -> float:
    """A primary metric (f1 of `positive`, macro_f1, balanced_accuracy or expected_cost), optionally weighted
    per row."""
    matrix = confusion(codes(truth, classes), codes(predicted, classes), len(classes), weights)
    return from_confusion(metric, matrix, classes.index(positive), cost)


def brier_scores(truth: pd.Series, proba: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Each row's Brier score: squared distance of the predicted class probabilities (`proba`, a column per
    class) from the one-hot truth (0 to 2). Bounded, so a few confidently wrong rows cannot dominate a mean
    the way they do a log loss."""
    values = proba[classes].to_numpy(dtype="float64")
    onehot = truth.astype(str).to_numpy()[:, None] == np.asarray(classes, dtype=object)[None, :]
    return ((values - onehot) ** 2).sum(axis=1)
