"""The prediction log: every row the API serves, stored with an id that feedback and drift checks find later.

Written off the request path (`PredictionLog`, one per app: `prediction_log(app)`); of each row only the model's
input columns are kept.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from fastapi import FastAPI

from poise.pipelines.settings import Settings
from poise.registry import queries
from poise.registry.db import session_scope

logger = logging.getLogger(__name__)


def _new_ids(count: int) -> list[str]:
    """`count` random 128-bit ids as 32 hex digits (the `predictions.id` format)."""
    digits = os.urandom(16 * count).hex()
    return [digits[i:i + 32] for i in range(0, 32 * count, 32)]


def _plain_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values, gaps as None (what `to_dict` gives, built column-wise)."""
    columns = []
    for name in table.columns:
        values = table[name]
        items = values.tolist()
        missing = values.isna().to_numpy()
        if missing.any():
            items = [None if gap else item for item, gap in zip(items, missing, strict=True)]
        columns.append(items)
    return [dict(zip(table.columns, row, strict=True)) for row in zip(*columns, strict=True)]


def _model_inputs(table: pd.DataFrame | list[dict[str, Any]], columns: Sequence[str] | None
                  ) -> pd.DataFrame | list[dict[str, Any]]:
    """Only the model's input `columns` of the served rows (all when None): a field the model does not read is
    not stored, whatever a caller sends along."""
    if columns is None:
        return table
    if isinstance(table, list):
        return [{name: row[name] for name in columns if name in row} for row in table]
    wanted = set(columns)
    return table[[name for name in table.columns if name in wanted]]


def _rows(name: str, version: str, ids: list[str], table: pd.DataFrame | list[dict[str, Any]], output: pd.DataFrame,
          created_at: datetime, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    table = _model_inputs(table, columns)
    inputs = table if isinstance(table, list) else _plain_records(table)
    outputs = _plain_records(output)
    return [{"id": pid, "model_name": name, "model_version": version, "inputs": row_in, "outputs": row_out,
             "created_at": created_at} for pid, row_in, row_out in zip(ids, inputs, outputs, strict=True)]


def log_now(settings: Settings, name: str, version: str, table: pd.DataFrame, output: pd.DataFrame) -> list[str]:
    """Store every served row now (one bulk INSERT) and return the prediction ids."""
    ids = _new_ids(len(table))
    with session_scope(settings.db_url) as session:
        queries.add_predictions(session, _rows(name, version, ids, table, output, datetime.now(UTC)))
    return ids


class PredictionLog:
    """The prediction log, written off the request path.

    `add` gives every served row an id and queues it; a background thread stores what is queued
    in bulk INSERTs into `predictions`, at most `max_delay` seconds after it was queued (sooner
    when `max_rows` rows wait or `flush` asks). `flush` returns once everything queued before the
    call is stored, so feedback sent right after a prediction finds it. `close` flushes and stops
    the thread; the API calls it on shutdown, and at interpreter exit it runs anyway. A write that
    still fails after retries is logged and its rows counted as dropped (`on_drop`)."""

    def __init__(self, db_url: str, max_delay: float = 0.25, max_rows: int = 20_000, retries: int = 3,
                 on_drop: Callable[[int], None] | None = None):
        self.db_url, self.max_delay, self.max_rows, self.retries = db_url, max_delay, max_rows, retries
        self.on_drop = on_drop
        self.dropped_rows = 0
        self._cond = threading.Condition()
        self._pending: list[tuple] = []
        self._pending_rows = 0
        self._queued = 0  # requests queued so far
        self._done = 0  # requests written (or dropped) so far
        self._urgent = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="poise-prediction-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def add(self, name: str, version: str, table: pd.DataFrame | list[dict[str, Any]], output: pd.DataFrame,
            columns: Sequence[str] | None = None) -> list[str]:
        """Queue served rows: the inputs as a frame, or as the request's JSON records; of each row only the model's
        input `columns` are stored (all when None), picked in the writer thread."""
        ids = _new_ids(len(table))
        item = (name, version, ids, table, output, datetime.now(UTC), columns)
        with self._cond:
            if not self._closed:
                self._pending.append(item)
                self._pending_rows += len(ids)
                self._queued += 1
                self._urgent = self._urgent or self._pending_rows >= self.max_rows
                self._cond.notify_all()
                return ids
        self._write([item])  # after close (a request finishing during shutdown): store it now
        return ids

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until everything queued so far is stored; False if that took longer than `timeout`."""
        with self._cond:
            target = self._queued
            if self._done >= target:
                return True
            self._urgent = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float = 60.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._queued - self._done

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed, nothing left
                deadline = time.monotonic() + self.max_delay
                while not (self._urgent or self._closed) and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)  # let more requests join this INSERT
                batch, self._pending, self._pending_rows, self._urgent = self._pending, [], 0, False
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._done += len(batch)
                    self._cond.notify_all()

    def _write(self, batch: list[tuple]) -> None:
        error: Exception | None = None
        for attempt in range(self.retries):
            try:
                rows = [row for item in batch for row in _rows(*item)]
                with session_scope(self.db_url) as session:
                    queries.add_predictions(session, rows)
                return
            except Exception as problem:  # noqa: BLE001 - the thread must survive any one bad write
                error = problem
                time.sleep(0.2 * (attempt + 1))
        if len(batch) > 1:  # one bad request must not take the others with it
            for item in batch:
                self._write([item])
            return
        dropped = len(batch[0][2])
        self.dropped_rows += dropped
        logger.error("prediction log: dropped %d row(s) of %s v%s after %d attempts: %s",
                     dropped, batch[0][0], batch[0][1], self.retries, str(error)[:300])
        if self.on_drop is not None:
            self.on_drop(dropped)


_log_lock = threading.Lock()


def prediction_log(app: FastAPI) -> PredictionLog:
    """The app's prediction log, started on first use."""
    log = getattr(app.state, "prediction_log", None)
    if log is None:
        with _log_lock:
            log = getattr(app.state, "prediction_log", None)
            if log is None:
                metrics = getattr(app.state, "metrics", None)
                log = PredictionLog(app.state.settings.db_url,
                                    on_drop=metrics.dropped_predictions.inc if metrics is not None else None)
                app.state.prediction_log = log
    return log
