"""The imbalance policy: explicit, recorded choices that make AutoGluon fit for an imbalanced table.

AutoGluon's defaults optimise accuracy for the label that sorts last; on an
imbalanced table that model can ignore the minority entirely. The policy fixes
that in explicit, recorded choices, each with its reason: the positive class (the
minority, or the class the user names), a metric fit for imbalance (F1, balanced
accuracy, or expected cost when the user states what errors cost), sample weights
or bagging depending on how many minority rows there are, and whether the decision
threshold is calibrated (`agents.automl.fit` does it). The options a user can get
wrong are refused here as `SpecError`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from poise.agents.errors import SpecError
from poise.agents.job_spec import MODEL_TYPES
from poise.agents.metrics import lower_is_better

OBJECTIVES = ("f1", "balanced_accuracy", "cost")
FEW_MINORITY_ROWS = 200  # below this, no balanced weights: they distort the out-of-fold probabilities (agents.automl)
# Up to this many rows every fit is bagged (5 folds): the threshold and AutoGluon's ensemble are then chosen on
# out-of-fold predictions of every training row, not on a validation split of a tenth of them, and the served model
# averages five. Measured on the real-table suite (60 s): taxi, stackoverflow and Caravan, the tables with least
# signal, rose from 0.541/0.563/0.558 to 0.550/0.575/0.584 macro-F1, their PR-AUC from 0.137/0.186/0.165 to
# 0.181/0.229/0.179 (a validation split of 500-750 rows holds 30-60 positives). The biggest table bagged there,
# movies (35k rows in its first fit, with text), filled its 24 s with five CatBoost folds and still gained
# (0.873 -> 0.876). Bigger tables keep AutoGluon's validation split, so that a minute's budget is not split five
# ways on them (a judgement, not measured beyond 44k rows).
MAX_BAGGED_ROWS = 100_000
# ... and when the job's budget gives each of the five folds time to fit (>= 200 minority rows; with fewer, bagging is
# the only sound validation at any budget). KEEL satimage, 3 seeds, bagged against not: at 20 s, where the first fit
# gets 8 s, 0.790 against 0.828 macro-F1; at 60 s 0.810 against 0.814, page_blocks0 0.937 against 0.938.
MIN_BAGGED_TIME_LIMIT = 60
BALANCED_WEIGHTS = "balance_weight"  # AutoGluon's name for weights that balance the classes


def expected_cost(y_true, y_pred, cost_fn: float, cost_fp: float) -> float:
    """Mean cost per row; AutoGluon encodes the positive class as 1 for binary metrics."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    false_negatives = np.sum((y_true == 1) & (y_pred == 0))
    false_positives = np.sum((y_true == 0) & (y_pred == 1))
    return float((cost_fn * false_negatives + cost_fp * false_positives) / max(len(y_true), 1))


def cost_scorer(cost_fn: float, cost_fp: float):
    from autogluon.core.metrics import make_scorer

    return make_scorer(
        "expected_cost", expected_cost, optimum=0, greater_is_better=not lower_is_better("expected_cost"),
        needs_class=True, cost_fn=cost_fn, cost_fp=cost_fp,
    )


def choose_policy(
    profile: dict[str, Any],
    objective: str = "f1",
    cost_fn: float | None = None,
    cost_fp: float | None = None,
    positive_class: str | None = None,
    threshold_policy: str = "calibrate",
    excluded_model_types: list[str] | None = None,
    weight_column: str | None = None,
    *,
    time_limit: int,
) -> dict[str, Any]:
    """The imbalance policy for this table and request (`time_limit`: the job's budget, seconds), with a reason for
    each choice."""
    target = profile["target"]
    problem_type = target["problem_type"]
    if problem_type == "regression":
        raise SpecError(
            f"target '{target['name']}' looks continuous (numeric with many distinct values); "
            "Poise trains classifiers only for now: bin the target or pick a categorical column"
        )
    if objective not in OBJECTIVES:
        raise SpecError(f"unknown objective '{objective}'; choose one of {', '.join(OBJECTIVES)}")
    costs_given = cost_fn is not None or cost_fp is not None
    if objective == "cost" or costs_given:
        if objective != "cost":
            raise SpecError("--cost-fn/--cost-fp are only used with --objective cost")
        if cost_fn is None or cost_fp is None or cost_fn <= 0 or cost_fp <= 0:
            raise SpecError("--objective cost needs both --cost-fn and --cost-fp, each > 0")
        if problem_type != "binary":
            raise SpecError("--objective cost needs a binary target (false negatives vs false positives)")

    usable = set(MODEL_TYPES) - set(excluded_model_types or []) - set(excluded_model_types_without_torch())
    if not usable:
        raise SpecError("every model type is excluded; leave at least one of " + ", ".join(MODEL_TYPES[:7]))
    counts = target["class_counts"]
    minority = target["minority_class"]
    reasons: list[str] = []
    if positive_class is not None and str(positive_class) not in counts:
        raise SpecError(f"positive class '{positive_class}' is not a label of '{target['name']}': {sorted(counts)}")
    chosen_positive = str(positive_class) if positive_class is not None else minority
    if problem_type == "binary":
        reasons.append(
            f"positive class '{chosen_positive}': "
            + ("named by the user" if positive_class is not None else
               f"the minority ({counts[minority]} of {sum(counts.values())} rows); "
               "AutoGluon would otherwise take the label that sorts last")
        )

    ratio = target["imbalance_ratio"]
    minority_rows = counts[minority]
    few = minority_rows < FEW_MINORITY_ROWS
    rows = sum(counts.values())
    bag_folds = 5 if few or (not weight_column and rows <= MAX_BAGGED_ROWS
                             and time_limit >= MIN_BAGGED_TIME_LIMIT) else 0
    if bag_folds:
        reasons.append(
            "5-fold bagging: models and the threshold are validated on out-of-fold predictions of every training "
            "row" + (f" (only {minority_rows} minority rows)" if few else
                     f" (all {minority_rows} minority rows, not a validation split's tenth of them)")
            + ("; no sample weights (they would distort those predictions)" if few and not weight_column else "")
        )
    if weight_column:
        reasons.append(f"sample weights from column '{weight_column}' (importance, recency and class weights "
                       "set by drift retraining), in validation and threshold calibration too, so model choice "
                       "follows the data the weights favour")
    elif not few:
        reasons.append(f"balanced sample weights: imbalance ratio {ratio:.1f}")
    if not bag_folds and not weight_column:
        reasons.append("AutoGluon's validation split, not 5-fold bagging: " + (
            f"{rows:,} rows (bagged up to {MAX_BAGGED_ROWS:,})" if rows > MAX_BAGGED_ROWS else
            f"a {time_limit} s budget gives five folds too little time (bagged from {MIN_BAGGED_TIME_LIMIT} s)"))
    if objective == "cost":
        eval_metric = "expected_cost"
        reasons.append(
            f"metric expected cost per row: a false negative costs {cost_fn:g}, a false positive {cost_fp:g}"
        )
    elif objective == "balanced_accuracy":
        eval_metric = "balanced_accuracy"
        reasons.append("metric balanced accuracy: every class weighs the same, as requested")
    elif problem_type == "binary":
        eval_metric = "f1"
        reasons.append(f"metric F1 of '{chosen_positive}': accuracy rewards ignoring a rare class")
    else:
        eval_metric = "f1_macro"
        reasons.append("metric macro-F1: accuracy rewards ignoring rare classes")
    calibrate = problem_type == "binary" and threshold_policy == "calibrate"
    if problem_type == "binary" and not calibrate:
        reasons.append("decision threshold kept at 0.5, as requested")
    if calibrate:
        reasons.append(
            "decision threshold tuned for the metric on "
            + ("out-of-fold predictions" if bag_folds else "the validation split") + ", never on the holdout"
            + ("" if few or weight_column else
               ", and moved from the balanced weights' neutral 0.5 only as far as bootstrap resamples of those "
               "rows show a better score (where the signal is weak the metric's best threshold is mostly noise)")
        )
    return {
        "problem_type": problem_type,
        "objective": objective,
        "eval_metric": eval_metric,
        "positive_class": chosen_positive if problem_type == "binary" else None,
        "minority_class": minority,
        "sample_weight": weight_column or (None if few else BALANCED_WEIGHTS),
        "class_balanced": not weight_column and not few,  # the weights (AutoGluon's or a column's) balance classes
        "weight_evaluation": bool(weight_column),
        "calibrate_threshold": calibrate,
        "num_bag_folds": bag_folds,
        "excluded_model_types": sorted(set(excluded_model_types or []) | set(excluded_model_types_without_torch())),
        "cost_fn": cost_fn,
        "cost_fp": cost_fp,
        "reasons": reasons,
    }


def with_row_weights(policy: dict[str, Any], column: str) -> dict[str, Any]:
    """The policy fitting with per-row weights from `column` (the label-noise audit's down-weighting), which keep
    the policy's class balance (`class_balanced`) and, like AutoGluon's own weights, do not weigh the scores."""
    return policy | {"sample_weight": column, "weight_evaluation": False}


def autogluon_metric(policy: dict[str, Any]):
    """The policy's metric as AutoGluon takes it: a name, or a scorer for expected cost."""
    if policy["eval_metric"] == "expected_cost":
        return cost_scorer(policy["cost_fn"], policy["cost_fp"])
    return policy["eval_metric"]


def excluded_model_types_without_torch() -> list[str]:
    """AutoGluon's neural models need torch, an optional extra; skip them cleanly without it."""
    return [] if importlib.util.find_spec("torch") else ["NN_TORCH", "FASTAI"]
