"""Drift checks: list a model's checks, queue one (a worker runs it), read one and its Evidently report,
answer a check waiting to promote."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from poise.agents.job_spec import MODEL_NAME_PATTERN, CheckOptions
from poise.pipelines.access import hide_paths
from poise.pipelines.api.deps import get_db, get_settings, require
from poise.pipelines.api.routes.jobs import Decision, SqlSource, _resolve_data_path
from poise.pipelines.monitoring.runner import create_check, make_check_spec, queue_check_decision
from poise.pipelines.settings import Settings
from poise.registry import queries
from poise.registry.models import DriftCheck

router = APIRouter(prefix="/api/v1", tags=["drift checks"])


class CheckRequest(CheckOptions):
    data_path: str | None = Field(None, description="A batch file inside the data folder; default the "
                                  "predictions served since the last check.")
    sql: SqlSource | None = None


class CheckOut(BaseModel):
    id: str
    model_name: str
    status: str
    trigger: str
    created_at: datetime
    finished_at: datetime | None
    scheduled_for: datetime | None
    champion_version: str | None
    n_rows: int | None
    decision: str | None
    reason: str | None
    challenger_version: str | None
    promoted: bool
    retrain_job_id: str | None
    mlflow_run_id: str | None
    error: str | None
    results: dict[str, Any] | None = None


def _out(check: DriftCheck, detail: bool, settings: Settings) -> CheckOut:
    """The check as an API caller sees it: no server folder in its results or messages."""
    out = CheckOut.model_validate(check, from_attributes=True)
    if not detail:
        out.results = None
    return CheckOut.model_validate(hide_paths(out.model_dump(), settings))


def _model_name(name: str) -> str:
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise HTTPException(422, "model names use letters, digits, '.', '_' or '-'")
    return name


@router.get("/models/{name}/checks", response_model=list[CheckOut], summary="A model's drift checks, newest first")
def list_checks(name: str, limit: int = 50, db: Session = Depends(get_db), settings: Settings = Depends(get_settings),
                _=Depends(require("read"))):
    return [_out(c, detail=False, settings=settings)
            for c in queries.list_checks(db, max(1, min(limit, 500)), model_name=_model_name(name))]


@router.post("/models/{name}/checks", status_code=202, response_model=CheckOut, summary="Queue a drift check")
def submit_check(name: str, request: CheckRequest, settings: Settings = Depends(get_settings),
                 db: Session = Depends(get_db), _=Depends(require("submit"))):
    if request.data_path is not None and request.sql is not None:
        raise HTTPException(400, "give at most one of data_path or sql")
    current = str(_resolve_data_path(request.data_path, settings)) if request.data_path else None
    if request.sql is not None and request.sql.source not in settings.sql_sources:
        raise HTTPException(400, f"unknown SQL source '{request.sql.source}'; configured: "
                                 f"{', '.join(settings.sql_sources) or 'none'}")
    spec = make_check_spec(
        _model_name(name), current=current, sql_source=request.sql.source if request.sql else None,
        sql_query=request.sql.query if request.sql else None,
        **request.model_dump(include=set(CheckOptions.model_fields)))
    return _out(queries.get_check(db, create_check(spec, settings, "api")), detail=False, settings=settings)


@router.get("/checks/{check_id}", response_model=CheckOut, summary="One drift check with its analysis")
def get_check(check_id: str, db: Session = Depends(get_db), settings: Settings = Depends(get_settings),
              _=Depends(require("read"))):
    return _out(queries.find_check_by_prefix(db, check_id), detail=True, settings=settings)


@router.get("/checks/{check_id}/report", response_class=FileResponse, summary="The check's Evidently HTML report")
def check_report(check_id: str, settings: Settings = Depends(get_settings), db: Session = Depends(get_db),
                 _=Depends(require("read"))):
    check = queries.find_check_by_prefix(db, check_id)
    path = settings.check_dir(check.id) / "drift_report.html"
    settings.file_store.fetch(path)  # written by the worker that ran the check, maybe on another machine
    if not path.is_file():
        raise HTTPException(404, f"drift check {check.id[:12]} has no report ({check.status})")
    return FileResponse(path, media_type="text/html")


@router.post("/checks/{check_id}/approve", response_model=CheckOut,
             summary="Approve or reject the promotion a check waits for (a worker finishes it)")
def approve_check(check_id: str, body: Decision, settings: Settings = Depends(get_settings),
                  db: Session = Depends(get_db), key=Depends(require("admin"))):
    check_id = queries.find_check_by_prefix(db, check_id).id
    queue_check_decision(check_id, body.approved, settings, by=f"api:{key.name}")  # 409 unless it waits
    db.expire_all()
    return _out(queries.get_check(db, check_id), detail=False, settings=settings)
