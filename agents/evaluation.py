"""Holdout evaluation: the numbers and plots a reviewer needs to trust a classifier.

Every metric is computed on the untouched holdout at the calibrated threshold, with
the minority (or user-named positive) class as positive for PR-AUC, and compared
with dummy baselines so "0.93 accuracy" on a 95/5 table cannot pass as a result.
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
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

LOWER_IS_BETTER = {"expected_cost"}


def primary_metric_name(policy: dict[str, Any]) -> str:
    return {"f1": "f1" if policy["problem_type"] == "binary" else "macro_f1",
            "balanced_accuracy": "balanced_accuracy",
            "cost": "expected_cost"}[policy["objective"]]


def is_better(candidate: float, reference: float, metric: str) -> bool:
    return candidate < reference if metric in LOWER_IS_BETTER else candidate > reference


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

    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support)
    }
    is_positive = (y_true == positive).to_numpy()
    metrics: dict[str, Any] = {
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "accuracy": float((y_true == y_pred).mean()),
        "minority_recall": per_class[minority]["recall"],
        "minority_precision": per_class[minority]["precision"],
        "pr_auc": float(average_precision_score(is_positive, proba[positive])),
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
        "positive_class": positive,
        "n_holdout": int(len(y_true)),
    }
    if policy["problem_type"] == "binary":
        metrics["f1"] = per_class[positive]["f1"]
        metrics["roc_auc"] = float(roc_auc_score(is_positive, proba[positive]))
    else:
        metrics["roc_auc"] = float(roc_auc_score(y_true, proba[labels].to_numpy(), multi_class="ovr", labels=labels))
    if policy["objective"] == "cost":
        predicted_positive = (y_pred == positive).to_numpy()
        fn = int(np.sum(is_positive & ~predicted_positive))
        fp = int(np.sum(~is_positive & predicted_positive))
        metrics["expected_cost"] = float((policy["cost_fn"] * fn + policy["cost_fp"] * fp) / len(y_true))
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
    pick = min if metric in LOWER_IS_BETTER else max
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
