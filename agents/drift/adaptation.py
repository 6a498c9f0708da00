"""Adaptation: the numerical parts of acting on a decision, and the test a challenger must pass.

A recalibration moves the served model to the window's prior by Bayes' rule and re-tunes its threshold; a
retraining gets a table of reference and window rows weighted for the new data; the challenger is compared with
the champion on the same labelled rows by a paired bootstrap; a promoted challenger gets a reference matching
the data it was adapted to.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from poise.agents.drift.detection import ANALYSIS_ROWS, classifier, encode
from poise.agents.drift.reference import (
    MIN_LABELLED,
    PROBA,
    WEIGHT,
    Reference,
    Window,
    class_weights,
    labelled_baseline,
    sample,
    weighted_rows,
    with_class_shares,
)
from poise.agents.metrics import codes, confusion, from_confusion, lower_is_better, metric_value

# How sure the paired bootstrap must be that a challenger is better before it is promoted: a refit may
# fail where the window had no data; a recalibration is the same model moved to a new prior by Bayes' rule.
PROMOTION_CONFIDENCE = {"retrain": 0.9, "recalibrate": 0.8}
# What a reference row weighs next to a window row when retraining after covariate drift (recency only:
# its label still follows its features). After a concept change a reference row weighs what the new
# concept, learned from the window's labelled rows, gives its old label (`label_agreement`).
OLD_ROW_WEIGHT = 0.5
# Keeps every weight positive, so no class total is ever zero. Kept tiny on purpose: a floor of 0.01 let
# contradicted old labels back into the trees (river_shuttle concept scenario below: 0.998 -> 0.910).
MIN_LABEL_AGREEMENT = 1e-6


def importance_weights(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], seed: int,
                       clip: tuple[float, float] = (0.05, 20.0)) -> np.ndarray:
    """Density-ratio weights p_window(x) / p_reference(x) for every reference row, from a domain classifier:
    reference rows that look like the window count more. Clipped, mean 1."""
    fit_ref, fit_cur = sample(reference, ANALYSIS_ROWS, seed), sample(current, ANALYSIS_ROWS, seed)
    ref_all, ref_fit, cur_fit = encode([reference, fit_ref, fit_cur], features)
    x = pd.concat([ref_fit, cur_fit], ignore_index=True)
    y = np.r_[np.zeros(len(ref_fit)), np.ones(len(cur_fit))]
    p = np.clip(classifier(seed).fit(x, y).predict_proba(ref_all)[:, 1], 1e-6, 1 - 1e-6)
    weights = np.clip(p / (1 - p) * len(ref_fit) / len(cur_fit), *clip)
    return weights / weights.mean()


def labelled_split(window: Window, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Window rows with labels, split in half (stratified): one half to learn from, one fresh holdout."""
    labelled = np.flatnonzero(window.labels.notna().to_numpy())
    labels = window.labels.iloc[labelled].astype(str)
    if len(labelled) < 2 * MIN_LABELLED or labels.value_counts().min() < 2:
        return None
    learn, holdout = train_test_split(labelled, test_size=0.5, random_state=seed, stratify=labels)
    return np.sort(learn), np.sort(holdout)


def evaluation_rows(reference: Reference, window: Window, rows: np.ndarray | None,
                    weights: np.ndarray) -> pd.DataFrame:
    """The labelled rows challenger and champion are compared on: the window's fresh holdout when it has one,
    else the reference holdout weighted to resemble the window."""
    if rows is not None:
        table = window.features.iloc[rows][reference.features].reset_index(drop=True)
        return table.assign(**{reference.target: window.labels.iloc[rows].astype(str).to_numpy()})
    table = reference.holdout[reference.features + [reference.target]].reset_index(drop=True)
    return table.assign(**{WEIGHT: weights})


def adjust_proba(predictions: pd.DataFrame, weights: dict[str, float]) -> pd.DataFrame:
    """Probabilities moved to a new prior: p'(y|x) ∝ p(y|x) · q(y)/p(y)."""
    proba = pd.DataFrame({c: predictions[f"{PROBA}{c}"] * w for c, w in weights.items()})
    return proba.div(proba.sum(axis=1).replace(0, 1), axis=0)


def recalibration(reference: Reference, prior: dict[str, float]) -> dict[str, Any]:
    """Prior weights q/p and a threshold re-tuned for the primary metric on the `labelled_baseline`,
    probabilities adjusted to the new prior and rows weighted from their own class shares to it. No refit."""
    meta = reference.meta
    weights = {c: prior.get(c, 0.0) / meta["prior"][c] for c in meta["classes"]}
    truth, predictions = labelled_baseline(reference)
    proba = adjust_proba(predictions, weights)
    row_weights = class_weights(truth, prior)
    positive, classes, metric = meta["positive_class"], meta["classes"], meta["primary_metric"]
    threshold = None
    if len(classes) == 2 and meta.get("threshold") is not None:
        negative = next(c for c in classes if c != positive)
        candidates = np.unique(np.quantile(proba[positive], np.linspace(0.0, 1.0, 201)))
        scores = [metric_value(metric, truth, pd.Series(np.where(proba[positive] >= t, positive, negative)),
                               positive, classes, row_weights, meta.get("cost")) for t in candidates]
        best = int(np.argmin(scores) if lower_is_better(metric) else np.argmax(scores))
        threshold = float(candidates[best])
    return {"prior_weights": weights, "decision_threshold": threshold}


def label_agreement(old: pd.DataFrame, new: pd.DataFrame, features: list[str], target: str,
                    seed: int) -> np.ndarray:
    """For each old row, the probability the new concept gives its old label: a classifier fitted on the
    new labelled rows (classes balanced, so a rare class is not ruled out by its rarity) scores the old
    rows. Where the concept changed the old labels contradict it and weigh next to nothing; elsewhere they
    keep adding what the few new rows cannot show. Measured on the drift benchmark's concept scenario with
    500 new rows (LightGBM on the weighted table, macro-F1 on drifted rows, mean of four windows):
    page_blocks0 0.919 -> 0.944, satimage 0.799 -> 0.873, river_shuttle 0.859 -> 0.998, against a flat
    0.1 per old row; an oracle trained on as many drifted rows as the reference: 0.954, 0.887, 1.0."""
    old_x, new_x = encode([old, new], features)
    labels = new[target].astype(str)
    balanced = with_class_shares(labels, np.ones(len(labels)))  # mean 1: LightGBM's leaf limits assume unit weights
    model = classifier(seed, flexible=True).fit(new_x, labels, sample_weight=balanced)
    proba = pd.DataFrame(model.predict_proba(old_x), columns=model.classes_)
    proba = proba.reindex(columns=sorted(set(model.classes_) | set(old[target].astype(str))), fill_value=0.0)
    agreement = proba.to_numpy()[np.arange(len(old)), proba.columns.get_indexer(old[target].astype(str))]
    return np.clip(agreement, MIN_LABEL_AGREEMENT, 1.0)


def retraining_table(reference: Reference, window: Window, labelled_rows: np.ndarray, decision: str,
                     prior: dict[str, float], seed: int) -> pd.DataFrame:
    """Reference rows plus the window's labelled rows, weighted for the new data: reference rows by density
    ratio (rows that look like the window count more) times their age weight (`OLD_ROW_WEIGHT`) or, after
    a concept change, the new concept's agreement with their labels; then the classes to the window's
    `prior`. Not to equal totals: the training job also validates and calibrates its threshold on these
    weights, and F1 at a balanced prior is not F1 at the window's — it asks for a lower threshold."""
    features, target = reference.features, reference.target
    old = reference.train[features + [target]].reset_index(drop=True)
    new = window.features.loc[labelled_rows, features].reset_index(drop=True)
    new[target] = window.labels[labelled_rows].astype(str).to_numpy()
    concept_changed = decision == "performance_drop" and new[target].nunique() > 1
    old_weight = importance_weights(old, window.features, features, seed) * (
        label_agreement(old, new, features, target, seed) if concept_changed else OLD_ROW_WEIGHT)
    table = pd.concat([old.assign(**{WEIGHT: old_weight}), new.assign(**{WEIGHT: 1.0})], ignore_index=True)
    table[WEIGHT] = with_class_shares(table[target], table[WEIGHT].to_numpy(), prior)
    return table


def adapted_reference(reference: Reference, window: Window, evaluation: pd.DataFrame, predictions: pd.DataFrame,
                      prior: dict[str, float], threshold: float | None, value: float, seed: int) -> Reference:
    """The reference of a promoted challenger: the data it was adapted to. Training rows are the window's
    labelled rows when it has enough, else the old reference reweighted to the window (density ratio and
    prior); the holdout is the rows it was judged on (resampled by their weights when weighted)."""
    features, target = reference.features, reference.target
    labelled = window.labels.notna().to_numpy()
    if labelled.sum() >= MIN_LABELLED:
        train = window.features.loc[labelled, features].assign(**{target: window.labels[labelled].astype(str)})
    else:
        weights = (importance_weights(reference.train, window.features, features, seed)
                   * class_weights(reference.train[target], prior, reference.meta["prior"]))
        train = reference.train.iloc[weighted_rows(weights, seed)]
    holdout, predictions = evaluation.reset_index(drop=True), predictions.reset_index(drop=True)
    if WEIGHT in holdout:
        rows = weighted_rows(holdout[WEIGHT].to_numpy(), seed)
        holdout, predictions = holdout.iloc[rows].drop(columns=[WEIGHT]), predictions.iloc[rows]
    shares = train[target].astype(str).value_counts(normalize=True)
    meta = {**reference.meta, "prior": {c: float(shares.get(c, 0.0)) for c in reference.meta["classes"]},
            "threshold": reference.meta["threshold"] if threshold is None else threshold, "primary_value": value}
    return Reference(train=train.reset_index(drop=True), holdout=holdout.reset_index(drop=True),
                     predictions=predictions.reset_index(drop=True), meta=meta)


def _bootstrap(truth: pd.Series, predicted: list[pd.Series], metric: str, reference: Reference,
               weights: np.ndarray | None, seed: int, n_boot: int) -> np.ndarray:
    """Metric of each prediction set on `n_boot` paired resamples of the rows: shape (n_boot, len(predicted)).

    Unweighted, the metrics depend on a resample only through how many rows fall in each joint cell (true class,
    each set's prediction), so a resample is drawn as one multinomial over those cells: the same distribution as
    resampling rows, at a cost independent of their number (a 2M-row holdout took minutes a row at a time)."""
    meta = reference.meta
    classes, k = list(meta["classes"]), len(meta["classes"])
    positive = classes.index(meta["positive_class"])
    truth_codes = codes(truth, classes)
    predicted_codes = [codes(p, classes) for p in predicted]
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(predicted)))
    if weights is None:
        joint = truth_codes.copy()
        for p in predicted_codes:
            joint = joint * (k + 1) + p
        cells, counts = np.unique(joint, return_counts=True)
        cell_predicted = []
        for _ in predicted_codes:
            cell_predicted.insert(0, cells % (k + 1))
            cells = cells // (k + 1)
        for b in range(n_boot):
            drawn = rng.multinomial(len(truth_codes), counts / counts.sum()).astype(float)
            out[b] = [from_confusion(metric, confusion(cells, p, k, drawn), positive, meta.get("cost"))
                      for p in cell_predicted]
        return out
    for b in range(n_boot):
        rows = rng.integers(0, len(truth_codes), len(truth_codes))
        w = None if weights is None else weights[rows]
        out[b] = [from_confusion(metric, confusion(truth_codes[rows], p[rows], k, w), positive, meta.get("cost"))
                  for p in predicted_codes]
    return out


def compare(reference: Reference, truth: pd.Series, champion: pd.Series, challenger: pd.Series,
            weights: np.ndarray | None, seed: int, n_boot: int = 1000,
            min_probability: float = PROMOTION_CONFIDENCE["retrain"]) -> dict[str, Any]:
    """Challenger vs champion on the same labelled rows: the primary metric of each, the difference with a
    paired-bootstrap 95% interval, and the verdict — promote only when the challenger is better in at least
    `min_probability` of the resamples."""
    meta, metric = reference.meta, reference.meta["primary_metric"]
    values = [metric_value(metric, truth, p, meta["positive_class"], meta["classes"], weights, meta.get("cost"))
              for p in (champion, challenger)]
    boot = _bootstrap(truth, [champion, challenger], metric, reference, weights, seed, n_boot)
    gain = (boot[:, 0] - boot[:, 1]) if lower_is_better(metric) else (boot[:, 1] - boot[:, 0])
    probability = float((gain > 0).mean())
    better = probability >= min_probability and (values[1] < values[0] if lower_is_better(metric)
                                                  else values[1] > values[0])
    low, high = np.percentile(boot[:, 1] - boot[:, 0], [2.5, 97.5])
    return {
        "metric": metric, "champion": values[0], "challenger": values[1], "difference": values[1] - values[0],
        "interval": [float(low), float(high)], "probability_better": probability, "n_rows": int(len(truth)),
        "weighted": weights is not None, "promote": bool(better),
        "reason": (f"challenger {metric} {values[1]:.3f} vs champion {values[0]:.3f} (difference 95% CI "
                   f"{low:+.3f} to {high:+.3f}; better in {probability:.0%} of {n_boot} resamples, "
                   f"{'promote' if better else f'keep the champion: needs {min_probability:.0%}'})"),
    }
