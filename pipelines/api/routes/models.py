"""Models: registered versions and aliases, predictions from the champion, feedback, promote/rollback."""

from __future__ import annotations

import asyncio
import atexit
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Request, Response
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from agents.deployment.fast_scorer import FAST_TREES
from agents.errors import PoiseError
from pipelines.access import hide_paths
from pipelines.api.deps import get_db, get_settings, require
from pipelines.settings import Settings
from registry import tracking
from registry.db import session_scope
from registry.models import Prediction

logger = logging.getLogger(__name__)
INLINE_ROWS = 32  # a warm directly scored champion predicts up to this many rows on the event loop
INLINE_BODY_BYTES = 32 * 1024  # a body up to this size is parsed on the event loop (well under a millisecond)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    log = getattr(app.state, "prediction_log", None)
    if log is not None:  # a clean stop writes every prediction already answered
        await asyncio.to_thread(log.close)


router = APIRouter(prefix="/api/v1/models", tags=["models"], lifespan=_lifespan)


class VersionOut(BaseModel):
    version: str
    run_id: str | None
    created_at: datetime
    aliases: list[str]
    primary_metric: str | None
    primary_value: float | None
    gate: str | None = Field(None, description="The quality gate's verdict when the version was registered.")
    promoted_by: str | None = Field(None, description="Who made it champion by hand (`cli:<user>`, `api:<key>`).")
    promoted_at: str | None = Field(None, description="When (UTC, ISO 8601).")
    promoted_reason: str | None = Field(None, description="Why, as recorded with the promotion.")


class ServingOut(BaseModel):
    version: str = Field(description="The version this API process has loaded (the champion when it was loaded).")
    path: str = Field(description="What computes its predictions: `fast_trees` (Poise's scorer of AutoGluon's bagged "
                                  "trees, checked bit-identical when loaded), `autogluon` (AutoGluon's own "
                                  "`predict_proba`) or `mlflow_pyfunc` (MLflow's pyfunc as it is).")
    fallback: str | None = Field(None, description="Unless `fast_trees`: the kind of reason why not (e.g. "
                                                   "`unsupported_model`, `version_mismatch`, "
                                                   "`private_attribute_missing`, `output_differs`).")
    reason: str | None = Field(None, description="Unless `fast_trees`: the reason in words.")


class ModelOut(BaseModel):
    name: str
    champion: str | None
    previous_champion: str | None
    versions: list[VersionOut]
    serving: ServingOut | None = Field(None, description="How this API process serves the model; null until a "
                                                         "prediction has loaded it.")


class PredictIn(BaseModel):
    records: list[dict[str, Any]] = Field(min_length=1)


class PredictionOut(BaseModel):
    id: str
    label: str
    probabilities: dict[str, float]


class PredictOut(BaseModel):
    model: str
    version: str
    predictions: list[PredictionOut]


class FeedbackItem(BaseModel):
    prediction_id: str = Field(max_length=32)
    label: str = Field(max_length=200)


class FeedbackIn(BaseModel):
    items: list[FeedbackItem] = Field(min_length=1, max_length=100_000)


class FeedbackOut(BaseModel):
    updated: int
    unknown: list[str]


class PromoteIn(BaseModel):
    version: str = Field(pattern=r"^[0-9]{1,10}$")
    reason: str | None = Field(None, min_length=1, max_length=1000, description=(
        "Why this version should serve (e.g. although the quality gate refused it); recorded on the version "
        "as the tag `poise.promoted_reason`, with who and when."))


class AliasOut(BaseModel):
    name: str
    champion: str
    previous_champion: str | None


def _client(settings: Settings):
    return tracking.configure(settings.tracking_uri, settings.registry_uri)


@router.get("", response_model=list[ModelOut], summary="Registered models with versions and aliases")
def list_models(request: Request, settings: Settings = Depends(get_settings), _=Depends(require("read"))):
    serving = request.app.state.model_server.scoring_paths()
    return [ModelOut(
        name=model.name, champion=model.champion, previous_champion=model.previous_champion,
        versions=[VersionOut(
            version=str(v.version), run_id=v.run_id,
            aliases=[alias for alias, target in ((tracking.CHAMPION, model.champion),
                                                 (tracking.PREVIOUS_CHAMPION, model.previous_champion))
                     if target == str(v.version)],
            created_at=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC),
            primary_metric=v.tags.get("poise.primary_metric"),
            primary_value=float(v.tags["poise.primary_value"]) if "poise.primary_value" in v.tags else None,
            gate=v.tags.get("poise.gate"),
            **{f"promoted_{key}": value for key, value in (tracking.promotion_record(v.tags) or {}).items()},
        ) for v in model.versions],
        serving=_serving(settings, *serving[model.name]) if model.name in serving else None,
    ) for model in tracking.registered_models(_client(settings))]


def _serving(settings: Settings, version: str, scoring) -> ServingOut:
    """A loaded model's `ScoringPath` (`agents.deployment.fast_scorer`); a reason quoting an error names no server
    folder."""
    return ServingOut(version=version, path=scoring.path, fallback=scoring.cause,
                      reason=hide_paths(scoring.reason, settings))


async def _records(request: Request, settings: Settings) -> tuple[pd.DataFrame | None, list[dict[str, Any]] | None]:
    """The request's rows: JSON records as sent (strict JSON), else a frame (CSV, or JSON that needed
    Python's reader: its NaN and infinities are not JSON the prediction log could store).

    The body is at most `request_max_bytes` (BodyLimitMiddleware answers 413 before a bigger one is read); one
    over `INLINE_BODY_BYTES` is parsed in a worker thread, so a big CSV does not stall other requests."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if len(body) <= INLINE_BODY_BYTES:
        return _parse(body, content_type, settings)
    return await asyncio.to_thread(_parse, body, content_type, settings)


def _parse(body: bytes, content_type: str, settings: Settings
           ) -> tuple[pd.DataFrame | None, list[dict[str, Any]] | None]:
    table = records = None
    if "csv" in content_type:
        table = _csv_table(body)
    else:
        records, strict = _json_records(body)
        if not strict:
            table, records = pd.DataFrame(records), None
    rows = len(table) if table is not None else len(records)
    if rows > settings.predict_max_rows:
        raise HTTPException(413, f"{rows} rows; at most {settings.predict_max_rows} per request")
    if (table.empty if table is not None else not any(records)):
        raise HTTPException(422, "no rows to predict")
    return table, records


def _csv_table(body: bytes) -> pd.DataFrame:
    """A CSV body as the same frame its rows would give as JSON records: a column whose every value is
    a number is numeric, any other column keeps its text (pandas alone would turn `true`/`false` into
    booleans, which the model then sees as the unknown categories `True`/`False`)."""
    try:
        table = pd.read_csv(io.BytesIO(body), dtype=str)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise HTTPException(422, f"unreadable CSV: {str(error).splitlines()[0][:200]}") from None
    for column in table.columns:
        numbers = pd.to_numeric(table[column], errors="coerce")
        if numbers.notna().sum() == table[column].notna().sum():
            table[column] = numbers
    return table


def _json_records(body: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The `records` of a JSON body `{"records": [{...}, ...]}` (at least one object), and whether the
    body was strict JSON."""
    strict = True
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        strict = False
        try:  # what orjson refuses but Python's JSON reads: NaN, Infinity, numbers beyond float range
            data = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise HTTPException(422, f"expected JSON {{\"records\": [...]}} or text/csv: unreadable JSON: "
                                     f"{str(error)[:200]}") from None
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise HTTPException(422, "expected JSON {\"records\": [...]} or text/csv: `records` must be a non-empty "
                                 "list of objects (column name to value)")
    return records, strict


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


def _log(settings: Settings, name: str, version: str, table: pd.DataFrame, output: pd.DataFrame) -> list[str]:
    """Store every served row now (one bulk INSERT) and return the prediction ids."""
    ids = _new_ids(len(table))
    with session_scope(settings.db_url) as session:
        session.execute(insert(Prediction), _rows(name, version, ids, table, output, datetime.now(UTC)))
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
                    session.execute(insert(Prediction), rows)
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


@router.post(
    "/{name}/predict", response_model=PredictOut, summary="Predict with the champion (JSON records or text/csv)",
    responses={409: {"description": "The model's versions were all registered without becoming champion: "
                                    "`detail` names them and what to do, `versions` and `next_steps` as data"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictIn.model_json_schema()},
        "text/csv": {"schema": {"type": "string"}}}}},
)
async def predict(name: str, request: Request, settings: Settings = Depends(get_settings),
                  _=Depends(require("predict"))):
    table, records = await _records(request, settings)
    rows = len(table) if table is not None else len(records)
    server = request.app.state.model_server
    warm = server.warm(name)
    try:
        if warm is not None and warm.scoring.path == FAST_TREES and rows <= INLINE_ROWS:
            # ~2 ms of mostly GIL-bound work: a worker thread would add two wake-ups and no parallelism
            version, output, columns = _serve(server, name, table, records)
        else:  # loading, registry calls, big tables or slower models: off the event loop
            version, output, columns = await asyncio.to_thread(_serve, server, name, table, records)
    except PoiseError as problem:
        if "no champion" not in str(problem):
            raise HTTPException(422, str(problem)) from None
        return await asyncio.to_thread(_no_champion, settings, name)
    except MlflowException as error:
        raise HTTPException(404, f"model '{name}' cannot be loaded: {str(error)[:200]}") from None
    ids = prediction_log(request.app).add(name, version, table if table is not None else records, output, columns)
    labels = [str(label) for label in output["label"].tolist()]
    proba = [(c.removeprefix("proba_"), output[c].to_numpy(dtype="float64").tolist())
             for c in output.columns if c.startswith("proba_")]
    predictions = [{"id": pid, "label": label, "probabilities": {cls: values[i] for cls, values in proba}}
                   for i, (pid, label) in enumerate(zip(ids, labels, strict=True))]
    return Response(orjson.dumps({"model": name, "version": version, "predictions": predictions}),
                    media_type="application/json")


def _serve(server, name: str, table: pd.DataFrame | None, records: list[dict[str, Any]] | None
           ) -> tuple[str, pd.DataFrame, list[str] | None]:
    """The champion's version, its output for the rows, and its input columns (None for a model without a
    signature): what the prediction log keeps of each row."""
    served = server.model(name)
    output = served.predict(table) if table is not None else served.predict_records(records)
    return served.version, output, served.schema.input_names() if served.schema is not None else None


def _no_champion(settings: Settings, name: str) -> Response:
    """404 for a model that does not exist; 409 for one whose versions are all registered without a champion,
    naming them and the next steps (`detail` says it in words; `versions` and `next_steps` as data)."""
    from agents.summary import no_champion_advice

    advice = no_champion_advice(settings, _client(settings), name)
    if not advice["registered"]:
        raise HTTPException(404, advice["message"])
    return Response(orjson.dumps({"detail": advice["message"], "versions": advice["versions"],
                                  "next_steps": advice["next_steps"]}), status_code=409,
                    media_type="application/json")


@router.post("/{name}/feedback", response_model=FeedbackOut, summary="Attach true labels to prediction ids")
def feedback(name: str, body: FeedbackIn, request: Request, db: Session = Depends(get_db),
             _=Depends(require("predict"))):
    log = getattr(request.app.state, "prediction_log", None)
    if log is not None:  # predictions answered before this call are stored before it looks for them
        log.flush()
    wanted = {item.prediction_id: item.label for item in body.items}
    found = db.scalars(select(Prediction).where(Prediction.id.in_(wanted), Prediction.model_name == name)).all()
    now = datetime.now(UTC)
    for prediction in found:
        prediction.feedback_label, prediction.feedback_at = wanted[prediction.id], now
    db.commit()  # before the response: a client may read the labels back at once
    known = {p.id for p in found}
    return FeedbackOut(updated=len(found), unknown=[pid for pid in wanted if pid not in known])


@router.post("/{name}/promote", response_model=AliasOut, summary="Make a version the champion (admin)")
def promote(name: str, request: Request, body: PromoteIn = Body(...), settings: Settings = Depends(get_settings),
            key=Depends(require("admin"))):
    client = _client(settings)
    try:
        client.get_model_version(name, body.version)
    except MlflowException:
        raise HTTPException(404, f"model '{name}' has no version {body.version}") from None
    reason = body.reason.strip() if body.reason else None
    tracking.promote(client, name, body.version, reason=reason or None, by=f"api:{key.name}")
    request.app.state.model_server.forget(name)
    return AliasOut(name=name, champion=body.version,
                    previous_champion=tracking.alias_version(client, name, tracking.PREVIOUS_CHAMPION))


@router.post("/{name}/rollback", response_model=AliasOut, summary="Restore the previous champion (admin)")
def rollback(name: str, request: Request, settings: Settings = Depends(get_settings), _=Depends(require("admin"))):
    try:
        champion, replaced = tracking.rollback(_client(settings), name)
    except MlflowException as error:
        raise HTTPException(409, str(error.message if hasattr(error, "message") else error)[:300]) from None
    request.app.state.model_server.forget(name)
    return AliasOut(name=name, champion=champion, previous_champion=replaced)
