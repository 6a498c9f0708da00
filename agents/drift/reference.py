"""What a drift check compares: a version's reference (the rows it was trained and judged on, stored at
registration) and a window of live rows, and the ways rows of either are sampled and reweighted to a class prior.

Detection, the performance judgement and adaptation all read these shapes; they live apart from any of them so
that the training pipeline can build a reference without the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

REFERENCE_ROWS = 20_000  # training rows kept at registration
# Holdout rows kept at registration, drawn uniformly (the holdout's class prior kept): the reference holdout every
# drift check and every challenger's gate reads. A table beyond the memory budget has millions (2M at 10M rows).
REFERENCE_HOLDOUT_ROWS = 200_000
PREDICTION_ROWS = 20_000  # rows of an explicit batch scored by the champion for the prior estimate
MIN_LABELLED = 30  # labelled window rows needed to judge performance or hold out a fresh test set
FEEDBACK_ROWS = 20_000  # labelled rows of earlier clean windows kept beside the holdout as the performance baseline
MIN_CLASS_SHARE = 1e-3  # a class present in a retraining table keeps at least this share of the weight
WEIGHT = "poise_weight"
LABEL, PROBA = "label", "proba_"


@dataclass
class Reference:
    """What a registered version was trained and judged on: the drift baseline."""

    train: pd.DataFrame  # features + target
    holdout: pd.DataFrame  # features + target
    predictions: pd.DataFrame  # the version's `label` and `proba_<class>` for each holdout row
    meta: dict[str, Any]
    # Labelled live rows the version served in earlier windows judged clean: the target, `label`, `proba_<class>`.
    # Not part of the stored reference; gathered by the monitor at each check.
    feedback: pd.DataFrame | None = None

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "holdout": self.holdout, "predictions": self.predictions}

    @property
    def features(self) -> list[str]:
        return list(self.meta["features"])

    @property
    def target(self) -> str:
        return self.meta["target"]


@dataclass
class Window:
    """Live rows to check: features, the served model's predictions, and feedback labels where known."""

    features: pd.DataFrame
    predictions: pd.DataFrame
    labels: pd.Series  # NaN where no label is known
    n_rows: int  # rows in the window before sampling
    # When the window is bigger than its sample: counts over every row (`agents.drift.whole_window.summary`, with
    # the columns' `stability`)
    whole: dict[str, Any] | None = None


def row_keys(features: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """A hash of each row's feature values, the same whichever way the row came in (the log stores numbers
    as JSON floats; a batch file may hold them as integers)."""
    frame = features.reindex(columns=columns)
    frame = frame.apply(lambda c: c.astype("float64") if pd.api.types.is_numeric_dtype(c) and
                        not pd.api.types.is_bool_dtype(c) else c.astype(str))
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def prediction_columns(predicted: pd.Series, proba: pd.DataFrame) -> pd.DataFrame:
    """`label` plus `proba_<class>` columns, the shape the served model returns."""
    frame = pd.DataFrame({LABEL: predicted.astype(str).to_numpy()})
    for label in proba.columns:
        frame[f"{PROBA}{label}"] = proba[label].to_numpy(dtype="float64")
    return frame


def class_proba(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The `proba_<class>` columns of `predictions` as a column per class."""
    return pd.DataFrame({c: predictions[f"{PROBA}{c}"].to_numpy(dtype="float64") for c in classes},
                        index=predictions.index)


def reference_meta(policy: dict[str, Any], target: str, types: dict[str, str], threshold: float | None,
                   train_labels: pd.Series, gate: dict[str, Any], importance: dict[str, float]) -> dict[str, Any]:
    """`types`: each feature's inferred type, so live rows are cast as the training rows were."""
    shares = train_labels.astype(str).value_counts(normalize=True)
    return {
        "target": target, "features": list(types), "types": types, "classes": sorted(shares.index),
        "cost": [policy["cost_fn"], policy["cost_fp"]] if policy["objective"] == "cost" else None,
        "positive_class": policy["positive_class"] or policy["minority_class"], "threshold": threshold,
        "prior": {str(k): float(v) for k, v in shares.items()}, "objective": policy["objective"],
        "primary_metric": gate["metric"], "primary_value": float(gate["value"]),
        "feature_importance": {str(k): float(v) for k, v in importance.items()},
    }


def sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= n else frame.sample(n=n, random_state=seed)


def reweighted_sample(frame: pd.DataFrame, weights: pd.Series, n: int, seed: int) -> pd.DataFrame:
    """At most about `n` rows of a weighted sample, each kept with probability proportional to its weight (Poisson
    sampling): rows of a table sampled at class rates r and weighted 1/r come back at the table's own class shares.
    A training sample of a table beyond the memory budget holds every minority row; kept as it is, it would make
    every drift check see a prior shift (measured: 22.9 % positives for the table's 2 %)."""
    w = weights.to_numpy(dtype="float64")
    scale = min(n / w.sum(), 1.0 / w.max())  # no row's probability above 1: the proportions stay exact
    keep = np.random.default_rng(seed).random(len(w)) < w * scale
    return frame[keep].reset_index(drop=True)


def weighted_rows(weights: np.ndarray, seed: int, share: float = 0.5) -> np.ndarray:
    """Positions of about `share` of the rows, drawn without replacement with probability proportional to
    `weights` (no row twice: repeated rows are easy for a domain classifier to spot), in order."""
    p = np.asarray(weights, dtype="float64")
    n = min(max(1, int(share * len(p))), int((p > 0).sum()))
    return np.sort(np.random.default_rng(seed).choice(len(p), size=n, replace=False, p=p / p.sum()))


def prior_matched(frame: pd.DataFrame, target: str, prior: dict[str, float], seed: int) -> pd.DataFrame:
    """The largest stratified subsample of `frame` (no row twice) whose class shares are `prior`.

    Without replacement on purpose: repeated rows are easy for a domain classifier to spot."""
    counts = frame[target].astype(str).value_counts()
    wanted = {c: q for c, q in prior.items() if q > 0 and counts.get(c, 0) > 0}
    total = min(counts[c] / q for c, q in wanted.items())
    parts = [frame[frame[target].astype(str) == c].sample(n=max(1, int(q * total)), random_state=seed)
             for c, q in wanted.items()]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def with_class_shares(labels: pd.Series, weights: np.ndarray, shares: dict[str, float] | None = None) -> np.ndarray:
    """`weights` rescaled within each class so that the classes' total weights are in the proportions `shares`
    (equal when None; a class without a share, or a zero one, keeps a sliver so it is never dropped) and
    the mean is unchanged."""
    weights, labels = np.asarray(weights, dtype="float64"), labels.astype(str)
    present = labels.unique()
    wanted = pd.Series({c: max(shares.get(c, 0.0), MIN_CLASS_SHARE) if shares else 1.0 for c in present})
    wanted = wanted / wanted.sum()
    totals = pd.Series(weights).groupby(labels.to_numpy()).transform("sum").to_numpy()
    return weights * weights.sum() * labels.map(wanted).to_numpy(dtype="float64") / totals


def class_weights(labels: pd.Series, prior: dict[str, float],
                  reference_prior: dict[str, float] | None = None) -> np.ndarray:
    """Per-row weight q(y)/p(y) that gives rows drawn with prior p (the labels' own class shares when not given)
    the prior q."""
    if reference_prior is None:
        reference_prior = labels.astype(str).value_counts(normalize=True).to_dict()
    ratio = {c: prior.get(c, 0.0) / reference_prior[c] for c in reference_prior}
    return labels.astype(str).map(ratio).fillna(0.0).to_numpy(dtype="float64")


def labelled_baseline(reference: Reference) -> tuple[pd.Series, pd.DataFrame]:
    """What the version is known to do on labelled rows: the reference holdout and the version's predictions on
    it, plus the feedback rows of earlier clean windows. A window's performance is measured against it, the
    prior is estimated from its error rates, and a recalibrated threshold is tuned on it. The holdout alone can
    be a few hundred rows with a few dozen positives, and then it is not only uncertain but, once drawn, wrong
    the same way for every window (drift benchmark, satimage: F1 0.759 on a 386-row holdout with 41 positives
    against 0.623 on 20,000 live rows, so 4 of 20 clean windows read as drops)."""
    truth, predictions = reference.holdout[reference.target].astype(str), reference.predictions
    if reference.feedback is not None and len(reference.feedback):
        truth = pd.concat([truth, reference.feedback[reference.target].astype(str)], ignore_index=True)
        predictions = pd.concat([predictions, reference.feedback[list(reference.predictions.columns)]],
                                ignore_index=True)
    return truth.reset_index(drop=True), predictions.reset_index(drop=True)

