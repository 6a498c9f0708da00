"""Profiling: describe every column of a table and decide which ones are usable features.

Before AutoGluon sees the data, columns that would silently poison a model are dropped with a reason the user
sees: all-missing and constant columns, row identifiers, and target leaks (`leakage`). The profile is a
JSON-able dict: the job stores it, the data card shows it, and later steps read the features and their types
from it (`feature_types`).
"""

import difflib
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from poise.agents.data_engineering.column_types import class_counts, infer_type, is_integer_valued, label_strings
from poise.agents.data_engineering.leakage import LEAK_AUC, leak_sample, single_column_auc
from poise.agents.errors import DataError

ID_NAME = re.compile(r"^(id|uuid|guid|key|index|idx)$|[_\-\s.](id|uuid|guid|key|index|idx)$", re.IGNORECASE)
CAMEL_ID_NAME = re.compile(r"[a-z0-9](Id|ID|Uuid|UUID|Key)$")
PRESENT_OR_MISSING = "one value plus missing: kept as a binary feature (whether a value is there is information)"

ID_UNIQUE_SHARE = 0.99
# a sampled table's identifier is also (nearly) unique over every row; below 0.99 to absorb HyperLogLog's error
ID_EVERY_ROW_SHARE = 0.95
MAX_INTEGER_CLASSES = 20
MIN_ROWS_PER_CLASS = 4


def profile_table(
    df: pd.DataFrame,
    target: str,
    *,
    drop_columns: Sequence[str] = (),
    keep_columns: Sequence[str] = (),
    weight_column: str | None = None,
    seed: int = 0,
    every_row: dict | None = None,
) -> dict:
    """Describe the table and decide which columns are usable features (JSON-serialisable).

    `weight_column` holds per-row training weights (drift retraining sets it): never a feature. `every_row`: when
    `df` is a sample of a bigger table, that table's `rows` and per column its `missing` and `approx_distinct`
    (`large_tables`); the flags about presence and uniqueness then follow every row, not the sample."""
    if target not in df.columns:
        raise DataError(_target_not_found(target, [str(name) for name in df.columns]))
    _check_column_options(df, target, drop_columns, keep_columns)
    if weight_column is not None:
        _check_weight_column(df, target, weight_column)
    target_profile = _profile_target(df[target], target)
    is_classification = target_profile["problem_type"] != "regression"
    leak_rows, class_codes = leak_sample(df, target, seed) if is_classification else (None, None)

    columns, dropped, features = [], [], []
    for name in df.columns:
        if name == weight_column:
            continue
        entry = _describe_column(df[name], name, seed)
        if every_row is not None and name in every_row["columns"]:
            entry["every_row"] = {"rows": every_row["rows"], **every_row["columns"][name]}
        if name == target:
            columns.append(entry | {"role": "target", "flags": [], "leak_auc": None, "action": "keep", "reason": None})
            continue
        flags = _automatic_flags(df[name], entry)
        auc = None
        if leak_rows is not None and name not in drop_columns:
            auc = single_column_auc(leak_rows[name], entry["inferred_type"], class_codes, seed)
            if auc is not None and auc >= LEAK_AUC:
                flags["leak_suspect"] = f"leak_suspect: alone separates the target (ROC-AUC {auc:.3f})"
        entry |= {"role": "feature", "flags": list(flags), "leak_auc": auc}
        reasons = list(flags.values())
        if name in drop_columns:
            entry["action"], entry["reason"] = "drop", "dropped by user"
        elif reasons and name not in keep_columns:
            entry["action"], entry["reason"] = "drop", reasons[0]
        else:
            entry["action"] = "keep"
            entry["reason"] = (f"kept by user despite: {'; '.join(reasons)}" if reasons else
                               PRESENT_OR_MISSING if entry["n_unique"] == 1 and entry["n_missing"] else None)
        if entry["action"] == "drop":
            dropped.append({"column": name, "reason": entry["reason"]})
        else:
            features.append(name)
        columns.append(entry)

    if not features:
        why = ", ".join(f"{item['column']!r} ({item['reason']})" for item in dropped) or "the table has only the target"
        raise DataError(f"no usable feature columns: {why}")
    return {
        "n_rows": int(df.shape[0]),
        "n_columns": int(df.shape[1]),
        "n_duplicate_rows": int(df.duplicated().sum()),
        "target": target_profile,
        "columns": columns,
        "dropped": dropped,
        "features": features,
        "weight_column": weight_column,
    }


def _target_not_found(target: str, available: list[str]) -> str:
    by_lower = {name.lower(): name for name in available}
    close = difflib.get_close_matches(target.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"target column {target!r} not found; did you mean {by_lower[close[0]]!r}?"
    shown = ", ".join(map(repr, available[:10])) + (", ..." if len(available) > 10 else "")
    return f"target column {target!r} not found; available columns ({len(available)}): {shown}"


def _check_column_options(
    df: pd.DataFrame, target: str, drop_columns: Sequence[str], keep_columns: Sequence[str]
) -> None:
    for option, names in (("drop_columns", drop_columns), ("keep_columns", keep_columns)):
        unknown = [name for name in names if name not in df.columns]
        if unknown:
            raise DataError(f"unknown column(s) in {option}: {', '.join(map(repr, unknown))}")
        if target in names:
            raise DataError(f"{option} cannot include the target column {target!r}")
    both = sorted(set(drop_columns) & set(keep_columns))
    if both:
        raise DataError(f"column(s) in both drop_columns and keep_columns: {', '.join(map(repr, both))}")


def _check_weight_column(df: pd.DataFrame, target: str, weight_column: str) -> None:
    if weight_column not in df.columns or weight_column == target:
        raise DataError(f"weight column {weight_column!r} is not a non-target column of the table")
    weights = pd.to_numeric(df[weight_column], errors="coerce")
    if weights.isna().any() or (weights < 0).any() or not (weights > 0).any():
        raise DataError(f"weight column {weight_column!r} must hold non-negative numbers, not all zero")


def _profile_target(series: pd.Series, name: str) -> dict:
    values = series.dropna()
    n_missing = int(series.isna().sum())
    distinct = values.unique()
    if len(distinct) == 0:
        raise DataError(f"target {name!r} has no values: every row is missing")
    if len(distinct) == 1:
        raise DataError(f"target {name!r} has only one class ({_plain(distinct[0])!r}); "
                        "a model needs at least two different target values to learn from")
    numbers = pd.to_numeric(values, errors="coerce")
    if len(distinct) == 2:
        problem_type = "binary"
    elif numbers.notna().all() and (not is_integer_valued(numbers) or len(distinct) > MAX_INTEGER_CLASSES):
        problem_type = "regression"
    else:
        problem_type = "multiclass"
    summary = {"name": name, "problem_type": problem_type, "class_counts": None, "minority_class": None,
               "majority_class": None, "imbalance_ratio": None, "n_missing": n_missing}
    if problem_type == "regression":
        return summary
    counts = class_counts(label_strings(values))
    too_small = {label: count for label, count in counts.items() if count < MIN_ROWS_PER_CLASS}
    if too_small:
        listed = ", ".join(f"{label!r} ({count} rows)" for label, count in too_small.items())
        raise DataError(f"target {name!r}: too few rows for class(es) {listed}; every class needs at least "
                        f"{MIN_ROWS_PER_CLASS} rows so both training and holdout contain it")
    labels = list(counts)
    summary.update(class_counts=counts, majority_class=labels[0], minority_class=labels[-1],
                   imbalance_ratio=round(counts[labels[0]] / counts[labels[-1]], 4))
    return summary


def _describe_column(series: pd.Series, name: str, seed: int) -> dict:
    n_missing = int(series.isna().sum())
    return {
        "name": name,
        "inferred_type": infer_type(series, seed),
        "n_missing": n_missing,
        "missing_share": round(n_missing / len(series), 4) if len(series) else 0.0,
        "n_unique": int(series.nunique(dropna=True)),
    }


def _automatic_flags(series: pd.Series, entry: dict) -> dict[str, str]:
    """Flags that need no target, each with the reason shown to the user. A sampled table's column is judged by its
    every-row counts where they differ from the sample's: a column present, varied or repeated somewhere in the table
    is not all-null, constant or an identifier because the sample missed it."""
    whole = entry.get("every_row")
    n_present = len(series) - entry["n_missing"]
    if whole is not None:
        present = whole["rows"] - whole["missing"]
        if present == 0:
            return {"all_null": f"all_null: all {whole['rows']} values are missing (every row of the table)"}
        if whole["approx_distinct"] <= 1 and whole["missing"] == 0 and entry["n_unique"] <= 1:
            return {"constant": f"constant: single value {_plain(series.dropna().iloc[0])!r} in every row"}
        if n_present == 0:  # present elsewhere in the table, absent from the sample: nothing to judge it by
            return {}
        if _is_id_like(series, entry) and whole["approx_distinct"] >= ID_EVERY_ROW_SHARE * present:
            return {"id_like": f"id_like: ~{whole['approx_distinct']} distinct values in {present} rows (every row)"}
        return {}
    if n_present == 0:
        return {"all_null": f"all_null: all {len(series)} values are missing"}
    if entry["n_unique"] <= 1 and entry["n_missing"] == 0:
        return {"constant": f"constant: single value {_plain(series.dropna().iloc[0])!r}"}
    if _is_id_like(series, entry):
        return {"id_like": f"id_like: {entry['n_unique']} unique values in {n_present} rows"}
    return {}


def _is_id_like(series: pd.Series, entry: dict) -> bool:
    values = series.dropna()
    if entry["n_unique"] < ID_UNIQUE_SHARE * len(values):
        return False
    if entry["inferred_type"] == "categorical":
        return True
    if entry["inferred_type"] != "numeric":
        return False
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if not is_integer_valued(numbers):
        return False  # continuous measurements are unique without being identifiers
    name = str(entry["name"])
    if ID_NAME.search(name) or CAMEL_ID_NAME.search(name):
        return True
    consecutive = numbers.max() - numbers.min() + 1 == entry["n_unique"]
    return bool(consecutive or numbers.is_monotonic_increasing or numbers.is_monotonic_decreasing)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def feature_types(profile: dict) -> dict[str, str]:
    """Each feature's inferred type, in feature order."""
    types = {entry["name"]: entry["inferred_type"] for entry in profile["columns"]}
    return {name: types[name] for name in profile["features"]}


def features_of_type(profile: dict, inferred_type: str) -> list[str]:
    """The features of one inferred type, in feature order."""
    return [name for name, kind in feature_types(profile).items() if kind == inferred_type]
