"""Tables bigger than the memory budget: read out of core, trained on an imbalance-aware sample.

Every other step reads a job's table into pandas, which holds several times a Parquet file's size. A Parquet
source (a file, a folder of files or a glob) whose rows would not fit in `memory_budget_bytes` is instead scanned
with Polars' streaming engine, which reads it in batches: class counts, per-column missingness and distinct counts
come from every row; each labelled row goes to the holdout with the holdout fraction's probability (a hash of its
position, so about that share of every class; written batch by batch, and scored in full);
the training part keeps every row of each minority class and a uniform sample of the majority, each row weighted
by the inverse of its class's sampling rate, so that weighted training and threshold calibration see the table's
true class prior. Polars over DuckDB: it reads S3-compatible stores with no extension downloaded at run time, and
over Ray Data: it needs no cluster for the single-machine case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from poise.agents.data_engineering.loading import check_same_columns, clean_column_names, first_line, mask_missing
from poise.agents.errors import DataError

PRIOR_WEIGHT = "poise_prior_weight"  # the training sample's weight column: restores the table's class prior
ESTIMATE_ROWS = 10_000  # rows read into pandas to estimate a row's in-memory size
# The training sample is cut to this share of the memory budget; the rest is for what a job holds beside it:
# AutoGluon's working copies of the sample (the holdout is typed, scored and sampled part by part).
# Measured (benchmarks/scale.py, 10M rows x 50 columns, the default 2 GB budget): a 580k-row sample, 1.7 GB peak RSS
# after profiling and 5.8 GB over the job when `prepare` and `evaluate` read the 2M-row holdout whole.
SAMPLE_SHARE_OF_BUDGET = 0.25
HASH_BUCKETS = 1 << 32


def _scan(files: list[Path]):
    import polars as pl

    check_same_columns(files)
    try:
        lazy = pl.scan_parquet([str(path) for path in files])
        schema = lazy.collect_schema()
    except Exception as error:  # Polars raises its own error types for unreadable files
        raise DataError(f"{files[0].parent}: cannot read as Parquet ({first_line(error)})") from None
    return lazy, schema


def memory_estimate(files: list[Path]) -> tuple[int, int]:
    """(rows, bytes the whole table would take in pandas), from the row count and a sample of its first rows."""
    import polars as pl

    lazy, _ = _scan(files)
    rows = int(lazy.select(pl.len()).collect(engine="streaming").item())
    head = lazy.head(ESTIMATE_ROWS).collect().to_pandas()
    per_row = head.memory_usage(deep=True, index=False).sum() / max(len(head), 1)
    return rows, int(per_row * rows)


def sample_table(files: list[Path], target: str, *, max_rows: int, holdout_fraction: float, seed: int,
                 holdout_path: Path, na_values: list[str] = ()) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Split the labelled rows into a holdout (each row with probability `holdout_fraction`, written to
    `holdout_path`) and the rest, and return an imbalance-aware sample of the rest of at most about `max_rows` rows,
    with its weights in `PRIOR_WEIGHT`, and a record of what was done (full-table statistics included)."""
    import polars as pl

    lazy, schema = _scan(files)
    if target not in schema:
        raise DataError(f"target column {target!r} not found in {files[0].parent}; columns: "
                        f"{', '.join(list(schema)[:20])}")
    label = pl.col(target).cast(pl.String)
    if schema[target] == pl.Boolean:  # named as pandas names them, and Poise's labels with them: True, False
        label = label.str.to_titlecase()
    # two independent uniform draws per row from a hash of its position: which side of the split, and whether sampled
    lazy = lazy.with_row_index("__row").with_columns(
        (pl.col("__row").hash(seed) % HASH_BUCKETS / HASH_BUCKETS).alias("__split"),
        (pl.col("__row").hash(seed + 1) % HASH_BUCKETS / HASH_BUCKETS).alias("__draw"),
        label.alias("__label"),
    )
    labelled = lazy.filter(pl.col(target).is_not_null())
    counts = labelled.group_by("__label").agg(pl.len().alias("rows")).collect(engine="streaming")
    class_rows = {label: int(rows) for label, rows in sorted(counts.iter_rows())}
    if len(class_rows) < 2:
        raise DataError(f"target column {target!r} has {len(class_rows)} class(es) in {sum(class_rows.values())} "
                        "labelled rows; at least two are needed")
    rows, columns, _ = _column_stats(lazy, [name for name in schema if name != target], na_values=list(na_values))
    named = dict(zip(schema, clean_column_names([str(name) for name in schema], files[0].parent)))
    columns = {named[name]: stats for name, stats in columns.items()}  # by the names the sample's columns get
    helpers = ("__row", "__split", "__draw", "__label")

    holdout_path.parent.mkdir(parents=True, exist_ok=True)
    labelled.filter(pl.col("__split") < holdout_fraction).drop(helpers).sink_parquet(holdout_path)

    train_rows = {label: round(count * (1 - holdout_fraction)) for label, count in class_rows.items()}
    majority = max(train_rows, key=train_rows.get)
    room = max(max_rows - (sum(train_rows.values()) - train_rows[majority]), 1)
    keep = {label: 1.0 for label in train_rows} | {majority: min(1.0, room / max(train_rows[majority], 1))}
    # a when/otherwise, not `replace_strict`: with the row-index columns, Polars 2.1 ran a `replace_strict` filter
    # outside its streaming engine (10M rows x 50 columns: 5.1 GB peak RSS, against 0.8 GB)
    rate = pl.when(pl.col("__label") == majority).then(pl.lit(keep[majority])).otherwise(pl.lit(1.0))
    sample = (labelled.filter(pl.col("__split") >= holdout_fraction)
              .filter(pl.col("__draw") < rate)
              .with_columns((1.0 / rate).alias(PRIOR_WEIGHT))
              .drop("__row", "__split", "__draw")
              .collect(engine="streaming").to_pandas())
    sampled = sample.pop("__label").value_counts().to_dict()
    sample.columns = clean_column_names([str(name) for name in sample.columns], files[0].parent)
    sample = mask_missing(sample, list(na_values))
    record = {
        "files": len(files),
        "rows": rows,
        "unlabelled_rows": rows - sum(class_rows.values()),
        "class_rows": class_rows,
        "holdout_fraction": holdout_fraction,
        "holdout_path": str(holdout_path),
        "sampled_rows": len(sample),
        "sampled_class_rows": {label: int(sampled.get(label, 0)) for label in class_rows},
        "class_sampling_rate": {label: round(rate_, 6) for label, rate_ in keep.items()},
        "weight_column": PRIOR_WEIGHT,
        "columns": columns,
    }
    return sample, record


def window_sample(files: list[Path], rows_wanted: int, seed: int,
                  bins: dict[str, dict[str, Any]] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A drift check's window too big for the memory budget: about `rows_wanted` of its rows, each kept with the
    same probability (a hash of its position, so every class and every part in its share), per column its missing
    and distinct values over every row, and the rows in each of `bins` (by cleaned column name; the semantics of
    `agents.drift.stability.bins`); two streaming passes, the window never in pandas."""
    import polars as pl

    lazy, schema = _scan(files)
    raw = list(schema)
    cleaned = dict(zip(clean_column_names([str(name) for name in raw], files[0].parent), raw))
    wanted = {name: how for name, how in (bins or {}).items() if name in cleaned}
    binned = [(name, _bin_exprs(cleaned[name], how)) for name, how in wanted.items()]
    rows, columns, stats = _column_stats(lazy, raw, [expr for _, exprs in binned for expr in exprs])
    bin_counts = {name: [int(stats[expr.meta.output_name()]) for expr in exprs] for name, exprs in binned}
    rate = min(1.0, rows_wanted / max(rows, 1))
    sample = (lazy.with_row_index("__row")
              .filter(pl.col("__row").hash(seed) % HASH_BUCKETS / HASH_BUCKETS < rate).drop("__row")
              .collect(engine="streaming").to_pandas())
    sample.columns = list(cleaned)
    columns = {name: columns[raw_name] for name, raw_name in cleaned.items()}
    return sample, {"files": len(files), "rows": rows, "sampled_rows": len(sample), "sampling_rate": round(rate, 6),
                    "seed": seed, "columns": columns, "bin_counts": bin_counts}


def _bin_exprs(column: str, how: dict[str, Any]) -> list:
    """Row counts of one column's bins: missing first, then each numeric interval or each level, then "other"."""
    import polars as pl

    tag = f"__bin_{column}_"
    if "edges" in how:
        value = pl.col(column).cast(pl.Float64, strict=False)
        missing = value.is_null() | value.is_nan()
        edges = how["edges"]
        exprs = [missing.sum().alias(tag + "missing")]
        for position in range(len(edges) + 1):
            inside = ~missing
            if position > 0:
                inside = inside & (value > edges[position - 1])
            if position < len(edges):
                inside = inside & (value <= edges[position])
            exprs.append(inside.sum().alias(f"{tag}{position}"))
        return exprs
    text = pl.col(column).cast(pl.Utf8, strict=False)
    known = text.is_in(how["levels"])
    return [text.is_null().sum().alias(tag + "missing"),
            *[(text == level).sum().alias(f"{tag}{position}") for position, level in enumerate(how["levels"])],
            (text.is_not_null() & ~known).sum().alias(tag + "other")]


def _column_stats(lazy, features: list[str], extra: list | None = None,
                  na_values: list[str] = ()) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """The table's rows, per column its missing and (approximately: HyperLogLog) distinct present values, and the
    values of `extra` expressions (by output name), in one streaming pass over every row. A cell equal to one of the
    user's `na_values` counts as missing, as `loading.mask_missing` makes it."""
    import polars as pl

    schema = lazy.collect_schema()
    exprs = [pl.len().alias("__rows")]
    for position, name in enumerate(features):
        value = _masked(pl.col(name), schema[name], na_values)
        exprs += [value.null_count().alias(f"m{position}"), value.approx_n_unique().alias(f"u{position}")]
    stats = lazy.select(exprs + list(extra or [])).collect(engine="streaming").row(0, named=True)
    rows = int(stats["__rows"])
    columns = {}
    for position, name in enumerate(features):
        missing = int(stats[f"m{position}"])
        distinct = int(stats[f"u{position}"]) - (missing > 0)  # HyperLogLog counts the missing value as one
        columns[name] = {"missing": missing, "missing_share": round(missing / max(rows, 1), 6),
                         "approx_distinct": max(0, min(distinct, rows - missing))}
    return rows, columns, stats


def _masked(value, dtype, na_values: list[str]):
    """A column with the user's missing-value tokens as nulls: text equal to a token, numbers equal to a numeric
    token (`loading.mask_missing`'s rule)."""
    import polars as pl

    if not na_values:
        return value
    if dtype in (pl.String, pl.Categorical):
        return pl.when(value.cast(pl.String).is_in(list(na_values))).then(None).otherwise(value)
    numbers = pd.to_numeric(pd.Series(list(na_values), dtype=object), errors="coerce").dropna().unique().tolist()
    if dtype.is_numeric() and numbers:
        return pl.when(value.is_in(numbers)).then(None).otherwise(value)
    return value
