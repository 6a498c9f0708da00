"""The decision threshold of a binary model: tuned for the policy's metric on validation data, never the holdout.

How depends on how the policy fitted (`agents.imbalance_policy`):

- balanced sample weights (>= 200 minority rows): the weights aim the model's probabilities at a balanced prior,
  whose neutral threshold is 0.5 (how far they get there varies: early stopping on the unweighted validation log
  loss can keep a weak model near the natural prior). The threshold is tuned on bootstrap resamples of the
  validation predictions, and how depends on how many rows those are:
  - AutoGluon's validation split (a tenth of the rows): it moves away from 0.5 only as far as those rows can tell
    apart: of the thresholds that the resamples cannot tell from the best one, the one nearest 0.5 is taken
    (`steady_threshold`, the "one standard error" rule of model selection, on paired differences). On tables with
    little signal the metric's curve is flat and noisy, and its argmax lands anywhere on it: on `taxi` (ROC-AUC
    ~0.6, 59 positives in a validation split) AutoGluon's F1-optimal threshold was 0.10, flagging half the rows;
  - out-of-fold predictions of every training row (a bagged fit): the threshold with the best mean score over the
    resamples, the middle of a run of equal ones (`bootstrap_best_threshold`). With five times the rows the
    pull towards 0.5 costs more than the noise it guards against: on the real-table suite (14 tables x 3 seeds,
    thresholds recomputed on the same fits) it lost 0.002-0.007 macro-F1 on five tables (Caravan, Default, taxi,
    MplsStops, hotel_rates) and gained on none; on KEEL at 60 s (the four weighted tables, 3 seeds) it gained
    0.0045 on segment0 and 0.0006 on river_shuttle, where the classes are apart and any threshold in the gap
    serves, and tied on page_blocks0 and satimage;
- few minority rows: 5-fold bagging and no weights, threshold tuned on the out-of-fold predictions of every
  training row. Where a range of thresholds scores best, the middle of it is taken (`middle_of_ties`);
- a weight column (drift retraining's importance weights): AutoGluon's weighted choice, as it is.

Either way, if the F1-optimal threshold flags more than half of the validation rows, the model found no usable
signal for the positive class (F1 is then maximised by flagging everyone); the threshold is re-tuned for macro-F1
instead, which keeps the majority class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from poise.agents.imbalance_policy import autogluon_metric
from poise.agents.metrics import binary_from_counts, lower_is_better

DEGENERATE_POSITIVE_RATE = 0.5  # a threshold flagging more rows than this found no signal
NEUTRAL_THRESHOLD = 0.5  # of probabilities fitted with balanced weights
GRID = np.linspace(0.0, 1.0, 201)
BOOTSTRAP_RESAMPLES = 200
MAX_BOOTSTRAP_ROWS = 20_000  # validation rows beyond this are subsampled (stratified) for the bootstrap only


def middle_of_ties(threshold: float, positive: np.ndarray, proba: np.ndarray, metric) -> float:
    """The middle of the run of thresholds around `threshold` that score as well as it does on these rows.

    AutoGluon breaks ties between thresholds by closeness to 0.5. On out-of-fold predictions of a few dozen minority
    rows the best score is often a plateau (every threshold between two predictions scores the same), and its end
    nearest 0.5 sits just under the least confident positive: a new positive a little less confident is missed
    (kddcup, 4 holdout positives: 0.379 missed one at 0.32; the middle of the plateau, 0.25, caught it)."""
    from autogluon.core.metrics import Scorer, get_metric

    scorer = metric if isinstance(metric, Scorer) else get_metric(metric, problem_type="binary")
    grid = np.union1d(GRID, [threshold])

    def score(i: int) -> float:  # only the plateau and one step past each end are scored
        return scorer(positive, (proba > grid[i]).astype(int))  # AutoGluon's own rule: positive when p > t

    return middle_of_run(score, int(np.searchsorted(grid, threshold)), grid)


def middle_of_run(score: Callable[[int], float], start: int, grid: np.ndarray) -> float:
    """The middle of the run of thresholds of `grid` around `grid[start]` whose `score` (by index) ties with its own."""
    low = high = start
    best = score(start)
    while low > 0 and np.isclose(score(low - 1), best):
        low -= 1
    while high < len(grid) - 1 and np.isclose(score(high + 1), best):
        high += 1
    return float((grid[low] + grid[high]) / 2)


def scores_from_counts(tp, fp, fn, tn, policy: dict[str, Any]) -> np.ndarray:
    """The policy's metric from confusion counts (arrays of any shape), oriented so that higher is better."""
    metric = {"f1_macro": "macro_f1"}.get(policy["eval_metric"], policy["eval_metric"])
    cost = (policy["cost_fn"], policy["cost_fp"]) if metric == "expected_cost" else None
    scores = binary_from_counts(metric, tp, fp, fn, tn, cost)
    return -scores if lower_is_better(metric) else scores


def bootstrap_scores(positive: np.ndarray, proba: np.ndarray, policy: dict[str, Any], seed: int = 0) -> np.ndarray:
    """The policy's metric (higher is better) at every threshold of `GRID` (columns) on `BOOTSTRAP_RESAMPLES`
    bootstrap resamples of the rows (rows of the result).

    Every resample is scored at every threshold at once: the confusion counts are the resamples' row multiplicities
    times indicator matrices of (positive, flagged) per threshold."""
    positive, proba = np.asarray(positive, dtype=bool), np.asarray(proba, dtype=float)
    rng = np.random.default_rng(seed)
    if len(positive) > MAX_BOOTSTRAP_ROWS:  # stratified: every positive's share is kept
        keep = np.concatenate([
            rng.choice(np.flatnonzero(positive == cls), round(MAX_BOOTSTRAP_ROWS * np.mean(positive == cls)),
                       replace=False)
            for cls in (True, False) if (positive == cls).any()])
        positive, proba = positive[keep], proba[keep]
    flagged = proba[:, None] > GRID[None, :]  # rows x thresholds; AutoGluon's rule: positive when p > t
    multiplicity = rng.multinomial(len(positive), np.full(len(positive), 1 / len(positive)),
                                   size=BOOTSTRAP_RESAMPLES).astype(float)  # resamples x rows
    tp = multiplicity[:, positive] @ flagged[positive]
    fn = multiplicity[:, positive].sum(axis=1, keepdims=True) - tp
    fp = multiplicity[:, ~positive] @ flagged[~positive]
    tn = multiplicity[:, ~positive].sum(axis=1, keepdims=True) - fp
    return scores_from_counts(tp, fp, fn, tn, policy)


def steady_threshold(positive: np.ndarray, proba: np.ndarray, policy: dict[str, Any], seed: int = 0) -> float:
    """The threshold nearest `NEUTRAL_THRESHOLD` among those that score as well as the best one, as far as these rows
    can tell: over bootstrap resamples of the rows, its shortfall to the threshold with the best mean score is on
    average within one standard deviation of that shortfall (a one-standard-error rule on paired differences: both
    thresholds are scored on the same resamples, so a real gap shows even where every score is noisy)."""
    scores = bootstrap_scores(positive, proba, policy, seed)
    shortfall = scores[:, [int(np.argmax(scores.mean(axis=0)))]] - scores
    candidates = np.flatnonzero(shortfall.mean(axis=0) <= shortfall.std(axis=0))
    return float(GRID[candidates[np.argmin(np.abs(GRID[candidates] - NEUTRAL_THRESHOLD))]])


def bootstrap_best_threshold(positive: np.ndarray, proba: np.ndarray, policy: dict[str, Any], seed: int = 0) -> float:
    """The threshold with the best mean score over bootstrap resamples of the rows (the argmax of a smoothed curve,
    not of one noisy one), the middle of the run of thresholds around it whose mean scores tie with it."""
    mean = bootstrap_scores(positive, proba, policy, seed).mean(axis=0)
    return middle_of_run(mean.__getitem__, int(np.argmax(mean)), GRID)


def validation_predictions(predictor, positive_class: str) -> tuple[np.ndarray, np.ndarray]:
    """Whether each validation row is positive, and its probability of being so: out-of-fold predictions of every
    training row for a bagged fit, else AutoGluon's validation split."""
    if predictor._trainer.bagged_mode:
        proba = predictor.predict_proba_oof()[positive_class].to_numpy()
        encoded = np.asarray(predictor._trainer.load_y())
    else:
        features, encoded = predictor.load_data_internal(data="val", return_y=True)
        proba = predictor.predict_proba(features, transform_features=False)[positive_class].to_numpy()
    return np.asarray(encoded) == 1, proba  # AutoGluon encodes the positive class as 1


def calibrate(predictor, policy: dict[str, Any]) -> tuple[float, str | None]:
    """The decision threshold for the fitted predictor under the policy (see the module docstring), and a note when
    it was not tuned for the policy's own metric."""
    if policy.get("weight_evaluation"):  # weighted scores: keep AutoGluon's choice
        return float(predictor.calibrate_decision_threshold(metric=autogluon_metric(policy), verbose=False)), None
    positive, proba = validation_predictions(predictor, policy["positive_class"])

    def tuned(metric_policy: dict[str, Any]) -> float:
        if policy["class_balanced"]:
            rule = bootstrap_best_threshold if policy["num_bag_folds"] else steady_threshold
            return rule(positive, proba, metric_policy)
        metric = autogluon_metric(metric_policy)
        threshold = float(predictor.calibrate_decision_threshold(metric=metric, verbose=False))
        return middle_of_ties(threshold, positive.astype(int), proba, metric)

    threshold = tuned(policy)
    flagged = float((proba > threshold).mean())
    if policy["eval_metric"] != "f1" or flagged <= DEGENERATE_POSITIVE_RATE:
        return threshold, None
    return tuned(policy | {"eval_metric": "f1_macro"}), (
        f"the F1-optimal threshold flagged {flagged:.0%} of validation rows (no usable signal for the positive "
        "class); re-tuned for macro-F1")
