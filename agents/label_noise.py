"""The label-noise audit: which training rows' given labels are likely wrong.

On an imbalanced table a few wrong labels weigh a lot: ten majority rows labelled as the minority are ten false
"positives" the model is taught to find, and with balanced weights each counts as much as several majority rows.
The user should see them. A bagged fit (`agents.imbalance_policy`: 5 folds on tables up to 100k rows) already has
what finding them needs: out-of-fold class probabilities of every training row, each from a model that never saw
that row's label. cleanlab's confident learning compares them with the given labels and flags the rows whose label
the rest of the table contradicts; its label-quality score ranks them, worst first.

The audit reports and changes nothing: training uses the labels as given unless the user asks to down-weight the
flagged rows (`downweighted`) or drop them (`kept_rows`). Where the classes overlap, most flagged rows are ambiguous
rather than wrong (benchmarks/label_noise.py, clean labels, 20 s bagged CatBoost: satimage 249 of 4,826 rows
flagged, HMDA 267 of 1,785, attrition 62 of 1,102; segment0, whose classes are apart, none of 1,731), so the flags
are a list to look at, not a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# The weight of a flagged row when the user asks to down-weight them. benchmarks/label_noise.py (6 tables, seeds 0-1,
# 20 s, 5 % of the minority's count flipped): mean test macro-F1 with minority labels flipped 0.818 as given, 0.818
# at 0.2, 0.817 at 0.5, 0.809 dropped (clean labels 0.812); with majority labels flipped 0.814, 0.813, 0.816, 0.807.
# Down-weighting ties with using the labels as given, dropping loses about 0.01; 0.5, the milder weight, because
# about three in four flagged rows were labelled correctly (precision 0.25 and 0.26).
DOWN_WEIGHT = 0.5
ROW_WEIGHT = "poise_label_weight"  # the refit's weight column when the flagged rows are down-weighted
# cleanlab estimates per class how often its labels are wrong; with fewer rows than this in a class it has nothing
# to estimate from, and the audit flags nothing.
MIN_ROWS_PER_CLASS = 5
# cleanlab's default filter, named so that a change of default in a cleanlab upgrade cannot change silently which
# rows are flagged: it flags, per (given, likely) pair of classes, as many rows as the estimated noise rate implies,
# the least confident first. benchmarks/label_noise.py scores the others on the same probabilities (means of 12
# runs): prune_by_class and both flagged the same rows; confident_learning fewer (93 against 124, precision 0.285
# against 0.259, recall 0.73 against 0.78); predicted_neq_given 206 at precision 0.13 (recall 0.89).
FILTER = "prune_by_noise_rate"
METHOD = (f"cleanlab confident learning (find_label_issues, filter_by='{FILTER}') on out-of-fold class "
          "probabilities of a bagged fit; suspects ranked by label quality (the out-of-fold probability of the "
          "given label, lowest first)")


@dataclass(frozen=True)
class LabelAudit:
    """The flagged rows' positions (0-based, in the audited order) and the JSON-able summary for the data card."""

    positions: np.ndarray
    summary: dict[str, Any]


def audit(labels: pd.Series, oof_proba: pd.DataFrame, row_ids: pd.Series | None = None, *,
          top: int = 20) -> LabelAudit:
    """Audit the given `labels` (class names) against out-of-fold class probabilities (`oof_proba`: a column per
    class, the same rows in the same order, index included). The summary names rows by `row_ids` (same length),
    else by position, and lists the `top` worst suspects."""
    classes = checked_classes(labels, oof_proba, row_ids, top)
    given = labels.astype(str).to_numpy()
    codes = pd.Categorical(given, categories=classes).codes
    proba = oof_proba.to_numpy(dtype=float)
    counts = pd.Series(given).value_counts().reindex(classes, fill_value=0)
    too_few = counts[counts < MIN_ROWS_PER_CLASS]
    positions = np.array([], dtype=int) if len(too_few) else suspect_positions(codes, proba)
    ids = np.arange(len(given)) if row_ids is None else row_ids.to_numpy()
    summary = {
        "method": METHOD,
        "rows": len(given),
        "suspects": len(positions),
        "per_class": per_class(given[positions], counts),
        "top": worst_suspects(positions, codes, proba, classes, ids, top),
    }
    summary["sentence"] = (skipped_sentence(too_few) if len(too_few) else
                           flagged_sentence(summary["rows"], summary["per_class"]))
    return LabelAudit(positions=positions, summary=summary)


def checked_classes(labels: pd.Series, oof_proba: pd.DataFrame, row_ids: pd.Series | None, top: int) -> list[str]:
    """The classes, in the columns' order, once the inputs are known to fit together; else a ValueError saying how
    they do not."""
    if len(labels) != len(oof_proba) or not labels.index.equals(oof_proba.index):
        raise ValueError(f"labels ({len(labels)} rows) and oof_proba ({len(oof_proba)} rows) must hold the same rows "
                         "in the same order, with the same index")
    if row_ids is not None and len(row_ids) != len(labels):
        raise ValueError(f"row_ids has {len(row_ids)} values for {len(labels)} rows")
    if top < 0:
        raise ValueError(f"top must be >= 0, not {top}")
    if labels.isna().any():
        raise ValueError(f"{int(labels.isna().sum())} labels are missing; audit labelled rows only")
    if oof_proba.isna().to_numpy().any():
        rows = int(oof_proba.isna().any(axis=1).sum())
        raise ValueError(f"{rows} rows of oof_proba have missing (NaN) probabilities: the fit has no out-of-fold "
                         "prediction for them")
    classes = [str(name) for name in oof_proba.columns]
    given = set(labels.astype(str))
    if given - set(classes):
        raise ValueError(f"classes {sorted(given - set(classes))} are labels but not columns of oof_proba")
    if set(classes) - given:
        raise ValueError(f"columns {sorted(set(classes) - given)} of oof_proba are not labels of any row")
    if len(classes) < 2:
        raise ValueError(f"only one class ({classes[0]!r}): no label can be wrong")
    return classes


def suspect_positions(codes: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Positions of the rows cleanlab flags, in increasing order."""
    from cleanlab.filter import find_label_issues

    # one process: cleanlab would fork a pool, which hangs a process that threads hold locks in (a Ray driver's, a
    # worker's); on <= 100,000 bagged rows it takes well under a second anyway
    return np.flatnonzero(find_label_issues(codes, proba, filter_by=FILTER, n_jobs=1))


def per_class(suspect_labels: np.ndarray, counts: pd.Series) -> dict[str, dict[str, Any]]:
    """Per class (given label): its rows, how many of them are suspects, and what share."""
    suspects = pd.Series(suspect_labels, dtype=object).value_counts()
    return {name: {"rows": int(rows), "suspects": int(suspects.get(name, 0)),
                   "share": round(int(suspects.get(name, 0)) / int(rows), 4)} for name, rows in counts.items()}


def worst_suspects(positions: np.ndarray, codes: np.ndarray, proba: np.ndarray, classes: list[str],
                   ids: np.ndarray, top: int) -> list[dict[str, Any]]:
    """The `top` suspects with the lowest label quality, each with its row id, given and likely label."""
    if not len(positions):
        return []
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(codes[positions], proba[positions])
    order = positions[np.argsort(quality, kind="stable")][:top]
    quality_of = dict(zip(positions, quality))
    return [{"row_id": json_value(ids[position]), "given": classes[codes[position]],
             "likely": classes[int(np.argmax(proba[position]))], "label_quality": round(float(quality_of[position]), 4)}
            for position in order]


def json_value(value: Any) -> Any:
    """A numpy scalar as the Python value JSON takes."""
    return value.item() if isinstance(value, np.generic) else value


def flagged_sentence(rows: int, classes: dict[str, dict[str, Any]]) -> str:
    suspects = sum(entry["suspects"] for entry in classes.values())
    if not suspects:
        return f"cleanlab flags none of {rows:,} rows as likely mislabelled"
    by_class = sorted(((entry["suspects"], name) for name, entry in classes.items() if entry["suspects"]),
                      key=lambda pair: -pair[0])
    listed = ", ".join(f"{count:,} of class '{name}'" for count, name in by_class)
    return (f"cleanlab flags {suspects:,} of {rows:,} rows ({100 * suspects / rows:.1f} %) as likely mislabelled: "
            f"{listed}; training uses them as given unless you ask to down-weight or drop them")


def skipped_sentence(too_few: pd.Series) -> str:
    listed = ", ".join(f"'{name}' has {int(rows)}" for name, rows in too_few.items())
    return (f"no label-noise audit: class {listed} rows, and cleanlab needs at least {MIN_ROWS_PER_CLASS} in every "
            "class to estimate how often its labels are wrong")


def downweighted(n_rows: int, positions: np.ndarray, factor: float = DOWN_WEIGHT) -> np.ndarray:
    """Training weights: 1 for every row, `factor` (0 < factor <= 1) for the flagged `positions`."""
    if not 0 < factor <= 1:
        raise ValueError(f"a down-weight factor is in (0, 1], not {factor}")
    weights = np.ones(n_rows)
    weights[positions] = factor
    return weights


def kept_rows(n_rows: int, positions: np.ndarray) -> np.ndarray:
    """Which rows training keeps when the flagged `positions` are dropped (a boolean mask)."""
    keep = np.ones(n_rows, dtype=bool)
    keep[positions] = False
    return keep


def of_fit(predictor, train: pd.DataFrame, target: str, *, bagged: bool, top: int = 20) -> LabelAudit:
    """The audit of a fitted AutoGluon predictor's out-of-fold probabilities of its training rows (`train`, in the
    order it was fitted on), rows named by their position in the training split; an audit of nothing, saying why,
    when the fit was not bagged (it has out-of-fold predictions of no row)."""
    if not bagged:
        return not_audited(len(train), "the fit was not bagged (a table over 100,000 rows or a budget under 60 s), "
                                       "so no row has an out-of-fold prediction to judge its label by")
    oof = predictor.predict_proba_oof()
    labels = train[target].astype(str)
    return audit(labels.set_axis(oof.index), oof.set_axis([str(c) for c in oof.columns], axis=1),
                 pd.Series(np.arange(len(train))), top=top)


def with_overlap_caveat(summary: dict[str, Any], overlap_level: str | None) -> dict[str, Any]:
    """The summary, its sentence warning that the flags are weak evidence when the classes overlap heavily: there a
    correct label often disagrees with its neighbours (benchmarks/label_noise.py, clean labels: 242 rows of satimage
    and 247 of HMDA flagged, none of segment0, whose classes are apart)."""
    if overlap_level != "high" or not summary.get("suspects"):
        return summary
    return summary | {"sentence": summary["sentence"] + "; the classes overlap heavily (see class overlap), where many "
                                                      "correct labels are flagged too: review them before dropping any"}


def not_audited(rows: int, why: str) -> LabelAudit:
    """An audit of nothing (`suspects` None), saying why."""
    return LabelAudit(positions=np.array([], dtype=int), summary={
        "method": METHOD, "rows": rows, "suspects": None, "per_class": {}, "top": [],
        "sentence": f"no label-noise audit: {why}"})


def suspect_rows(train: pd.DataFrame, found: LabelAudit) -> pd.DataFrame:
    """The flagged rows as they were trained on, with their position in the training split first (the row id of the
    summary's `top`), for the user to review."""
    return train.iloc[found.positions].reset_index(drop=True).assign(training_row=found.positions)[
        ["training_row", *train.columns]]


def refit_note(mode: str, suspects: int) -> str:
    """What the refit on every labelled row does with the flagged rows, in words."""
    if mode == "drop":
        return f"the model refitted on every labelled row leaves out the {suspects:,} flagged rows"
    return (f"the model refitted on every labelled row weighs the {suspects:,} flagged rows at {DOWN_WEIGHT:g} "
            "(times their class weight)")


def balanced_weights(labels: pd.Series) -> np.ndarray:
    """AutoGluon's `balance_weight` per row: rows / (classes x rows of the row's class)."""
    counts = labels.astype(str).value_counts()
    return labels.astype(str).map(len(labels) / (len(counts) * counts)).to_numpy(dtype=float)


def refit_table(train: pd.DataFrame, holdout: pd.DataFrame, target: str, positions: np.ndarray, mode: str,
                policy: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The refit's rows (training split, then holdout) and policy under the user's `mode` for the flagged training
    rows: as given ("keep"), left out ("drop"), or weighted `DOWN_WEIGHT` ("downweight": a weight column of the
    policy's class-balancing weights over all the rows, times the factor at the flagged ones)."""
    if mode == "drop":
        train = train[kept_rows(len(train), positions)]
    rows = pd.concat([train, holdout], ignore_index=True)
    if mode != "downweight" or not len(positions):
        return rows, policy
    from poise.agents.imbalance_policy import with_row_weights

    balance = balanced_weights(rows[target]) if policy["class_balanced"] else np.ones(len(rows))
    factor = np.concatenate([downweighted(len(train), positions), np.ones(len(holdout))])
    return rows.assign(**{ROW_WEIGHT: balance * factor}), with_row_weights(policy, ROW_WEIGHT)
