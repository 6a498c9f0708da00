"""The performance judgement: with enough feedback labels, is the served model worse on the window than it is
known to be on its labelled baseline, once that baseline is reweighted to the window's class prior?

Apart from the covariate checks because it is a test of its own — two measures (the primary metric and the Brier
score) each held against a two-sample bootstrap null — and the one place a window's labels are scored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from poise.agents.drift.reference import (
    LABEL,
    MIN_LABELLED,
    Reference,
    Window,
    class_proba,
    class_weights,
    labelled_baseline,
)
from poise.agents.metrics import brier_scores, codes, confusion, from_confusion, lower_is_better, metric_value

# How often a clean window may read as a performance drop: each window is judged on two measures (primary metric,
# Brier score), each one-sided at half this. At 1 % each, 2 of 20 clean satimage windows were called on the drift
# benchmark, both by one measure alone (F1 -0.228 to -0.026; Brier -0.077 to -0.001).
PERFORMANCE_FALSE_ALARM = 0.01


def _null_resamples(n_window: int, base_weights: np.ndarray, seed: int, n_boot: int, chunk: int = 100):
    """Resamples as if nothing had dropped: the window's rows and the baseline's (weighted to the window's prior,
    at the same mean weight) pooled, then drawn again into a window-sized and a baseline-sized group — row
    indices into the pool, window first; `chunk` resamples at a time to bound memory.

    The pool holds a few weights (1 for window rows, one per class for baseline rows), so each draw picks a
    weight group by its share of the total weight, then a row of the group uniformly: the same distribution as
    a weighted draw over all rows, without numpy's search of the whole pool's cumulative weights per draw
    (5,000 window and 20,000 baseline rows, 1,000 resamples: 2.4 s that way)."""
    pool = np.concatenate([np.ones(n_window), base_weights * len(base_weights) / base_weights.sum()])
    levels, group = np.unique(pool, return_inverse=True)
    members, sizes = np.argsort(group, kind="stable"), np.bincount(group)
    starts = np.cumsum(sizes) - sizes
    group_share, rng = levels * sizes / (levels * sizes).sum(), np.random.default_rng(seed)

    def draw(shape: tuple[int, int]) -> np.ndarray:
        chosen = rng.choice(len(levels), shape, p=group_share)
        return members[starts[chosen] + (rng.random(shape) * sizes[chosen]).astype(np.int64)]

    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        yield draw((size, n_window)), draw((size, len(base_weights)))


def _judged(gain: float, null_gains: np.ndarray, **values: Any) -> dict[str, Any]:
    """A drop when the window's gain over the baseline (positive: the window does better than expected, whichever
    way the measure points) is lower than all but `PERFORMANCE_FALSE_ALARM / 2` of the gains drawn with nothing
    dropped (a window is judged twice: Bonferroni). The interval is the gain less those draws' spread."""
    tail = 100 * PERFORMANCE_FALSE_ALARM / 2
    low, high = np.percentile(null_gains, [tail, 100 - tail])
    return {**values, "difference_interval_99": [float(gain - high), float(gain - low)], "dropped": bool(gain < low)}


def performance(reference: Reference, window: Window, prior: dict[str, Any], seed: int,
                n_boot: int = 1000) -> dict[str, Any] | None:
    """With enough feedback labels: is the served model worse on the labelled window rows than on its
    `labelled_baseline` reweighted to the window's prior (a pure prior shift moves F1 by itself and is not a
    drop)? Judged twice: on the primary metric, and on the Brier score of the predicted probabilities, which
    also sees rows the model now gets wrong with confidence while its thresholded metric, on a small baseline,
    is still too uncertain to call — and the other way round (page_blocks0, six 330-row holdouts times six mild
    concept changes, each judged at 1 %: Brier alone called 3, F1 alone 3, both 18). Either one dropping is a
    drop. Each difference is held against the differences of window and baseline rows pooled and redrawn in
    their sizes (a two-sample bootstrap test), not against each side resampled on its own: a near-perfect model
    whose baseline shows no error resamples to a spread of zero, and then any few errors in a window read as a
    drop (drift benchmark seed 2, river_shuttle: 4 of 20 clean windows, Brier 0.002-0.008 against 0.000 on a
    600-row holdout)."""
    labelled = window.labels.notna().to_numpy()
    truth = window.labels[labelled].astype(str)
    if len(truth) < MIN_LABELLED or truth.nunique() < 2:
        return None
    meta, metric = reference.meta, reference.meta["primary_metric"]
    classes, positive, cost = list(meta["classes"]), meta["positive_class"], meta.get("cost")
    predictions = window.predictions[labelled]
    predicted = predictions[LABEL].astype(str)
    value = metric_value(metric, truth, predicted, positive, classes, cost=cost)
    base_truth, base_predictions = labelled_baseline(reference)
    base_predicted = base_predictions[LABEL].astype(str)
    weights = class_weights(base_truth, prior["prior"])
    expected = metric_value(metric, base_truth, base_predicted, positive, classes, weights, cost)
    window_brier = brier_scores(truth, class_proba(predictions, classes), classes)
    base_brier = brier_scores(base_truth, class_proba(base_predictions, classes), classes)
    expected_brier = float(np.average(base_brier, weights=weights))

    pool_truth = codes(pd.concat([truth, base_truth], ignore_index=True), classes)
    pool_predicted = codes(pd.concat([predicted, base_predicted], ignore_index=True), classes)
    pool_brier = np.concatenate([window_brier, base_brier])

    def score(rows: np.ndarray) -> float:
        return from_confusion(metric, confusion(pool_truth[rows], pool_predicted[rows], len(classes), None),
                              classes.index(positive), cost)

    null_metric, null_brier = [], []
    for window_rows, base_rows in _null_resamples(len(truth), weights, seed, n_boot):
        null_metric.extend(score(w) - score(b) for w, b in zip(window_rows, base_rows))
        null_brier.append(pool_brier[window_rows].mean(axis=1) - pool_brier[base_rows].mean(axis=1))
    sign, brier_sign = (-1.0 if lower_is_better(name) else 1.0 for name in (metric, "brier"))
    by_metric = _judged(sign * (value - expected), sign * np.asarray(null_metric), metric=metric,
                        window_value=value, expected_value=expected)
    window_brier_mean = float(window_brier.mean())
    by_brier = _judged(brier_sign * (window_brier_mean - expected_brier), brier_sign * np.concatenate(null_brier),
                       metric="brier", window_value=window_brier_mean, expected_value=expected_brier)
    return {"primary": by_metric, "brier": by_brier, "n_labelled": int(len(truth)),
            "n_reference": int(len(reference.holdout)), "n_feedback": int(len(base_truth) - len(reference.holdout)),
            "dropped": by_metric["dropped"] or by_brier["dropped"]}

