"""Result summaries a user can trust: a deterministic one, and a check for the LLM's.

An LLM may explain a result in friendlier words, but it must not invent numbers. Every
number in its text has to match a number in the job's metrics record (at the precision
written, percentages included); otherwise Poise shows the deterministic summary instead.
"""

from __future__ import annotations

import math
import re
from typing import Any

NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)?(?:\s?%)?")


def facts(state: dict[str, Any]) -> dict[str, Any]:
    """The numbers and names a summary may use: the metrics record of the job."""
    metrics, gate = state["metrics"], state["gate"]
    record = {
        "model": state["spec"]["name"], "version": state.get("model_version"), "champion": state.get("is_champion"),
        "positive_class": metrics["positive_class"], "holdout_rows": metrics["n_holdout"],
        "threshold": metrics.get("decision_threshold"), "gate": gate["reason"],
        "imbalance_ratio": state["profile"]["target"]["imbalance_ratio"],
        "train_rows": state["split"]["summary"]["train_rows"],
    }
    for key in ("f1", "macro_f1", "balanced_accuracy", "pr_auc", "roc_auc", "minority_recall", "minority_precision",
                "expected_cost", "accuracy"):
        if key in metrics:
            record[key] = metrics[key]
    record["per_class"] = metrics["per_class"]
    record["confusion_matrix"] = metrics["confusion_matrix"]
    record["baselines"] = {name: {k: v for k, v in values.items() if isinstance(v, float)}
                           for name, values in state["baselines"].items()}
    record["dropped_columns"] = [d["column"] for d in state["profile"]["dropped"]]
    return record


def deterministic_summary(record: dict[str, Any]) -> str:
    positive = record["positive_class"]
    primary = next(k for k in ("expected_cost", "f1", "macro_f1", "balanced_accuracy") if k in record)
    lines = [
        f"Model {record['model']} v{record['version']} was trained on {record['train_rows']} rows "
        f"(imbalance ratio {record['imbalance_ratio']:.1f}) and scored on {record['holdout_rows']} untouched holdout rows.",
        f"It finds {record['minority_recall']:.0%} of the minority class with {record['minority_precision']:.0%} precision; "
        f"macro-F1 {record['macro_f1']:.3f}, balanced accuracy {record['balanced_accuracy']:.3f}, "
        f"PR-AUC {record['pr_auc']:.3f} (positive class '{positive}').",
    ]
    if record.get("threshold") is not None:
        lines.append(f"Decision threshold: {record['threshold']:.3f} (calibrated on validation data).")
    lines.append(f"Quality gate on {primary}: {record['gate']}. "
                 + ("It is now the champion." if record["champion"] else "The champion is unchanged."))
    return " ".join(lines)


def _allowed_numbers(value: Any, out: list[float]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        out.append(float(value))
    elif isinstance(value, dict):
        for item in value.values():
            _allowed_numbers(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _allowed_numbers(item, out)
    elif isinstance(value, str):
        out.extend(float(m.replace(",", ".").rstrip("% ")) for m in NUMBER.findall(value) if not m.endswith("%"))


def unsupported_numbers(text: str, record: dict[str, Any]) -> list[str]:
    """Numbers in `text` that match nothing in `record` at the precision they are written."""
    allowed: list[float] = []
    _allowed_numbers(record, allowed)
    wrong = []
    for token in NUMBER.findall(text):
        raw = token.replace(" ", "")
        percent = raw.endswith("%")
        number_text = raw.rstrip("%").replace(",", ".")
        value = float(number_text)
        decimals = len(number_text.split(".")[1]) if "." in number_text else 0
        candidates = [v * 100 for v in allowed] if percent else allowed
        if percent:
            candidates = candidates + allowed  # "20 %" may also quote a count or a ratio written as percent
        tolerance = 0.5 * 10 ** (-decimals) + 1e-9
        if not any(math.isclose(value, c, abs_tol=tolerance) for c in candidates):
            wrong.append(token.strip())
    return wrong
