"""Models: registered versions and aliases, predictions from the champion, feedback, promote/rollback."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from fastapi import APIRouter, Body, Depends, HTTPException, Request
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from agents.errors import PoiseError
from pipelines.api.deps import get_db, get_settings, require
from pipelines.settings import Settings
from registry import tracking
from registry.db import session_scope
from registry.models import Prediction

router = APIRouter(prefix="/api/v1/models", tags=["models"])


class VersionOut(BaseModel):
    version: str
    run_id: str | None
    created_at: datetime
    aliases: list[str]
    primary_metric: str | None
    primary_value: float | None


class ModelOut(BaseModel):
    name: str
    champion: str | None
    previous_champion: str | None
    versions: list[VersionOut]


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


class AliasOut(BaseModel):
    name: str
    champion: str
    previous_champion: str | None


def _client(settings: Settings):
    return tracking.configure(settings.tracking_uri, settings.registry_uri)


@router.get("", response_model=list[ModelOut], summary="Registered models with versions and aliases")
def list_models(settings: Settings = Depends(get_settings), _=Depends(require("read"))):
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
        ) for v in model.versions],
    ) for model in tracking.registered_models(_client(settings))]


async def _records(request: Request, settings: Settings) -> pd.DataFrame:
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if "csv" in content_type:
        try:
            table = pd.read_csv(io.BytesIO(body))
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
            raise HTTPException(422, f"unreadable CSV: {str(error).splitlines()[0][:200]}") from None
    else:
        try:
            table = pd.DataFrame(PredictIn.model_validate_json(body).records)
        except ValueError as error:
            raise HTTPException(422, f"expected JSON {{\"records\": [...]}} or text/csv: {str(error)[:300]}") from None
    if len(table) > settings.predict_max_rows:
        raise HTTPException(413, f"{len(table)} rows; at most {settings.predict_max_rows} per request")
    if table.empty:
        raise HTTPException(422, "no rows to predict")
    return table


def _log(settings: Settings, name: str, version: str, table: pd.DataFrame, output: pd.DataFrame) -> list[str]:
    """Store every served row (one bulk INSERT) and return the prediction ids."""
    ids = [uuid.uuid4().hex for _ in range(len(table))]
    inputs = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    outputs = output.to_dict(orient="records")
    now = datetime.now(UTC)
    rows = [{"id": pid, "model_name": name, "model_version": version, "inputs": row_in, "outputs": row_out,
             "created_at": now} for pid, row_in, row_out in zip(ids, inputs, outputs, strict=True)]
    with session_scope(settings.db_url) as session:
        session.execute(insert(Prediction), rows)
    return ids


@router.post(
    "/{name}/predict", response_model=PredictOut, summary="Predict with the champion (JSON records or text/csv)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictIn.model_json_schema()},
        "text/csv": {"schema": {"type": "string"}}}}},
)
async def predict(name: str, request: Request, settings: Settings = Depends(get_settings),
                  _=Depends(require("predict"))):
    table = await _records(request, settings)
    server = request.app.state.model_server
    try:
        version, output = await asyncio.to_thread(server.predict, name, table)
    except PoiseError as problem:
        raise HTTPException(404 if "no champion" in str(problem) else 422, str(problem)) from None
    except MlflowException as error:
        raise HTTPException(404, f"model '{name}' cannot be loaded: {str(error)[:200]}") from None
    ids = await asyncio.to_thread(_log, settings, name, version, table, output)
    proba_columns = [c for c in output.columns if c.startswith("proba_")]
    return PredictOut(model=name, version=version, predictions=[
        PredictionOut(id=pid, label=str(label), probabilities={c.removeprefix("proba_"): float(p) for c, p in
                                                                 zip(proba_columns, row, strict=True)})
        for pid, label, row in zip(ids, output["label"], output[proba_columns].itertuples(index=False), strict=True)])


@router.post("/{name}/feedback", response_model=FeedbackOut, summary="Attach true labels to prediction ids")
def feedback(name: str, body: FeedbackIn, db: Session = Depends(get_db), _=Depends(require("predict"))):
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
            _=Depends(require("admin"))):
    client = _client(settings)
    try:
        client.get_model_version(name, body.version)
    except MlflowException:
        raise HTTPException(404, f"model '{name}' has no version {body.version}") from None
    tracking.promote(client, name, body.version)
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
