"""Estimated quality on unlabelled traffic: what the served model's confusion matrix, F1 and macro-F1 are likely to
be on a window whose labels have not arrived (confidence-based performance estimation, the idea of NannyML's CBPE).

Labels come late where imbalance matters most (fraud, churn, defaults), and every other check of a window says
whether the inputs moved, not what that costs. With probabilities that are calibrated — a row given 0.3 is
positive three times in ten — each row adds its chance of being each class to the column of the label the model
gave it, and the sum is the expected confusion matrix of the window; the metrics follow from it.

Poise's probabilities are not calibrated as they stand: balanced sample weights aim them at a balanced prior.
They are calibrated here on the version's labelled baseline (its reference holdout and the feedback of earlier
clean windows), by isotonic regression of each class's probability against the truth. The interval covers both
what is uncertain: the calibration map (refitted on bootstrap resamples of the baseline) and the labels the window
will get (drawn from the calibrated probabilities, as the realised figures would be).

What it cannot see: a change of P(y|x) with the inputs unchanged (a concept shift), or inputs carried outside the
range the calibration saw in a way the model is confidently wrong about (a unit change of a column): the estimate
trusts the model's confidence where it was calibrated. The drift check's other tests and the realised figures, once
labels arrive, are what catch those.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from poise.agents.drift.reference import LABEL, Reference, Window, class_proba, labelled_baseline
from poise.agents.metrics import codes, confusion, from_confusion, per_class

CALIBRATION_ROWS = 20_000  # baseline rows the calibration is fitted on (a stratified sample beyond this)
RESAMPLES = 200
INTERVAL = 0.90  # the reported interval of each estimate
DROP_CONFIDENCE = 0.99  # an estimated drop must hold at this one-sided level ...
MIN_ESTIMATED_DROP = 0.05  # ... and be at least this large (macro-F1 points) to call for retraining
MIN_CALIBRATION_ROWS = 50
MIN_CLASS_ROWS = 5  # rows of each class the calibration needs


def _calibrators(truth: np.ndarray, proba: np.ndarray) -> list:
    """One isotonic map per class (one-against-the-rest) from the model's probability to the class's frequency;
    None for a class the rows do not show both ways."""
    from sklearn.isotonic import IsotonicRegression

    maps = []
    for k in range(proba.shape[1]):
        hit = (truth == k).astype(float)
        if hit.sum() < 1 or hit.sum() == len(hit):
            maps.append(None)
            continue
        maps.append(IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(proba[:, k], hit))
    return maps


def _calibrated(maps: list, proba: np.ndarray,
                prior_ratio: np.ndarray | None) -> np.ndarray:
    """The window's calibrated class probabilities (rows sum to 1), moved to a new class prior when given."""
    binary = len(maps) == 2
    if binary and maps[1] is not None:  # two classes: one map, the other class its complement
        positive = maps[1].predict(proba[:, 1])
        out = np.column_stack([1.0 - positive, positive])
    else:
        out = np.column_stack([m.predict(proba[:, k]) if m is not None else proba[:, k] for k, m in enumerate(maps)])
    if prior_ratio is not None:
        out = out * prior_ratio
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), proba)


def _expected_confusion(calibrated: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Rows: true class, columns: predicted (the `agents.metrics.confusion` shape, with its empty "unknown" slot):
    each row's class probabilities added to the column of the label it was given."""
    k = calibrated.shape[1]
    return sum(confusion(np.full(len(predicted), j), predicted, k, calibrated[:, j]) for j in range(k))


def _figures(matrix: np.ndarray, positive: int | None) -> dict[str, float]:
    figures = {"macro_f1": from_confusion("macro_f1", matrix, positive or 0)}
    if positive is not None:
        figures["f1"] = from_confusion("f1", matrix, positive)
    return figures


def _drawn_confusions(calibrated: np.ndarray, predicted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The confusion matrix of labels drawn from the calibrated probabilities (what the realised one could be)."""
    k = calibrated.shape[1]
    drawn = (rng.random(len(calibrated))[:, None] > np.cumsum(calibrated, axis=1)).sum(axis=1).clip(0, k - 1)
    return confusion(drawn, predicted, k)


def _calibration_rows(truth: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most `n` rows of the baseline, the classes in their shares (all of them when there are fewer)."""
    if len(truth) <= n:
        return np.arange(len(truth))
    keep = rng.random(len(truth)) < n / len(truth)
    return np.flatnonzero(keep)


def estimate(reference: Reference, window: Window, prior: dict[str, Any] | None, seed: int,
             resamples: int = RESAMPLES) -> dict[str, Any] | None:
    """The window's estimated confusion matrix, positive-class F1 (binary) and macro-F1 with their intervals, the
    baseline's realised figures, whether the estimate fell enough to call for retraining, and the realised figures
    on the window's labelled rows beside the estimate on the same rows. `prior`: a new class prior to move the
    calibrated probabilities to (a prior shift the check found), or None. None when the baseline is too small
    to calibrate on."""
    meta = reference.meta
    classes = list(meta["classes"])
    positive = classes.index(meta["positive_class"]) if meta.get("positive_class") in classes else None
    base_truth, base_predictions = labelled_baseline(reference)
    truth = codes(base_truth, classes)
    counts = np.bincount(truth[truth < len(classes)], minlength=len(classes))
    if len(truth) < MIN_CALIBRATION_ROWS or (counts < MIN_CLASS_ROWS).any():
        return None
    rng = np.random.default_rng(seed)
    rows = _calibration_rows(truth, CALIBRATION_ROWS, rng)
    truth = truth[rows]
    base_proba = class_proba(base_predictions.iloc[rows], classes).to_numpy(dtype=float)
    base_predicted = codes(base_predictions[LABEL].iloc[rows].astype(str), classes)
    window_proba = class_proba(window.predictions, classes).to_numpy(dtype=float)
    window_predicted = codes(window.predictions[LABEL].astype(str), classes)
    shares = np.bincount(truth, minlength=len(classes)) / len(truth)
    prior_ratio = (np.array([prior.get(c, 0.0) for c in classes]) / np.where(shares > 0, shares, 1.0)
                   if prior is not None else None)

    point = _calibrated(_calibrators(truth, base_proba), window_proba, prior_ratio)
    matrix = _expected_confusion(point, window_predicted)
    estimated = _figures(matrix, positive)
    baseline = _figures(confusion(truth, base_predicted, len(classes)), positive)

    drawn, differences = {name: [] for name in estimated}, []
    for _ in range(resamples):
        resample = rng.integers(0, len(truth), len(truth))
        maps = _calibrators(truth[resample], base_proba[resample])
        figures = _figures(_drawn_confusions(_calibrated(maps, window_proba, prior_ratio), window_predicted, rng),
                           positive)
        for name, value in figures.items():
            drawn[name].append(value)
        base_value = _figures(confusion(truth[resample], base_predicted[resample], len(classes)), positive)
        differences.append(figures["macro_f1"] - base_value["macro_f1"])
    tail = (1 - INTERVAL) / 2
    intervals = {name: [float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))]
                 for name, values in drawn.items()}
    upper = float(np.quantile(differences, DROP_CONFIDENCE))
    fall = baseline["macro_f1"] - estimated["macro_f1"]
    table = per_class(matrix)
    return {
        "method": "confidence-based performance estimation: probabilities calibrated (isotonic) on the labelled "
                  f"baseline of {len(truth):,} rows, expected confusion matrix over {len(window_predicted):,} "
                  "window rows" + ("; probabilities moved to the estimated class prior" if prior else ""),
        "estimated": {name: float(value) for name, value in estimated.items()},
        "interval": intervals,
        "interval_level": INTERVAL,
        "baseline": baseline,
        "confusion": {"classes": classes, "matrix": np.round(matrix[:-1, :-1], 2).tolist()},
        "per_class_f1": {c: float(table["f1"][i]) for i, c in enumerate(classes)},
        "dropped": bool(upper < 0 and fall >= MIN_ESTIMATED_DROP),
        "drop_test": {"macro_f1_fall": float(fall), "difference_upper": upper, "confidence": DROP_CONFIDENCE,
                      "min_fall": MIN_ESTIMATED_DROP},
        "realised": _realised(window, classes, positive, point, window_predicted),
        "blind_spot": "assumes P(label | inputs) is unchanged: a concept shift, or inputs moved where the model "
                      "is confidently wrong, is not seen here (the drift tests and the realised figures are)",
    }


def _realised(window: Window, classes: list[str], positive: int | None, calibrated: np.ndarray,
              predicted: np.ndarray) -> dict[str, Any] | None:
    """Where feedback labels arrived: the realised figures on those rows and the estimate on the same rows."""
    labelled = window.labels.notna().to_numpy()
    if not labelled.any():
        return None
    truth = codes(window.labels[labelled].astype(str), classes)
    return {"n_labelled": int(labelled.sum()),
            "realised": _figures(confusion(truth, predicted[labelled], len(classes)), positive),
            "estimated_on_same_rows": _figures(_expected_confusion(calibrated[labelled], predicted[labelled]),
                                               positive)}


def of_check(results: dict[str, Any] | None) -> dict[str, Any] | None:
    """The estimate a stored drift check's results hold (None for checks that made none)."""
    return ((results or {}).get("analysis") or {}).get("estimated_quality")


def short(estimate: dict[str, Any] | None) -> str:
    """The estimated macro-F1 and its interval in a table cell ("" when not estimated)."""
    if not estimate:
        return ""
    low, high = estimate["interval"]["macro_f1"]
    return f"{estimate['estimated']['macro_f1']:.3f} ({low:.3f}–{high:.3f})"


def described(estimate: dict[str, Any] | None) -> str:
    """The estimate in a sentence (report, CLI, chat, UI): the figures with their intervals, the baseline, the
    realised figures where labels arrived, and what the estimate cannot see."""
    if not estimate:
        return "Estimated quality: not estimated (the labelled baseline is too small to calibrate on)."
    names = {"macro_f1": "macro-F1", "f1": "F1 of the positive class"}
    parts = [f"{names[name]} {value:.3f} ({estimate['interval'][name][0]:.3f}–{estimate['interval'][name][1]:.3f})"
             for name, value in estimate["estimated"].items()]
    text = (f"Estimated quality without labels ({estimate['interval_level']:.0%} intervals): {', '.join(parts)}; "
            f"macro-F1 on the labelled baseline {estimate['baseline']['macro_f1']:.3f}")
    if estimate["realised"]:
        realised = estimate["realised"]
        text += (f"; realised on {realised['n_labelled']:,} labelled rows: macro-F1 "
                 f"{realised['realised']['macro_f1']:.3f} (estimated on the same rows "
                 f"{realised['estimated_on_same_rows']['macro_f1']:.3f})")
    return text + f". The estimate {estimate['blind_spot']}."
