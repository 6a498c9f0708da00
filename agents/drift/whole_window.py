"""Every row of a window bigger than its sample: what the served model predicts there and what a domain classifier
sees there.

A check reads a big window through a sample (`PREDICTION_ROWS` rows scored and kept, `ANALYSIS_ROWS` a side for
Evidently's report). Three of its statistics need not rest on that sample, and for a window bigger than it they do
not:

* the class prior is estimated from the champion's predicted labels on every row;
* the domain classifier is trained on the window's sample against half the reference rows, then scores every other
  window row and the reference half it never saw; its ROC-AUC over those rows is the multivariate statistic. The
  rows scored are disjoint from the rows it was fitted on, so under no drift the AUC's null is exactly the
  Mann–Whitney one;
* each column's population stability over every row (`agents.drift.stability`).

Each part of the window (a slice in this process, a Ray Data batch on a cluster) is reduced to a `tally` of counts,
and the tallies add up: nothing of the window is held beyond one part. `detection.analyse` judges the window by
these in place of the sample's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from poise.agents.drift.detection import classifier, null_auc_sd
from poise.agents.drift.reference import LABEL, row_keys


@dataclass
class DomainScorer:
    """A domain classifier fitted on the window's sample (1) against half the reference rows (0), with what it needs
    to score the rest of the window: the category codes it was fitted with, the sorted scores of the reference rows
    it never saw, and the row keys of the window rows it was fitted on (scoring them again would flatter it)."""

    model: Any
    features: list[str]
    levels: dict[str, list[str]]  # per non-numeric feature, the categories in code order
    held_out: np.ndarray  # sorted scores of the held-out reference rows
    fitted_keys: np.ndarray  # `row_keys` of the window rows it was fitted on
    importance: dict[str, float]

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(_encoded(frame, self.features, self.levels))[:, 1] if len(frame) else \
            np.array([])


def _numeric(values: pd.Series) -> pd.Series | None:
    """Numbers, booleans and timestamps as float64; None for anything else."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.astype("int64").where(values.notna()).astype("float64")
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return pd.to_numeric(values, errors="coerce").astype("float64")
    return None


def _encoded(frame: pd.DataFrame, features: list[str], levels: dict[str, list[str]]) -> pd.DataFrame:
    """Each feature as a number: numbers, booleans and timestamps as float64, anything else as its code among
    `levels` (-1 when unseen or missing)."""
    out = {}
    for column in features:
        if column in levels:
            codes = pd.Categorical(frame[column].astype("string"), categories=levels[column]).codes
            out[column] = codes.astype("int32")
        else:
            out[column] = _numeric(frame[column])
    return pd.DataFrame(out, index=frame.index)


def fit_domain_scorer(reference: pd.DataFrame, window_sample: pd.DataFrame, features: list[str],
                      seed: int) -> DomainScorer:
    """The classifier, fitted on `window_sample` against a random half of `reference`; the other half held out."""
    shuffled = reference[features].sample(frac=1.0, random_state=seed).reset_index(drop=True)
    fit_part, held_part = shuffled.iloc[:len(shuffled) // 2], shuffled.iloc[len(shuffled) // 2:]
    window_rows = window_sample[features].reset_index(drop=True)
    levels = {column: sorted(pd.concat([fit_part[column], window_rows[column]]).dropna().astype(str).unique())
              for column in features if _numeric(fit_part[column]) is None}
    x = pd.concat([_encoded(fit_part, features, levels), _encoded(window_rows, features, levels)], ignore_index=True)
    y = np.r_[np.zeros(len(fit_part)), np.ones(len(window_rows))]
    model = classifier(seed).fit(x, y)
    gain = model.booster_.feature_importance(importance_type="gain")
    total = gain.sum() or 1.0
    held_out = np.sort(model.predict_proba(_encoded(held_part, features, levels))[:, 1])
    return DomainScorer(model=model, features=features, levels=levels, held_out=held_out,
                        fitted_keys=row_keys(window_rows, features),
                        importance={c: float(g / total) for c, g in zip(features, gain)})


def tally(features: pd.DataFrame, predictions: pd.DataFrame, scorer: DomainScorer) -> dict[str, Any]:
    """One part of the window as counts: its rows, the champion's predicted labels, and, over the part's rows the
    domain classifier was not fitted on, their number and their Mann–Whitney count against the held-out
    reference scores (window score above a reference score: 1, a tie: 1/2)."""
    keys = row_keys(features, scorer.features)
    fitted = np.isin(keys, scorer.fitted_keys)
    scores = scorer.score(features[~fitted])
    below = np.searchsorted(scorer.held_out, scores, side="left")
    ties = np.searchsorted(scorer.held_out, scores, side="right") - below
    return {"rows": len(features),
            "predicted": {str(k): int(v) for k, v in predictions[LABEL].astype(str).value_counts().items()},
            "domain_rows": int(len(scores)), "domain_u": float(below.sum() + 0.5 * ties.sum())}


def merged(tallies) -> dict[str, Any]:
    """The sum of parts' tallies (with their stability `bins` counts, when they have them)."""
    total: dict[str, Any] = {"rows": 0, "predicted": {}, "domain_rows": 0, "domain_u": 0.0}
    for part in tallies:
        total["rows"] += part["rows"]
        total["domain_rows"] += part["domain_rows"]
        total["domain_u"] += part["domain_u"]
        for label, count in part["predicted"].items():
            total["predicted"][label] = total["predicted"].get(label, 0) + count
        if "bins" in part:
            total["bins"] = {column: [a + b for a, b in zip(total["bins"][column], counts)]
                             for column, counts in part["bins"].items()} if "bins" in total else part["bins"]
    return total


def summary(total: dict[str, Any], scorer: DomainScorer) -> dict[str, Any]:
    """What a check records of the pass: rows scored, predicted labels, and the domain classifier's all-rows AUC."""
    n_window, n_reference = total["domain_rows"], len(scorer.held_out)
    auc = total["domain_u"] / max(n_window * n_reference, 1)
    return {"rows": total["rows"], "predicted": total["predicted"],
            "domain": {"auc": float(auc), "window_rows": n_window, "reference_rows": n_reference,
                       "fitted_window_rows": len(scorer.fitted_keys),
                       "null_sd": null_auc_sd(n_reference, max(n_window, 1)),
                       "top_columns": dict(sorted(scorer.importance.items(), key=lambda kv: -kv[1])[:5])}}
