"""Holdout evaluation: the numbers and plots a reviewer needs to trust a classifier.

Every metric is computed on the untouched holdout at the calibrated threshold, with
the minority (or user-named positive) class as positive for PR-AUC, and compared
with dummy baselines so "0.93 accuracy" on a 95/5 table cannot pass as a result. The thresholded
metrics and which way each points come from `agents.metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from poise.agents.metrics import codes, confusion, from_confusion, lower_is_better, per_class  # noqa: E402


def classification_metrics(
    y_true: pd.Series, y_pred: pd.Series, proba: pd.DataFrame, policy: dict[str, Any]
) -> dict[str, Any]:
    """Holdout metrics; `proba` has one column per class label (strings)."""
    y_true = y_true.astype(str).reset_index(drop=True)
    y_pred = y_pred.astype(str).reset_index(drop=True)
    labels = [str(c) for c in proba.columns]
    proba = proba.set_axis(labels, axis=1).reset_index(drop=True)
    positive = policy["positive_class"] or policy["minority_class"]
    minority = policy["minority_class"]

    k, positive_index = len(labels), labels.index(positive)
    matrix = confusion(codes(y_true, labels), codes(y_pred, labels), k)
    table = per_class(matrix)
    per_label = {
        label: {"precision": float(table["precision"][i]), "recall": float(table["recall"][i]),
                "f1": float(table["f1"][i]), "support": int(table["support"][i])}
        for i, label in enumerate(labels)
    }
    is_positive = (y_true == positive).to_numpy()
    metrics: dict[str, Any] = {
        "macro_f1": from_confusion("macro_f1", matrix, positive_index),
        "balanced_accuracy": from_confusion("balanced_accuracy", matrix, positive_index),
        "accuracy": float((y_true == y_pred).mean()),
        "minority_recall": per_label[minority]["recall"],
        "minority_precision": per_label[minority]["precision"],
        "pr_auc": float(average_precision_score(is_positive, proba[positive])),
        "per_class": per_label,
        "confusion_matrix": {"labels": labels, "matrix": matrix[:k, :k].astype(int).tolist()},
        "positive_class": positive,
        "n_holdout": int(len(y_true)),
    }
    if policy["problem_type"] == "binary":
        metrics["f1"] = from_confusion("f1", matrix, positive_index)
        metrics["roc_auc"] = float(roc_auc_score(is_positive, proba[positive]))
    else:
        metrics["roc_auc"] = float(roc_auc_score(y_true, proba[labels].to_numpy(), multi_class="ovr", labels=labels))
    if policy["objective"] == "cost":
        metrics["expected_cost"] = from_confusion("expected_cost", matrix, positive_index,
                                                  (policy["cost_fn"], policy["cost_fp"]))
    return metrics


def baseline_metrics(train_y: pd.Series, holdout_y: pd.Series, policy: dict[str, Any], seed: int = 0) -> dict[str, dict]:
    """Majority-class and stratified-random dummies, scored like the model."""
    prior = train_y.astype(str).value_counts(normalize=True)
    labels = sorted(prior.index)
    proba = pd.DataFrame(np.tile(prior[labels].to_numpy(), (len(holdout_y), 1)), columns=labels)
    majority = pd.Series([prior.idxmax()] * len(holdout_y))
    rng = np.random.default_rng(seed)
    stratified = pd.Series(rng.choice(labels, size=len(holdout_y), p=prior[labels].to_numpy()))
    return {
        "majority": classification_metrics(holdout_y, majority, proba, policy),
        "stratified": classification_metrics(holdout_y, stratified, proba, policy),
    }


def best_baseline(baselines: dict[str, dict], metric: str) -> tuple[str, float]:
    scored = [(name, m[metric]) for name, m in baselines.items()]
    pick = min if lower_is_better(metric) else max
    return pick(scored, key=lambda item: item[1])


def flat_metrics(metrics: dict[str, Any], prefix: str = "holdout_") -> dict[str, float]:
    """Scalar metrics for MLflow, including per-class ones with safe key names."""
    flat = {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "n_holdout"}
    for label, values in metrics.get("per_class", {}).items():
        safe = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in label)[:40]
        for key in ("precision", "recall", "f1"):
            flat[f"{prefix}{key}_class_{safe}"] = float(values[key])
    return flat


def plot_all(
    y_true: pd.Series, proba: pd.DataFrame, metrics: dict[str, Any], importance: pd.Series | None, out_dir: Path
) -> list[Path]:
    """Confusion matrix, PR and ROC curves (positive class), feature importance; PNG files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    y_true = y_true.astype(str).reset_index(drop=True)
    positive = metrics["positive_class"]
    is_positive = (y_true == positive).to_numpy()
    score = proba[positive].to_numpy()
    paths = []

    fig, ax = plt.subplots(figsize=(5, 4.5))
    cm = metrics["confusion_matrix"]
    ConfusionMatrixDisplay(np.array(cm["matrix"]), display_labels=cm["labels"]).plot(ax=ax, colorbar=False, cmap="Blues")
    ax.set_title("Confusion matrix (holdout)")
    paths.append(_save(fig, out_dir / "confusion_matrix.png"))

    fig, ax = plt.subplots(figsize=(5, 4.5))
    precision, recall, _ = precision_recall_curve(is_positive, score)
    ax.plot(recall, precision, label=f"AP = {metrics['pr_auc']:.3f}")
    ax.axhline(is_positive.mean(), linestyle="--", color="grey", label=f"prevalence {is_positive.mean():.3f}")
    ax.set(xlabel="Recall", ylabel="Precision", title=f"Precision-recall, positive = {positive[:30]}", ylim=(0, 1.02))
    ax.legend(loc="lower left")
    paths.append(_save(fig, out_dir / "pr_curve.png"))

    fig, ax = plt.subplots(figsize=(5, 4.5))
    fpr, tpr, _ = roc_curve(is_positive, score)
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(is_positive, score):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=f"ROC, positive = {positive[:30]}")
    ax.legend(loc="lower right")
    paths.append(_save(fig, out_dir / "roc_curve.png"))

    if importance is not None and len(importance):
        top = importance.sort_values().tail(20)
        fig, ax = plt.subplots(figsize=(6, max(2.5, 0.3 * len(top) + 1)))
        ax.barh([str(i)[:40] for i in top.index], top.to_numpy())
        ax.set(xlabel="Permutation importance (holdout sample)", title="Feature importance")
        paths.append(_save(fig, out_dir / "feature_importance.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
