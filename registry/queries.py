"""The queries of Poise's database, by name: every read the CLI, the API routes, the web UI and chat make of jobs,
their steps, drift checks, chat sessions, model versions and predictions (the CRUD layer).

Each function takes an open `Session` (`registry.db.session_scope`, or the API's `get_db` dependency) and leaves
committing to its owner. Lookups by id accept what users type: a full id, or a prefix of one (the CLI shows 12
characters); a prefix that matches several rows is refused with their ids (`AmbiguousId`), never settled by
picking one. The job queue's own claims and heartbeats stay in `pipelines.worker`, beside the locking they need.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import func, insert, or_, select
from sqlalchemy.orm import Session

from poise.agents.errors import AmbiguousId, NotFound
from poise.registry.models import ChatSession, DriftCheck, Job, JobStep, LLMCall, ModelVersion, Prediction

Row = TypeVar("Row", Job, DriftCheck)
AMBIGUOUS_LISTED = 10  # ids an AmbiguousId names at most


def find_by_prefix(session: Session, model: type[Row], key: str, noun: str) -> Row:
    """The row of `model` (a job or a drift check) whose id is `key`, else the only one whose id starts with it.

    Raises `NotFound` when none matches and `AmbiguousId`, naming the matching ids, when several do."""
    row = session.get(model, key) if key else None
    if row is not None:
        return row
    matches = session.scalars(select(model).where(model.id.startswith(key, autoescape=True))
                              .order_by(model.id).limit(AMBIGUOUS_LISTED + 1)).all() if key else []
    if not matches:
        raise NotFound(f"no {noun} matches '{key}'")
    if len(matches) > 1:
        ids = [match.id for match in matches[:AMBIGUOUS_LISTED]]
        more = ", ..." if len(matches) > AMBIGUOUS_LISTED else ""
        raise AmbiguousId(f"'{key}' matches several {noun}s: {', '.join(ids)}{more}; give more of the id", ids)
    return matches[0]


# --- jobs ---------------------------------------------------------------------------------------------------------

def get_job(session: Session, job_id: str) -> Job | None:
    """The job with exactly this id, or None."""
    return session.get(Job, job_id)


def find_job_by_prefix(session: Session, key: str) -> Job:
    """The job `key` names: its id or an unambiguous prefix of it (see `find_by_prefix`)."""
    return find_by_prefix(session, Job, key, "job")


def list_jobs(session: Session, limit: int = 50, status: str | None = None) -> list[Job]:
    """Recent jobs, newest first, optionally only those with `status`."""
    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if status:
        query = query.where(Job.status == status)
    return list(session.scalars(query))


def job_steps(session: Session, job_id: str) -> list[JobStep]:
    """A job's steps in the order they were recorded."""
    return list(session.scalars(select(JobStep).where(JobStep.job_id == job_id).order_by(JobStep.id)))


def session_jobs(session: Session, chat_session_id: str, limit: int = 20) -> list[Job]:
    """The jobs a chat session started, newest first."""
    return list(session.scalars(select(Job).where(Job.spec["session_id"].as_string() == chat_session_id)
                                .order_by(Job.created_at.desc()).limit(limit)))


def job_status_counts(session: Session) -> dict[str, int]:
    """How many jobs are in each status."""
    return {status: count for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status))}


# --- model versions (the job database's record of what MLflow registered) -----------------------------------------

def model_version(session: Session, name: str, version: str) -> ModelVersion | None:
    """The job database's row of a registered version, or None (a version no job of this database registered)."""
    return session.scalar(select(ModelVersion).where(ModelVersion.registered_name == name,
                                                     ModelVersion.version == str(version)))


# --- drift checks -------------------------------------------------------------------------------------------------

def get_check(session: Session, check_id: str) -> DriftCheck | None:
    """The drift check with exactly this id, or None."""
    return session.get(DriftCheck, check_id)


def find_check_by_prefix(session: Session, key: str) -> DriftCheck:
    """The drift check `key` names: its id or an unambiguous prefix of it (see `find_by_prefix`)."""
    return find_by_prefix(session, DriftCheck, key, "drift check")


def list_checks(session: Session, limit: int = 50, model_name: str | None = None) -> list[DriftCheck]:
    """Recent drift checks, newest first, optionally only those of one model."""
    query = select(DriftCheck).order_by(DriftCheck.created_at.desc()).limit(limit)
    if model_name:
        query = query.where(DriftCheck.model_name == model_name)
    return list(session.scalars(query))


def latest_checks(session: Session) -> list[DriftCheck]:
    """Each checked model's most recent drift check."""
    newest = (select(DriftCheck.model_name, func.max(DriftCheck.created_at).label("at"))
              .group_by(DriftCheck.model_name).subquery())
    return list(session.scalars(select(DriftCheck).join(newest, (DriftCheck.model_name == newest.c.model_name)
                                                        & (DriftCheck.created_at == newest.c.at))))


def clean_checks(session: Session, model_name: str, champion: str, reference_run: str, besides: str) -> list[str]:
    """Ids of the finished checks of `champion` against the same reference that found no drift (other than
    `besides`), newest first: the windows whose labelled rows count as clean feedback."""
    return list(session.scalars(
        select(DriftCheck.id).where(
            DriftCheck.model_name == model_name, DriftCheck.champion_version == champion,
            DriftCheck.results["reference_run"].as_string() == reference_run,
            DriftCheck.status == "succeeded", DriftCheck.decision == "no_drift", DriftCheck.id != besides)
        .order_by(DriftCheck.finished_at.desc())))


def last_window_end(session: Session, model_name: str, besides: str):
    """Where the last finished check of `model_name` (other than `besides`) ended its window, or None."""
    return session.scalar(select(func.max(DriftCheck.window_end)).where(
        DriftCheck.model_name == model_name, DriftCheck.status == "succeeded", DriftCheck.id != besides))


# --- chat sessions ------------------------------------------------------------------------------------------------

def get_chat_session(session: Session, chat_session_id: str) -> ChatSession | None:
    """The chat session with this id, or None."""
    return session.get(ChatSession, chat_session_id)


# --- LLM calls ----------------------------------------------------------------------------------------------------

def llm_calls(session: Session, job_id: str, chat_session_id: str | None = None) -> list[LLMCall]:
    """Every LLM call made for a job, and for the chat session that planned it, oldest first."""
    condition = LLMCall.job_id == job_id
    if chat_session_id:
        condition = or_(condition, LLMCall.session_id == chat_session_id)
    return list(session.scalars(select(LLMCall).where(condition).order_by(LLMCall.id)))


# --- predictions --------------------------------------------------------------------------------------------------

def add_predictions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Store served predictions (one bulk INSERT of `predictions` rows as dicts)."""
    session.execute(insert(Prediction), list(rows))


def predictions_of(session: Session, model_name: str, prediction_ids: Iterable[str]) -> list[Prediction]:
    """The predictions of `model_name` among `prediction_ids` (unknown ids, or another model's, are left out)."""
    return list(session.scalars(select(Prediction).where(Prediction.id.in_(list(prediction_ids)),
                                                          Prediction.model_name == model_name)))


def served_since(session: Session, model_name: str, since, limit: int) -> tuple[int, Any, list]:
    """Predictions served for `model_name` after `since` (all when None): how many, when the last was, and the
    `limit` most recent (inputs, outputs, feedback label, time), oldest first."""
    where = [Prediction.model_name == model_name] + ([Prediction.created_at > since] if since else [])
    n_rows, end = session.execute(select(func.count(), func.max(Prediction.created_at)).where(*where)).one()
    rows = session.execute(
        select(Prediction.inputs, Prediction.outputs, Prediction.feedback_label, Prediction.created_at)
        .where(*where).order_by(Prediction.created_at.desc()).limit(limit)).all()
    return n_rows, end, rows[::-1]
