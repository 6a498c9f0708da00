"""Gathering what a drift check judges: the window of live rows (a batch file, a SQL query, or the prediction log
since the last check) with the champion's predictions and any feedback labels, and the labelled rows of earlier
clean windows that join the reference holdout as the performance baseline.

Apart from the graph's nodes because it is data access (files, SQL sources, the Poise database), not a step.
Each window is written under the check's folder and described by a JSON-able dict for the graph state.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pandas as pd

from poise.agents.data_engineering import column_types, large_tables, loading, sql
from poise.agents.deployment.signature import predict_table
from poise.agents.drift import stability
from poise.agents.drift.reference import FEEDBACK_ROWS, PREDICTION_ROWS, sample
from poise.agents.errors import DataError, SpecError
from poise.agents.job_spec import CheckSpec
from poise.pipelines.monitoring.configuration import MonitorContext
from poise.pipelines.training.nodes import write_parquet
from poise.registry import queries, tracking


def _row_keys(features: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """A hash of each row's feature values, the same whichever way the row came in (the log stores numbers
    as JSON floats; a batch file may hold them as integers)."""
    frame = features.reindex(columns=columns)
    frame = frame.apply(lambda c: c.astype("float64") if pd.api.types.is_numeric_dtype(c) and
                        not pd.api.types.is_bool_dtype(c) else c.astype(str))
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def clean_feedback(ctx: MonitorContext, name: str, champion: str, reference_run: str, meta: dict[str, Any],
                   window_features: pd.DataFrame) -> pd.DataFrame | None:
    """The labelled rows of this champion's earlier windows judged clean, against the same reference (most
    recent first, up to `FEEDBACK_ROWS`): the served predictions with the true label in the target column.
    They join the holdout in `agents.drift.reference.labelled_baseline`: what the performance judgement compares
    with, what the prior is estimated from (most needed when the window itself has no labels), what recalibration
    tunes on. Only `no_drift` windows count, so rows the model already did worse on never lower what it is held
    to. Batches overlap (a query over the last 7 days run daily, a file checked twice): a row another window
    already gave is not counted again, and a row of the window being judged never counts (it would be compared
    with itself); repeats within one window are kept, as real tables have them."""
    columns, target = list(meta["features"]), meta["target"]
    with ctx.session() as session:
        checks = queries.clean_checks(session, name, champion, reference_run, besides=ctx.check_id)
    seen = set(_row_keys(window_features, columns).tolist())
    parts, kept = [], 0
    for check_id in checks:
        folder, store = ctx.settings.check_dir(check_id) / "window", ctx.settings.file_store
        if not (store.fetch(folder / "labels.parquet") and store.fetch(folder / "features.parquet")):
            continue
        labels = pd.read_parquet(folder / "labels.parquet")["label"]
        keys = _row_keys(pd.read_parquet(folder / "features.parquet"), columns)
        fresh = labels.notna().to_numpy() & ~pd.Series(keys).isin(seen).to_numpy()
        if not fresh.any():
            continue
        seen.update(keys[fresh].tolist())
        rows = pd.read_parquet(folder / "predictions.parquet")[fresh].assign(**{target: labels[fresh]})
        parts.append(rows.head(FEEDBACK_ROWS - kept))
        kept += len(parts[-1])
        if kept >= FEEDBACK_ROWS:
            break
    return pd.concat(parts, ignore_index=True).astype({target: str}) if parts else None


def _save(ctx: MonitorContext, features: pd.DataFrame, predictions: pd.DataFrame, labels: pd.Series,
          n_rows: int, **info: Any) -> dict[str, Any]:
    folder = ctx.work_dir / "window"
    labels = pd.DataFrame({"label": labels.astype("string").to_numpy()})
    return {"features": str(write_parquet(features.reset_index(drop=True), folder / "features.parquet")),
            "predictions": str(write_parquet(predictions.reset_index(drop=True), folder / "predictions.parquet")),
            "labels": str(write_parquet(labels, folder / "labels.parquet")),
            "n_rows": int(n_rows), "sample_rows": len(features), "n_labelled": int(labels["label"].notna().sum()),
            **info}


def from_batch(ctx: MonitorContext, spec: CheckSpec, champion: str, meta: dict,
               reference: pd.DataFrame) -> dict[str, Any]:
    """The rows of a batch file or SQL query (a sample of `PREDICTION_ROWS` when larger), scored by the champion,
    with their labels when the batch has a label column. A Parquet batch bigger than the memory budget is sampled
    out of core (`large_tables.window_sample`), and the sample recorded with every row's column statistics: missing
    and distinct values, and each feature's stability against the `reference` rows (`agents.drift.stability`)."""
    settings = ctx.settings
    if spec.sql_source is not None:
        url = settings.sql_sources.get(spec.sql_source)
        if url is None:
            raise SpecError(f"unknown SQL source '{spec.sql_source}'; configured: "
                            f"{', '.join(settings.sql_sources) or 'none'}")
        source, where = "sql", ctx.work_dir / "query"
        sql.query_to_parquet(url, spec.sql_query, where, max_rows=settings.table_max_rows, timeout=settings.sql_timeout)
    else:
        source = where = spec.current
    files, record = loading.parquet_files(where), None
    if files and large_tables.memory_estimate(files)[1] > settings.memory_budget_bytes:
        bins = stability.bins(reference, [column for column in meta["features"] if column in reference])
        table, record = large_tables.window_sample(files, PREDICTION_ROWS, settings.seed, bins)
        record["stability"] = stability.stability(reference, bins, record.pop("bin_counts"))
    else:
        table, _ = loading.load_table(where, max_bytes=settings.max_file_bytes)
    if source == "sql":  # read: the query's copy is not kept (nor mirrored)
        shutil.rmtree(where)
    sampled = {"sample": record} if record is not None else {}
    return _scored_window(ctx, spec, champion, meta, table, record["rows"] if sampled else len(table), source=source,
                          **sampled)


def _scored_window(ctx: MonitorContext, spec: CheckSpec, champion: str, meta: dict, table: pd.DataFrame, n_rows: int,
                   **info: Any) -> dict[str, Any]:
    """A batch's rows (a sample of `PREDICTION_ROWS` when more), scored by the champion, with their labels."""
    settings = ctx.settings
    label_column = spec.label_column or meta["target"]
    if spec.label_column and label_column not in table.columns:
        raise DataError(f"label column '{label_column}' is not in the batch")
    missing = [c for c in meta["features"] if c not in table.columns]
    if missing:
        raise DataError(f"the batch lacks the model's feature column(s): {', '.join(map(repr, missing[:10]))}")
    rows = sample(table, PREDICTION_ROWS, settings.seed)
    predictions = predict_table(tracking.load_model(spec.model_name, champion), rows[meta["features"]])
    features = column_types.cast_columns(rows, meta["types"])
    labels = rows[label_column].astype(str).where(rows[label_column].notna()) if label_column in rows else \
        pd.Series([None] * len(rows), dtype="string")
    return _save(ctx, features, predictions, labels, n_rows, **info)


def from_log(ctx: MonitorContext, name: str, types: dict[str, str]) -> dict[str, Any]:
    """The predictions served for `name` since the end of its last finished check (the most recent ones
    when there are more than `PREDICTION_ROWS`), with their feedback labels."""
    with ctx.session() as session:
        since = queries.last_window_end(session, name, besides=ctx.check_id)
        n_rows, end, rows = queries.served_since(session, name, since, PREDICTION_ROWS)
    features = pd.DataFrame([r.inputs for r in rows])
    predictions = pd.DataFrame([r.outputs for r in rows])
    labels = pd.Series([r.feedback_label for r in rows], dtype="string")
    features = column_types.cast_columns(features.reindex(columns=list(types)), types) if rows else features
    return _save(ctx, features, predictions, labels, n_rows, source="prediction log",
                 start=(since.isoformat() if since else (rows[0].created_at.isoformat() if rows else None)),
                 end=end.isoformat() if end else None)
