"""Splitting: typed train and holdout tables from a profiled table.

The holdout is stratified and never seen by training or threshold calibration, so it can score the model
honestly; a rare class always reaches it. A user may give a separate holdout table instead, typed the same way.
"""

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from poise.agents.data_engineering.column_types import cast_columns, class_counts, label_strings
from poise.agents.data_engineering.loading import first_line
from poise.agents.data_engineering.profiling import feature_types
from poise.agents.errors import DataError


def prepare_split(
    df: pd.DataFrame, profile: dict, *, holdout_fraction: float = 0.2, seed: int = 0,
    holdout: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Typed train and holdout tables: a stratified split of `df`, or — when a `holdout` table is given —
    all of `df` to train on and that table, typed the same way, to score.

    Exact duplicate rows are kept: in tables like network logs they are real repeated
    observations, and dropping them would change the class prior. They are counted in
    the summary because identical rows can sit on both sides of the split."""
    target = profile["target"]["name"]
    weight_column = profile.get("weight_column")
    is_classification = profile["target"]["problem_type"] != "regression"
    table, labeled = _typed_rows(df, profile, "the table", weight_column)
    n_missing_target = len(df) - len(table)

    given = holdout is not None
    if given:
        train, holdout = table, _typed_rows(holdout, profile, "the holdout table", None)[0]
        if holdout.empty:
            raise DataError("the holdout table has no rows with a target")
        unknown = sorted(set(holdout[target]) - set(train[target])) if is_classification else []
        if unknown:
            raise DataError(f"the holdout table has classes the training table lacks: "
                            f"{', '.join(map(repr, unknown[:5]))}")
        holdout_fraction = len(holdout) / (len(train) + len(holdout))
    else:
        try:
            train, holdout = train_test_split(table, test_size=holdout_fraction, random_state=seed,
                                              stratify=table[target] if is_classification else None)
        except ValueError as error:
            raise DataError(f"cannot split {len(table)} rows into train and holdout: {first_line(error)}") from None
        if is_classification:
            train, holdout = _ensure_every_class_in_holdout(train, holdout, target, seed)
        if weight_column:  # training rows carry their weight; the holdout is scored unweighted
            holdout = holdout.drop(columns=[weight_column])
    train, holdout = train.reset_index(drop=True), holdout.reset_index(drop=True)
    summary = {
        "n_rows_used": len(table),
        "n_duplicate_rows": int(labeled.duplicated().sum()),
        "n_missing_target_dropped": int(n_missing_target),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "train_class_counts": class_counts(train[target]) if is_classification else None,
        "holdout_class_counts": class_counts(holdout[target]) if is_classification else None,
        "holdout_fraction": round(float(holdout_fraction), 4),
        "holdout_source": "given" if given else "split",
        "seed": int(seed),
    }
    return train, holdout, summary


def _typed_rows(df: pd.DataFrame, profile: dict, what: str,
                weight_column: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of `df` with a target, in the profile's columns and types, and the same rows as read."""
    target = profile["target"]["name"]
    wanted = [*profile["features"], target, *([weight_column] if weight_column else [])]
    missing = [name for name in wanted if name not in df.columns]
    if missing:
        raise DataError(f"columns in the profile but not in {what}: {', '.join(map(repr, missing))}")
    labeled = df.loc[df[target].notna(), wanted].reset_index(drop=True)
    table = cast_columns(labeled, feature_types(profile))
    labels = labeled[target]
    table[target] = label_strings(labels) if profile["target"]["problem_type"] != "regression" \
        else pd.to_numeric(labels)
    if weight_column:
        table[weight_column] = pd.to_numeric(labeled[weight_column]).astype("float64")
    return table, labeled


def _ensure_every_class_in_holdout(train: pd.DataFrame, holdout: pd.DataFrame, target: str, seed: int):
    """Stratified rounding can leave a rare class out of the holdout; move one row of it over."""
    rng = np.random.default_rng(seed)
    train_counts = train[target].value_counts()
    for label in sorted(set(train_counts.index) - set(holdout[target])):
        if train_counts[label] < 2:
            continue
        moved = rng.choice(train.index[train[target] == label].to_numpy())
        holdout = pd.concat([holdout, train.loc[[moved]]])
        train = train.drop(index=moved)
    return train, holdout
