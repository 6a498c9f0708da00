"""Splitting: typed train and holdout tables from a profiled table.

The holdout is stratified and never seen by training or threshold calibration, so it can score the model
honestly; a rare class always reaches it. A user (or drift retraining, or a table sampled for its size) may give a
separate holdout table instead, typed the same way and written part by part.
"""

import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from poise.agents.data_engineering.column_types import cast_columns, class_counts, label_strings, ordered_counts
from poise.agents.data_engineering.loading import first_line
from poise.agents.data_engineering.profiling import feature_types
from poise.agents.errors import DataError


def prepare_split(
    df: pd.DataFrame, profile: dict, *, holdout_fraction: float = 0.2, seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Typed train and holdout tables: a stratified split of `df`.

    Exact duplicate rows are kept: in tables like network logs they are real repeated
    observations, and dropping them would change the class prior. They are counted in
    the summary because identical rows can sit on both sides of the split."""
    target = profile["target"]["name"]
    weight_column = profile.get("weight_column")
    is_classification = profile["target"]["problem_type"] != "regression"
    table, labeled = _typed_rows(df, profile, "the table", weight_column)
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
    holdout_counts = class_counts(holdout[target]) if is_classification else None
    return train, holdout, _summary(profile, df, labeled, train, len(holdout), holdout_counts, holdout_fraction,
                                    "split", seed)


def split_with_holdout(df: pd.DataFrame, profile: dict, holdout_parts: Iterable[pd.DataFrame],
                       folder: Path) -> tuple[pd.DataFrame, dict]:
    """All of `df` typed to train on, and a given holdout table, typed the same way part by part, written to `folder`
    as one Parquet file per part: bounded memory whatever the holdout's size (a sampled big table's holdout holds a
    share of every row). Each file keeps its part's pandas types; `loading.parquet_chunks` reads them back alike."""
    target = profile["target"]["name"]
    is_classification = profile["target"]["problem_type"] != "regression"
    train, labeled = _typed_rows(df, profile, "the table", profile.get("weight_column"))
    known = set(train[target]) if is_classification else set()
    shutil.rmtree(folder, ignore_errors=True)  # a step rerun after a crash starts the folder again
    folder.mkdir(parents=True)
    rows, counts = 0, Counter()
    for position, part in enumerate(holdout_parts):
        holdout = _typed_rows(part, profile, "the holdout table", None)[0]
        unknown = sorted(set(holdout[target]) - known) if is_classification else []
        if unknown:
            raise DataError(f"the holdout table has classes the training table lacks: "
                            f"{', '.join(map(repr, unknown[:5]))}")
        if holdout.empty:
            continue
        partial = folder / f"part-{position:05d}.partial"
        holdout.to_parquet(partial, index=False)
        partial.rename(partial.with_suffix(".parquet"))
        rows += len(holdout)
        if is_classification:
            counts.update(class_counts(holdout[target]))
    if rows == 0:
        raise DataError("the holdout table has no rows with a target")
    holdout_counts = ordered_counts(counts.items()) if is_classification else None
    return train.reset_index(drop=True), _summary(profile, df, labeled, train, rows, holdout_counts,
                                                  rows / (len(train) + rows), "given", None)


def _summary(profile: dict, df: pd.DataFrame, labeled: pd.DataFrame, train: pd.DataFrame, holdout_rows: int,
             holdout_counts: dict | None, holdout_fraction: float, source: str, seed: int | None) -> dict:
    target = profile["target"]["name"]
    return {
        "n_rows_used": len(labeled),
        "n_duplicate_rows": int(labeled.duplicated().sum()),
        "n_missing_target_dropped": int(len(df) - len(labeled)),
        "train_rows": len(train),
        "holdout_rows": int(holdout_rows),
        "train_class_counts": class_counts(train[target]) if holdout_counts is not None else None,
        "holdout_class_counts": holdout_counts,
        "holdout_fraction": round(float(holdout_fraction), 4),
        "holdout_source": source,
        "seed": seed,
    }


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
