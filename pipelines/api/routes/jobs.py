"""Jobs: submit (JSON with a path or SQL query, or a multipart upload), list, read, follow, approve, cancel.

Submitted jobs are queued for a worker; the API never trains in its own process. Input
is checked before a job is created — the file loads within the size, row and column
limits, the target exists — so a bad request gets a 4xx naming the problem and leaves
no job behind.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session

from poise.agents.data_engineering.loading import load_table, parquet_files
from poise.agents.data_engineering.sql import query_to_parquet
from poise.agents.errors import Conflict, DataError, TooLargeError
from poise.agents.job_spec import JobOptions
from poise.pipelines import runner
from poise.pipelines.access import DataAccess, hide_paths, shown_path
from poise.pipelines.api.deps import get_db, get_settings, require
from poise.pipelines.job_view import job_report
from poise.pipelines.settings import Settings
from poise.pipelines.worker import request_cancel
from poise.registry import queries
from poise.registry.db import session_scope
from poise.registry.models import Job

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
FINAL = {"succeeded", "failed", "rejected", "cancelled", "interrupted", runner.AWAITING_APPROVAL}


class SqlSource(BaseModel):
    source: str = Field(description="Name of a configured SQL source (POISE_SQL_SOURCES).")
    query: str = Field(min_length=1, max_length=20_000)


class JobRequest(JobOptions):
    data_path: str | None = Field(None, description="A file inside the configured data folder.")
    sql: SqlSource | None = None


class Decision(BaseModel):
    approved: bool = True


class StepOut(BaseModel):
    node: str
    agent: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    message: str | None
    metrics: dict[str, Any] | None


class JobOut(BaseModel):
    id: str
    name: str
    status: str
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any]
    mlflow_run_id: str | None = None
    steps: list[StepOut] = Field(default_factory=list)
    model_version: dict[str, Any] | None = None
    gate: dict[str, Any] | None = Field(None, description=(
        "The quality gate's verdict on the job's version as things stand now: `passed`, `reason`, `explanation`, "
        "the current `champion`, any `promotion` by hand, and `next_steps` (each with `text`, the CLI `command` "
        "and the REST `api` call) when it was refused and nobody promoted it since."))
    plan: list[str] = Field(default_factory=list)
    summary: str | None = None


def _job_out(job: Job, settings: Settings, detail: bool) -> JobOut:
    out = JobOut(id=job.id, name=job.name, status=job.status, error=job.error, created_at=job.created_at,
                 started_at=job.started_at, finished_at=job.finished_at, spec=job.spec,
                 mlflow_run_id=job.mlflow_run_id)
    if detail:
        out.steps = [StepOut.model_validate(step, from_attributes=True) for step in job.steps]
        report = job_report(settings, job)
        out.plan, out.summary = report.plan, report.summary
        if report.version is not None:
            version, out.gate = report.version, report.gate
            out.model_version = {"name": version.registered_name, "version": version.version,
                                 "champion": out.gate["is_champion"],  # now, from the registry's alias
                                 "champion_at_registration": version.champion_at_registration,
                                 "threshold": version.threshold, "gate": version.gate_reason,
                                 "metrics": version.metrics}
    return _as_shown(out, settings)


def _as_shown(out: JobOut, settings: Settings) -> JobOut:
    """The job as an API caller sees it: its file as they would name it (`sub/x.csv` in the data folder,
    `uploads/...`), and no server folder in any message; the stored spec keeps the real path for the worker."""
    view = out.model_dump()
    data = view["spec"].get("data")
    view = hide_paths(view, settings, [Path(data).parent] if data else [])
    if data:
        view["spec"]["data"] = shown_path(data, settings)
    return JobOut.model_validate(view)


def _bad(message: str, status: int = 400) -> HTTPException:
    return HTTPException(status, message)


def _check_table(path: Path, options: JobOptions, settings: Settings) -> None:
    """The table loads (Parquet: its footers are read, not its rows), is within the limits and has the target."""
    rows, columns = _shape(path, options, settings)
    if rows > settings.table_max_rows or len(columns) > settings.table_max_columns:
        raise TooLargeError(f"table has {rows} rows × {len(columns)} columns; the limits are "
                            f"{settings.table_max_rows} rows and {settings.table_max_columns} columns")
    if options.target not in columns:
        from difflib import get_close_matches

        close = get_close_matches(options.target, columns, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise DataError(f"target column '{options.target}' not found{hint}")


def _shape(path: Path, options: JobOptions, settings: Settings) -> tuple[int, list[str]]:
    files = parquet_files(path)
    if not files:
        table, _ = load_table(path, max_bytes=settings.upload_max_bytes, na_values=options.na_values)
        return len(table), [str(column) for column in table.columns]
    import pyarrow.parquet as pq

    rows = 0
    for file in files:
        try:
            rows += pq.ParquetFile(file).metadata.num_rows
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"{file.name}: not a readable Parquet file ({str(error)[:200]})") from None
    return rows, pq.read_schema(files[0]).names


def _create(path: Path, options: JobOptions, settings: Settings) -> JobOut:
    """A queued job on the table at `path`, once it loads within the limits and has the target; a problem is
    raised as its kind (`pipelines.api.errors` answers it) and leaves no job."""
    _check_table(path, options, settings)
    spec = runner.make_spec(path, options.target, settings, **options.model_dump(exclude={"target"}))
    job_id = runner.create_job(spec, settings)
    with session_scope(settings.db_url) as session:
        return _job_out(queries.get_job(session, job_id), settings, detail=False)


def _upload_dir(settings: Settings) -> Path:
    folder = settings.uploads_folder / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def _resolve_data_path(raw: str, settings: Settings) -> Path:
    """The file a remote caller names; a path outside what it may read is a 400, a missing file a 404."""
    return DataAccess.remote(settings).resolve(raw)


def _sql_source_url(sql: SqlSource, settings: Settings) -> str:
    url = settings.sql_sources.get(sql.source)
    if url is None:
        raise _bad(f"unknown SQL source '{sql.source}'; configured: {', '.join(settings.sql_sources) or 'none'}")
    return url


@router.post("", status_code=202, response_model=JobOut, summary="Submit a job (data by path or SQL)")
def submit_job(request: JobRequest, settings: Settings = Depends(get_settings), _=Depends(require("submit"))):
    if (request.data_path is None) == (request.sql is None):
        raise _bad("give exactly one of data_path or sql (or upload a file to /api/v1/jobs/upload)")
    options = JobOptions.model_validate(request.model_dump(exclude={"data_path", "sql"}))
    if request.data_path is not None:
        return _create(_resolve_data_path(request.data_path, settings), options, settings)
    url = _sql_source_url(request.sql, settings)
    folder = _upload_dir(settings)  # the query's rows as Parquet parts, streamed: bounded memory
    try:
        query_to_parquet(url, request.sql.query, folder / "query", max_rows=settings.table_max_rows,
                         timeout=settings.sql_timeout)
        return _create(folder / "query", options, settings)
    except Exception:  # a failed query or a refused table leaves nothing behind
        shutil.rmtree(folder, ignore_errors=True)
        raise


@router.post("/upload", status_code=202, response_model=JobOut, summary="Submit a job with an uploaded table")
async def upload_job(
    file: UploadFile = File(description="CSV, TSV or Parquet"),
    options: str = Form(description="JSON job options, e.g. {\"target\": \"churned\"}"),
    settings: Settings = Depends(get_settings),
    _=Depends(require("submit")),
):
    try:
        parsed = JobOptions.model_validate_json(options)
    except ValidationError as error:
        raise _bad(f"invalid options: {error.errors()[0]['msg']} at {error.errors()[0]['loc']}", 422) from None
    name = Path(file.filename or "upload.csv").name
    if not name.lower().endswith(SUFFIXES):
        raise _bad(f"unsupported file type '{name}'; use {', '.join(SUFFIXES)}", 415)
    folder = _upload_dir(settings)
    path = folder / name
    written = 0
    with path.open("wb") as out:
        while chunk := await file.read(1 << 20):
            written += len(chunk)
            if written > settings.upload_max_bytes:
                out.close()
                shutil.rmtree(folder, ignore_errors=True)
                raise _bad(f"upload larger than {settings.upload_max_bytes} bytes", 413)
            out.write(chunk)
    try:
        return await asyncio.to_thread(_create, path, parsed, settings)
    except Exception:  # a refused upload leaves nothing behind
        shutil.rmtree(folder, ignore_errors=True)
        raise


@router.get("", response_model=list[JobOut], summary="List jobs, newest first")
def list_jobs(status: str | None = Query(None, max_length=30), limit: int = Query(50, ge=1, le=500),
              db: Session = Depends(get_db), settings: Settings = Depends(get_settings), _=Depends(require("read"))):
    return [_job_out(job, settings, detail=False) for job in queries.list_jobs(db, limit, status)]


@router.get("/{job_id}", response_model=JobOut, summary="A job with its steps, plan, metrics and summary")
def get_job(job_id: str, db: Session = Depends(get_db), settings: Settings = Depends(get_settings),
            _=Depends(require("read"))):
    return _job_out(queries.find_job_by_prefix(db, job_id), settings, detail=True)


@router.post("/{job_id}/approve", response_model=JobOut, summary="Approve or reject the plan of a waiting job")
def approve_job(job_id: str, decision: Decision, db: Session = Depends(get_db),
                settings: Settings = Depends(get_settings), key=Depends(require("submit"))):
    job_id = queries.find_job_by_prefix(db, job_id).id
    runner.queue_decision(job_id, decision.approved, settings, by=f"api:{key.name}")  # 409 unless it waits
    db.expire_all()
    return _job_out(queries.get_job(db, job_id), settings, detail=False)


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a queued, waiting or running job")
def cancel_job(job_id: str, db: Session = Depends(get_db), settings: Settings = Depends(get_settings),
               _=Depends(require("submit"))):
    job = queries.find_job_by_prefix(db, job_id)
    if job.status in FINAL - {runner.AWAITING_APPROVAL}:
        raise Conflict(f"job {job_id} is already {job.status}")
    request_cancel(settings.db_url, job.id)
    db.expire_all()
    return _job_out(queries.get_job(db, job.id), settings, detail=False)


@router.get("/{job_id}/events", summary="Server-sent events of step progress until the job stops")
async def job_events(job_id: str, settings: Settings = Depends(get_settings), _=Depends(require("read"))):
    with session_scope(settings.db_url) as session:
        job_id = queries.find_job_by_prefix(session, job_id).id

    def snapshot() -> tuple[str, list[dict[str, Any]]]:
        with session_scope(settings.db_url) as session:
            job, steps = queries.get_job(session, job_id), queries.job_steps(session, job_id)
            return job.status, [{"id": s.id, "node": s.node, "status": s.status, "message": s.message}
                                for s in steps]

    async def stream():
        seen: dict[int, str] = {}
        last_status = None
        for _ in range(7200):  # at most ~1 hour at 0.5 s
            status, steps = await asyncio.to_thread(snapshot)
            for step in steps:
                if seen.get(step["id"]) != step["status"]:
                    seen[step["id"]] = step["status"]
                    yield f"event: step\ndata: {json.dumps(step)}\n\n"
            if status != last_status:
                last_status = status
                yield f"event: status\ndata: {json.dumps({'status': status})}\n\n"
            if status in FINAL:
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream")
