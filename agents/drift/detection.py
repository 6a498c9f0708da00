"""Detection: the evidence of what moved between the reference and a window, with nothing decided yet.

Four looks, each keeping its evidence:

* per-column drift with Evidently (`DataDriftPreset`), the method and threshold of each column recorded — its
  value is a p-value for tests and a distance for distances — and one dataset rule: the share of drifted columns
  weighted by feature importance;
* a domain classifier (LightGBM) told to separate reference rows from window rows: drift when its out-of-fold
  ROC-AUC exceeds a threshold calibrated on clean splits of the reference; its importances say which columns
  moved (together);
* the class prior of the window: from feedback labels when most rows have them, else by black-box shift
  estimation (Lipton et al., 2018) from the model's predictions and its confusion matrix on the labelled
  baseline, with a bootstrap interval;
* prediction drift, label drift, and — with labels — the model's performance (`agents.drift.performance`).

Before the covariate checks the reference is resampled to the window's prior, so a pure prior shift is not
mistaken for covariate drift. A window bigger than its sample is judged on every row where that is possible
(`agents.drift.whole_window`): the prior from every row's predicted label, the columns by their population stability
over every row, the domain classifier by its AUC over every row it was not fitted on; Evidently's report and the
prior-matched comparison stay on the sample. Everything returned is JSON-able.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from poise.agents.drift import estimation
from poise.agents.drift.performance import performance
from poise.agents.drift.reference import (
    LABEL,
    MIN_LABELLED,
    PROBA,
    Reference,
    Window,
    labelled_baseline,
    prior_matched,
    sample,
)
from poise.agents.drift.stability import PSI_SHIFTED
from poise.agents.errors import DataError

ANALYSIS_ROWS = 5_000  # rows per side for the per-column and multivariate checks
DRIFT_SHARE = 0.5  # dataset drift: importance-weighted share of drifted columns at or above this
# A prior shift must also be large: half again (or a third less) of the reference share. A smaller move
# changes the best threshold little, and windows of a few hundred rows move that much by chance
# next to a reference that is itself a sample.
PRIOR_MIN_RELATIVE_CHANGE = 0.5
NULL_SDS = 4.0  # a window's all-rows domain AUC must clear its Mann–Whitney null by this many standard deviations


# Per-column drift (Evidently)


def _column_roles(frame: pd.DataFrame, features: list[str]) -> tuple[list[str], list[str]]:
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    return numeric, [c for c in features if c not in numeric]


def _evidently_frame(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    out = frame[numeric + categorical].copy()
    for column in numeric:
        out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    for column in categorical:
        out[column] = out[column].astype("string").fillna("<missing>").astype(str)
    return out


def column_drift(reference: pd.DataFrame, current: pd.DataFrame, features: list[str],
                 importance: dict[str, float], html_path: Path | None = None) -> dict[str, Any]:
    """Evidently's per-column drift, each column's method/threshold/value, and the importance-weighted share."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numeric, categorical = _column_roles(reference, features)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset(columns=numeric + categorical)]).run(
        current_data=Dataset.from_pandas(_evidently_frame(current, numeric, categorical), data_definition=definition),
        reference_data=Dataset.from_pandas(_evidently_frame(reference, numeric, categorical),
                                           data_definition=definition))
    if html_path is not None:
        snapshot.save_html(str(html_path))
    columns: dict[str, dict[str, Any]] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        method, threshold, value = config["method"], float(config["threshold"]), float(metric["value"])
        is_p_value = "p_value" in method  # tests report p-values (small = drift), distances grow with drift
        columns[config["column"]] = {
            "method": method, "threshold": threshold, "value": value,
            "score": "p_value" if is_p_value else "distance",
            "drifted": bool(value < threshold if is_p_value else value >= threshold),
        }
    weights = {c: max(importance.get(c, 0.0), 0.0) for c in columns}
    if sum(weights.values()) <= 0:
        weights = dict.fromkeys(columns, 1.0)
    total = sum(weights.values())
    share = sum(weights[c] for c, r in columns.items() if r["drifted"]) / total
    return {
        "columns": columns,
        "n_drifted": sum(r["drifted"] for r in columns.values()),
        "weighted_share": float(share),
        "rule": f"dataset drift when the importance-weighted share of drifted columns >= {DRIFT_SHARE}",
        "drifted": bool(share >= DRIFT_SHARE),
    }


# Multivariate drift (domain classifier)


def encode(frames: list[pd.DataFrame], features: list[str]) -> list[pd.DataFrame]:
    """Numbers stay numbers; anything else becomes category codes shared by all frames."""
    joined = pd.concat([f[features] for f in frames], ignore_index=True)
    numeric, _ = _column_roles(joined, features)
    encoded = pd.DataFrame(index=joined.index)
    for column in features:
        if column in numeric:
            encoded[column] = pd.to_numeric(joined[column], errors="coerce").astype("float64")
        else:
            encoded[column] = joined[column].astype("string").astype("category").cat.codes.astype("int32")
    bounds = np.cumsum([0] + [len(f) for f in frames])
    return [encoded.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds, bounds[1:])]


def classifier(seed: int, flexible: bool = False):
    """The LightGBM behind the domain classifier and density ratios; `flexible` (more, slower trees on
    every row, small leaves) for learning a concept from a few hundred labelled rows, where a rare class
    may be a handful of rows."""
    from lightgbm import LGBMClassifier

    n_jobs = max(1, os.cpu_count() or 1)
    if flexible:
        return LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=5,
                              random_state=seed, verbose=-1, n_jobs=n_jobs)
    return LGBMClassifier(n_estimators=80, learning_rate=0.1, num_leaves=15, min_child_samples=20, subsample=0.8,
                          subsample_freq=1, colsample_bytree=0.8, random_state=seed, verbose=-1, n_jobs=n_jobs)


def domain_auc(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], seed: int,
               folds: int = 3) -> tuple[float, dict[str, float]]:
    """Out-of-fold ROC-AUC of a classifier telling `current` rows from `reference` rows, and its
    normalised gain importances (which columns, alone or together, give the window away)."""
    ref, cur = encode([reference, current], features)
    x = pd.concat([ref, cur], ignore_index=True)
    y = np.r_[np.zeros(len(ref)), np.ones(len(cur))]
    oof = np.zeros(len(x))
    gain = np.zeros(len(features))
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = classifier(seed).fit(x.iloc[train_idx], y[train_idx])
        oof[test_idx] = model.predict_proba(x.iloc[test_idx])[:, 1]
        gain += model.booster_.feature_importance(importance_type="gain")
    total = gain.sum() or 1.0
    return float(roc_auc_score(y, oof)), {c: float(g / total) for c, g in zip(features, gain)}


def null_auc_sd(n_reference: int, n_current: int) -> float:
    """Standard deviation of the ROC-AUC of an uninformative score (Mann–Whitney null)."""
    return float(np.sqrt((n_reference + n_current + 1) / (12.0 * n_reference * n_current)))


_CLEAN_THRESHOLDS: dict[tuple, dict[str, Any]] = {}


def domain_threshold(pool: pd.DataFrame, n_reference: int, n_current: int, features: list[str], seed: int,
                     cache_key: str | None = None, splits: int = 2) -> dict[str, Any]:
    """The AUC above which a window counts as drifted, calibrated on clean splits of the reference pool.

    Disjoint random parts of reference rows, sized like the check, are told apart by the same
    classifier; the threshold is the largest clean AUC plus two null standard deviations, and never
    below 0.5 + 4 null standard deviations. Cached per reference and sizes within a process."""
    key = (cache_key, n_reference, n_current, tuple(features), seed)
    if cache_key is not None and key in _CLEAN_THRESHOLDS:
        return _CLEAN_THRESHOLDS[key]
    size_b = min(n_current, len(pool) // 2)
    size_a = min(n_reference, len(pool) - size_b)
    clean = []
    for split in range(splits):
        shuffled = pool.sample(frac=1.0, random_state=seed + 1 + split).reset_index(drop=True)
        auc, _ = domain_auc(shuffled.iloc[:size_a], shuffled.iloc[size_a:size_a + size_b], features, seed)
        clean.append(auc)
    sd = null_auc_sd(size_a, size_b)
    result = {"threshold": float(max(max(clean) + 2 * sd, 0.5 + 4 * sd)), "clean_aucs": clean,
              "null_sd": sd, "clean_sizes": [size_a, size_b]}
    if cache_key is not None:
        _CLEAN_THRESHOLDS[key] = result
    return result


def judged_on_every_row(raw: dict[str, Any], whole: dict[str, Any], importance: dict[str, float]) -> dict[str, Any]:
    """`covariate_drift`'s evidence on the sample (`raw`) judged again on every row (`whole`): columns by the
    importance-weighted share of columns whose PSI over every row is at least `PSI_SHIFTED`, the domain classifier
    by its AUC over every unseen row. The sample's judgements are kept under `sample`."""
    domain = whole["domain"]
    threshold = max(raw["multivariate"]["threshold"], 0.5 + NULL_SDS * domain["null_sd"])
    multivariate = {"method": "domain classifier (LightGBM) fitted on the window's sample against half the reference "
                              "rows, ROC-AUC over every other window row against the reference rows it never saw",
                    **domain, "threshold": float(threshold), "drifted": bool(domain["auc"] > threshold)}
    columns = raw["columns"]
    stable = whole.get("stability")
    if stable:
        psi = stable["psi"]
        weights = {c: max(importance.get(c, 0.0), 0.0) for c in psi}
        if sum(weights.values()) <= 0:
            weights = dict.fromkeys(psi, 1.0)
        share = sum(weights[c] for c in stable["shifted"]) / sum(weights.values())
        columns = {"method": stable["method"],
                   "columns": {c: {"method": "psi", "threshold": PSI_SHIFTED, "value": value, "score": "distance",
                                   "drifted": value >= PSI_SHIFTED} for c, value in psi.items()},
                   "n_drifted": len(stable["shifted"]), "weighted_share": float(share),
                   "rule": f"dataset drift when the importance-weighted share of columns with PSI >= {PSI_SHIFTED} "
                           f"over every row is >= {DRIFT_SHARE}",
                   "drifted": bool(share >= DRIFT_SHARE)}
    return {**raw, "columns": columns, "multivariate": multivariate,
            "sample": {"columns": raw["columns"], "multivariate": raw["multivariate"]},
            "drifted": bool(columns["drifted"] or multivariate["drifted"])}


# Prior, predictions, labels


def estimate_prior(reference: Reference, window: Window, seed: int, n_boot: int = 200) -> dict[str, Any]:
    """The window's class prior: the feedback labels' shares when at least half the rows have one, else black-box
    shift estimation — solve C w = mu, with C the rates P(predicted | true) on the `labelled_baseline` and mu
    the window's predicted-label shares — with a bootstrap interval over the window's predictions. On the
    holdout alone C rests on a few dozen positives, and its error is amplified by the inversion (drift
    benchmark, seed 1, satimage: 0.437 estimated for a true 0.29 from 386 rows; 0.316 with the earlier clean
    windows' rows)."""
    classes = list(reference.meta["classes"])
    reference_prior = reference.meta["prior"]
    labelled = window.labels.dropna().astype(str)
    rng = np.random.default_rng(seed)
    if len(labelled) >= max(MIN_LABELLED, 0.5 * len(window.labels)):
        counts = labelled.value_counts().reindex(classes, fill_value=0).to_numpy(dtype="float64")
        boot = rng.multinomial(len(labelled), counts / counts.sum(), size=n_boot) / len(labelled)
        estimate, method = counts / counts.sum(), "feedback labels"
    else:
        truth, predictions = labelled_baseline(reference)
        predicted = predictions[LABEL].astype(str)
        joint = pd.crosstab(predicted, truth).reindex(index=classes, columns=classes, fill_value=0).to_numpy(float)
        joint /= joint.sum()
        true_shares = truth.value_counts(normalize=True).reindex(classes, fill_value=0).to_numpy(float)
        confusion = joint / np.where(true_shares > 0, true_shares, 1.0)  # P(predicted | true)
        predicted = (pd.Series(window.whole["predicted"], dtype="int64") if window.whole is not None
                     else window.predictions[LABEL].astype(str).value_counts())
        window_pred = predicted.reindex(classes, fill_value=0)
        mu = window_pred.to_numpy(float) / max(window_pred.sum(), 1)

        def solve(shares: np.ndarray) -> np.ndarray:
            q, *_ = np.linalg.lstsq(confusion, shares, rcond=None)
            q = np.clip(q, 0.0, None)
            return q / q.sum() if q.sum() > 0 else np.full(len(classes), 1.0 / len(classes))

        n = int(window_pred.sum())
        estimate = solve(mu)
        boot = np.array([solve(s) for s in rng.multinomial(n, mu, size=n_boot) / max(n, 1)])
        method = "black-box shift estimation" + (" over every row" if window.whole is not None else "")
    low, high = np.percentile(boot, [0.5, 99.5], axis=0)
    ref = np.array([reference_prior.get(c, 0.0) for c in classes])
    outside = (ref < low) | (ref > high)
    relative = np.abs(estimate - ref) / np.where(ref > 0, ref, 1.0)
    shifted = bool(np.any(outside & (relative >= PRIOR_MIN_RELATIVE_CHANGE)))
    return {
        "method": method, "prior": dict(zip(classes, estimate.round(6).tolist())),
        "interval": {c: [float(lo), float(hi)] for c, lo, hi in zip(classes, low, high)},
        "reference_prior": reference_prior, "shifted": shifted,
        "rule": f"prior shift when a class's reference share lies outside the 99% interval and the estimate "
                f"differs from it by >= {PRIOR_MIN_RELATIVE_CHANGE:.0%}",
    }


def _prior_without_labels(reference: Reference, window: Window, prior: dict[str, Any], drifted: bool,
                          seed: int) -> dict[str, float] | None:
    """The class prior the quality estimate moves its probabilities to: the one black-box shift estimation finds
    from the predictions alone (never the feedback labels, which the estimate is compared with), when it shifted
    and the features did not drift beyond what the new prior explains (under covariate drift the calibrated
    probabilities already follow the rows)."""
    if drifted:
        return None
    if prior["method"] == "feedback labels":
        prior = estimate_prior(reference, replace(window, labels=pd.Series(np.nan, index=window.labels.index)), seed)
    return prior["prior"] if prior["shifted"] else None


def _positive_proba(predictions: pd.DataFrame, positive: str) -> pd.Series:
    return predictions[f"{PROBA}{positive}"].astype("float64")


def prediction_drift(reference: Reference, window: Window) -> dict[str, Any]:
    """K-S test on the positive-class probability (binary) or chi-square on predicted labels."""
    positive, classes = reference.meta["positive_class"], reference.meta["classes"]
    if len(classes) == 2 and f"{PROBA}{positive}" in window.predictions:
        result = stats.ks_2samp(_positive_proba(reference.predictions, positive),
                                _positive_proba(window.predictions, positive))
        return {"method": "K-S p_value", "threshold": 0.05, "value": float(result.pvalue),
                "drifted": bool(result.pvalue < 0.05)}
    return _chi_square(reference.predictions[LABEL], window.predictions[LABEL], classes) | {"column": "prediction"}


def _chi_square(reference: pd.Series, current: pd.Series, classes: list[str]) -> dict[str, Any]:
    expected = reference.astype(str).value_counts(normalize=True).reindex(classes, fill_value=0).to_numpy(float)
    observed = current.astype(str).value_counts().reindex(classes, fill_value=0).to_numpy(float)
    keep = expected > 0
    p_value = float(stats.chisquare(observed[keep], expected[keep] / expected[keep].sum() * observed.sum()).pvalue)
    return {"method": "chi-square p_value", "threshold": 0.05, "value": p_value, "drifted": bool(p_value < 0.05)}


# The analysis of a window


def covariate_drift(pool: pd.DataFrame, current: pd.DataFrame, features: list[str], importance: dict[str, float],
                    seed: int, html_path: Path | None = None, cache_key: str | None = None) -> dict[str, Any]:
    """Per-column and multivariate drift of `current` against samples of the reference rows `pool`."""
    ref_sample, cur_sample = sample(pool, ANALYSIS_ROWS, seed), sample(current, ANALYSIS_ROWS, seed)
    # Evidently's report is mostly pure-Python plotting; the domain classifier's LightGBM releases the GIL,
    # so on two cores the two overlap (measured on 5,000 x 50 rows a side: 8.4 s in turn, 6.3-7.0 s together)
    with ThreadPoolExecutor(max_workers=1) as evidently:
        per_column = evidently.submit(column_drift, ref_sample, cur_sample, features, importance, html_path)
        auc, moved = domain_auc(ref_sample, cur_sample, features, seed)
        calibration = domain_threshold(pool, len(ref_sample), len(cur_sample), features, seed, cache_key=cache_key)
        columns = per_column.result()
    multivariate = {"method": "domain classifier (LightGBM), out-of-fold ROC-AUC", "auc": auc, **calibration,
                    "drifted": bool(auc > calibration["threshold"]),
                    "top_columns": dict(sorted(moved.items(), key=lambda kv: -kv[1])[:5])}
    return {"sample_rows": {"reference": len(ref_sample), "window": len(cur_sample)}, "columns": columns,
            "multivariate": multivariate, "drifted": columns["drifted"] or multivariate["drifted"]}


def analyse(reference: Reference, window: Window, seed: int, html_path: Path | None = None,
            cache_key: str | None = None) -> dict[str, Any]:
    """Every check on one window. When the class prior moved, the features are also compared with the
    reference resampled to the new prior: drift that vanishes there is the prior shift itself (on the sample, also
    for a window judged on every row)."""
    features = [c for c in reference.features if c in window.features.columns]
    missing = sorted(set(reference.features) - set(features))
    if missing:
        raise DataError(f"the window lacks feature column(s) {', '.join(map(repr, missing))}")
    importance = reference.meta["feature_importance"]
    prior = estimate_prior(reference, window, seed)
    raw = covariate_drift(reference.train, window.features, features, importance, seed, html_path,
                          cache_key=f"{cache_key}:raw" if cache_key else None)
    if window.whole is not None:
        raw = judged_on_every_row(raw, window.whole, importance)
    matched = None
    if prior["shifted"] and raw["drifted"]:
        matched = covariate_drift(prior_matched(reference.train, reference.target, prior["prior"], seed),
                                  window.features, features, importance, seed)
    labelled = window.labels.dropna()
    return {
        "n_rows": window.n_rows, **raw, "prior_matched": matched, "prior": prior,
        "estimated_quality": estimation.estimate(
            reference, window, _prior_without_labels(reference, window, prior, raw["drifted"] and (
                matched is None or matched["drifted"]), seed), seed),
        "prediction_drift": prediction_drift(reference, window),
        "label_drift": (_chi_square(reference.train[reference.target], labelled, reference.meta["classes"])
                        if len(labelled) >= MIN_LABELLED else None),
        "performance": performance(reference, window, prior, seed),
    }

