"""Models: registered versions and aliases, predictions from the champion, feedback, promote/rollback."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Request, Response
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from poise.agents.deployment.fast_scorer import FAST_TREES
from poise.pipelines.access import hide_paths
from poise.pipelines.api.deps import get_db, get_settings, require
from poise.pipelines.api.prediction_log import prediction_log
from poise.pipelines.settings import Settings
from poise.registry import queries, tracking

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
    try:  # a model without champion is raised as NoChampion (409) or, never registered, NotFound (404)
        if warm is not None and warm.scoring.path == FAST_TREES and rows <= INLINE_ROWS:
            # ~2 ms of mostly GIL-bound work: a worker thread would add two wake-ups and no parallelism
            version, output, columns = _serve(server, name, table, records)
        else:  # loading, registry calls, big tables or slower models: off the event loop
            version, output, columns = await asyncio.to_thread(_serve, server, name, table, records)
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


@router.post("/{name}/feedback", response_model=FeedbackOut, summary="Attach true labels to prediction ids")
def feedback(name: str, body: FeedbackIn, request: Request, db: Session = Depends(get_db),
             _=Depends(require("predict"))):
    log = getattr(request.app.state, "prediction_log", None)
    if log is not None:  # predictions answered before this call are stored before it looks for them
        log.flush()
    wanted = {item.prediction_id: item.label for item in body.items}
    found = queries.predictions_of(db, name, wanted)
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
    reason = body.reason.strip() if body.reason else None
    tracking.promote_by_hand(client, name, body.version, reason=reason or None, by=f"api:{key.name}")  # or 404
    request.app.state.model_server.forget(name)
    return AliasOut(name=name, champion=body.version,
                    previous_champion=tracking.alias_version(client, name, tracking.PREVIOUS_CHAMPION))


@router.post("/{name}/rollback", response_model=AliasOut, summary="Restore the previous champion (admin)")
def rollback(name: str, request: Request, settings: Settings = Depends(get_settings), _=Depends(require("admin"))):
    champion, replaced = tracking.rollback(_client(settings), name)  # 409 without a previous champion
    request.app.state.model_server.forget(name)
    return AliasOut(name=name, champion=champion, previous_champion=replaced)
