"""Gathering what a drift check judges: the window of live rows (a batch file, a SQL query, or the prediction log
since the last check) with the champion's predictions and any feedback labels, and the labelled rows of earlier
clean windows that join the reference holdout as the performance baseline.

Apart from the graph's nodes because it is data access (files, SQL sources, the Poise database), not a step.
Each window is written under the check's folder and described by a JSON-able dict for the graph state.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from poise.agents.data_engineering import column_types, large_tables, loading, sql
from poise.agents.data_engineering.loading import parquet_chunks, parquet_frame
from poise.agents.deployment.batch import CHUNK_ROWS, loaded_version, mapped_on_cluster
from poise.agents.deployment.signature import predict_table
from poise.agents.drift import stability, whole_window
from poise.agents.drift.reference import FEEDBACK_ROWS, PREDICTION_ROWS, row_keys, sample
from poise.agents.errors import DataError, SpecError
from poise.agents.job_spec import CheckSpec
from poise.pipelines import cluster
from poise.pipelines.monitoring.configuration import MonitorContext
from poise.pipelines.training.nodes import write_parquet
from poise.registry import queries, tracking


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
    seen = set(row_keys(window_features, columns).tolist())
    parts, kept = [], 0
    for check_id in checks:
        folder, store = ctx.settings.check_dir(check_id) / "window", ctx.settings.file_store
        if not (store.fetch(folder / "labels.parquet") and store.fetch(folder / "features.parquet")):
            continue
        labels = pd.read_parquet(folder / "labels.parquet")["label"]
        keys = row_keys(pd.read_parquet(folder / "features.parquet"), columns)
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
    out of core (`large_tables.window_sample`), and the sample recorded with every row's missing and distinct values.
    A batch bigger than its sample is also passed over whole (`_every_row`)."""
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
    try:
        files = loading.parquet_files(where)
        bins = stability.bins(reference, [column for column in meta["features"] if column in reference])
        if files and large_tables.memory_estimate(files)[1] > settings.memory_budget_bytes:
            table, record = large_tables.window_sample(files, PREDICTION_ROWS, settings.seed, bins)
            whole = WholeWindow(bins, record.pop("bin_counts"), files=files)
            return _scored_window(ctx, spec, champion, meta, reference, table, record["rows"], whole, source=source,
                                  sample=record)
        table, _ = loading.load_table(where, max_bytes=settings.max_file_bytes)
        return _scored_window(ctx, spec, champion, meta, reference, table, len(table), WholeWindow(bins),
                              source=source)
    finally:
        if source == "sql":  # read: the query's copy is not kept (nor mirrored)
            shutil.rmtree(where)


@dataclass
class WholeWindow:
    """How to pass over every row of a batch: the stability bins and, for a batch read out of core, their counts
    (made while sampling) and its Parquet files; for a batch in memory, the table itself is passed over."""

    bins: dict[str, dict[str, Any]]
    bin_counts: dict[str, list[int]] | None = None
    files: list[Path] | None = None


def _scored_window(ctx: MonitorContext, spec: CheckSpec, champion: str, meta: dict, reference: pd.DataFrame,
                   table: pd.DataFrame, n_rows: int, whole: WholeWindow, **info: Any) -> dict[str, Any]:
    """A batch's rows (a sample of `PREDICTION_ROWS` when more), scored by the champion, with their labels; and,
    when the batch is more than its sample, what every row gives (`_every_row`)."""
    settings = ctx.settings
    label_column = spec.label_column or meta["target"]
    if spec.label_column and label_column not in table.columns:
        raise DataError(f"label column '{label_column}' is not in the batch")
    missing = [c for c in meta["features"] if c not in table.columns]
    if missing:
        raise DataError(f"the batch lacks the model's feature column(s): {', '.join(map(repr, missing[:10]))}")
    rows = sample(table, PREDICTION_ROWS, settings.seed)
    model = tracking.load_model(spec.model_name, champion)
    predictions = predict_table(model, rows[meta["features"]])
    features = column_types.cast_columns(rows, meta["types"])
    labels = rows[label_column].astype(str).where(rows[label_column].notna()) if label_column in rows else \
        pd.Series([None] * len(rows), dtype="string")
    if n_rows > len(rows):
        info["whole"] = _every_row(ctx, spec.model_name, champion, model, meta, reference, features, table, whole)
    return _save(ctx, features, predictions, labels, n_rows, **info)


def _every_row(ctx: MonitorContext, name: str, champion: str, model, meta: dict, reference: pd.DataFrame,
               sample_features: pd.DataFrame, table: pd.DataFrame, whole: WholeWindow) -> dict[str, Any]:
    """One pass over every row of a batch bigger than its sample (`agents.drift.whole_window`): the champion's
    predicted labels and a domain classifier's scores, `CHUNK_ROWS` rows at a time; as Ray Data tasks when the batch
    is read out of core and a Ray cluster is configured. Plus the columns' stability over every row. `table` is the
    batch when it is in memory; out of core (`whole.files`) it is only the sample, and the files are read instead."""
    settings, started = ctx.settings, time.monotonic()
    features = [column for column in meta["features"] if column in reference]
    scorer = whole_window.fit_domain_scorer(reference, sample_features, features, settings.seed)
    task = {"name": name, "version": champion, "types": meta["types"], "scorer": scorer}
    if whole.files is None:  # a table in memory; its bins are counted here (out of core, while sampling)
        parts = (table.iloc[start:start + CHUNK_ROWS] for start in range(0, len(table), CHUNK_ROWS))
        tallies, where = (_tally(model, part, meta["types"], scorer, whole.bins) for part in parts), "this process"
    elif cluster.connect(settings):
        where = "Ray cluster"
        tallies = (json.loads(text) for block in mapped_on_cluster(settings, whole.files, [], tally_batch, **task)
                   for text in block.column("tally").to_pylist())  # a block may hold several tasks' rows
    else:
        where = "this process"
        tallies = (_tally(model, chunk, meta["types"], scorer) for chunk in parquet_chunks(whole.files, [], CHUNK_ROWS))
    total = whole_window.merged(tallies)
    bin_counts = total.pop("bins", None) or whole.bin_counts
    return {**whole_window.summary(total, scorer), "stability": stability.stability(reference, whole.bins, bin_counts),
            "scored_on": where, "seconds": round(time.monotonic() - started, 1)}


def _tally(model, chunk: pd.DataFrame, types: dict[str, str], scorer, bins: dict | None = None) -> dict[str, Any]:
    """A part's `whole_window.tally`, with its stability bin counts when `bins` are given: counted on the rows cast
    as training cast them, as the reference's were (a CSV's `True` is the reference's "true")."""
    cast = column_types.cast_columns(chunk, types)
    found = whole_window.tally(cast, predict_table(model, chunk[list(types)]), scorer)
    return found | ({"bins": stability.counts(cast, bins)} if bins else {})


def tally_batch(batch, tracking_uri: str, registry_uri: str, source: dict, name: str, version: str,
                types: dict[str, str], scorer) -> Any:
    """A Ray Data task: one Arrow batch of the window read as `parquet_chunks` reads it, as its `tally` (one row of
    JSON: a task returns a table)."""
    import pyarrow as pa

    model = loaded_version(tracking_uri, registry_uri, name, version)
    found = _tally(model, parquet_frame(batch, **source), types, scorer)
    return pa.table({"tally": [json.dumps(found)]})


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
