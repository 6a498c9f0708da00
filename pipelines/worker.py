"""The job worker: runs queued jobs and drift checks, so whoever submits one (API, chat, scheduler) never
trains in its own process.

Several worker processes serve one job database. A worker claims the oldest queued job
atomically — PostgreSQL: `SELECT … FOR UPDATE SKIP LOCKED` then `UPDATE` in one
transaction; SQLite: one conditional `UPDATE … RETURNING`, which holds the write lock
from pick to update — so every job is claimed by exactly one worker, and `attempts`
counts the claims. While it runs the job, a thread refreshes `jobs.heartbeat_at`; a job
still "running" whose heartbeat is older than `stale_after` (its worker died) is queued
again, and the next worker resumes it from its last checkpointed node. On PostgreSQL the
LangGraph checkpoints are in the job database (`pipelines.checkpoints`) and a job's folder
is mirrored to the file store after every step (`registry.file_store`), so that worker may
be on another machine with an empty disk (the same `POISE_HOME` path); on SQLite both stay
in the one shared Poise home. `stale_after` must comfortably exceed `heartbeat_seconds`,
and the workers' clocks must agree (heartbeats are compared across processes).

An approval answer given while nobody runs the job waits in `pending_decision` (the
job is queued again) and is passed to the graph by the worker that picks the job up.
`request_cancel` ends a queued or waiting job at once and asks the process running a
job to stop it after the current step (`runner.run_job` checks `cancel_requested`
after every step event).

Stopping `poise worker`: the first SIGTERM or SIGINT lets the current job run to its
end, then the worker exits; a second signal kills the process at once, and its job is
queued again when its heartbeat goes stale.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import or_, select, update

from poise.agents.errors import NotFound
from poise.pipelines import runner
from poise.pipelines.settings import Settings
from poise.registry.db import session_scope
from poise.registry.models import DriftCheck, Job, JobStep, utcnow

logger = logging.getLogger(__name__)

CANCELLED_AT_ONCE = ("queued", runner.AWAITING_APPROVAL)
Queue = type[Job] | type[DriftCheck]  # tables workers claim from: both have the same claim columns
_NO_SYNC = {"synchronize_session": False}  # bulk statements; nothing is loaded in these sessions


def default_worker_id() -> str:
    """`host:pid:random`, unique per worker process."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_next(db_url: str, worker_id: str, queue: Queue = Job) -> str | None:
    """Claim the oldest queued job (or drift check) for `worker_id` (status "running", attempts + 1); its id."""
    claim = {"status": "running", "worker_id": worker_id, "heartbeat_at": utcnow(), "attempts": queue.attempts + 1}
    oldest = select(queue.id).where(queue.status == "queued").order_by(queue.created_at, queue.id).limit(1)
    with session_scope(db_url) as session:
        if session.get_bind().dialect.name == "sqlite":
            return session.scalar(
                update(queue).where(queue.id == oldest.scalar_subquery(), queue.status == "queued")
                .values(**claim).returning(queue.id).execution_options(**_NO_SYNC))
        item_id = session.scalar(oldest.with_for_update(skip_locked=True))
        if item_id is not None:
            session.execute(update(queue).where(queue.id == item_id).values(**claim).execution_options(**_NO_SYNC))
        return item_id


def requeue_stale(db_url: str, stale_after: float, queue: Queue = Job) -> list[str]:
    """Queue again the running jobs (or checks) whose worker's heartbeat is older than `stale_after` seconds.

    Only those claimed by a worker count: a job run directly by `poise train` has no worker and no heartbeat.
    """
    stale = (queue.status == "running", queue.worker_id.is_not(None),
             or_(queue.heartbeat_at.is_(None), queue.heartbeat_at < utcnow() - timedelta(seconds=stale_after)))
    requeued = {"status": "queued", "worker_id": None, "heartbeat_at": None}
    with session_scope(db_url) as session:
        if session.get_bind().dialect.name == "sqlite":
            item_ids = list(session.scalars(
                update(queue).where(*stale).values(**requeued).returning(queue.id).execution_options(**_NO_SYNC)))
        else:
            item_ids = list(session.scalars(select(queue.id).where(*stale).with_for_update(skip_locked=True)))
            if item_ids:
                session.execute(update(queue).where(queue.id.in_(item_ids)).values(**requeued)
                                .execution_options(**_NO_SYNC))
    for item_id in item_ids:
        logger.warning("%s %s: its worker stopped beating for %ss; queued again", queue.__tablename__, item_id,
                       stale_after)
    return item_ids


@contextmanager
def heartbeat(db_url: str, job_id: str, worker_id: str, every: float, queue: Queue = Job) -> Iterator[None]:
    """While the block runs, a daemon thread sets the item's `heartbeat_at` to now every `every` seconds."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                with session_scope(db_url) as session:
                    session.execute(
                        update(queue).where(queue.id == job_id, queue.worker_id == worker_id,
                                            queue.status == "running")
                        .values(heartbeat_at=utcnow()).execution_options(**_NO_SYNC))
            except Exception:  # the next beat tries again; a long outage makes the job stale, as it should
                logger.warning("job %s: heartbeat failed", job_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"poise-heartbeat-{job_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_claimed(job_id: str, settings: Settings, worker_id: str) -> str:
    """Run (or resume, with its pending approval answer if any) a job this worker claimed; its final status.

    A failure outside the graph's steps (which the runner records itself) marks the job failed
    instead of raising, so `poise resume` can continue it.
    """
    try:
        with session_scope(settings.db_url) as session:
            job = session.get(Job, job_id)
            decision, job.pending_decision = job.pending_decision, None
        return runner.run_job(job_id, settings, resume_value=decision).status
    except Exception as error:
        logger.exception("job %s failed outside its steps", job_id)
        with session_scope(settings.db_url) as session:
            session.execute(
                update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
                .values(status="failed", error=f"{type(error).__name__}: {error}", finished_at=utcnow())
                .execution_options(**_NO_SYNC))
            return session.scalar(select(Job.status).where(Job.id == job_id))


def run_claimed_check(check_id: str, settings: Settings, worker_id: str) -> str:
    """Run (or finish, with its pending approval answer) a drift check this worker claimed; its final status."""
    from poise.pipelines.monitoring.runner import run_check

    try:
        with session_scope(settings.db_url) as session:
            check = session.get(DriftCheck, check_id)
            decision, check.pending_decision = check.pending_decision, None
        return run_check(check_id, settings, resume_value=decision).status
    except Exception as error:
        logger.exception("drift check %s failed outside its steps", check_id)
        with session_scope(settings.db_url) as session:
            session.execute(
                update(DriftCheck).where(DriftCheck.id == check_id, DriftCheck.status == "running")
                .values(status="failed", error=f"{type(error).__name__}: {error}", finished_at=utcnow())
                .execution_options(**_NO_SYNC))
            return session.scalar(select(DriftCheck.status).where(DriftCheck.id == check_id))


def request_cancel(db_url: str, job_id: str) -> str:
    """Cancel a job; returns "cancelled" (queued or waiting for approval: done at once), "cancelling"
    (running: it stops after its current step) or, for a job already finished, its status (left alone).

    Raises NotFound when there is no job `job_id`.
    """
    with session_scope(db_url) as session:
        at_once = session.execute(
            update(Job).where(Job.id == job_id, Job.status.in_(CANCELLED_AT_ONCE))
            .values(status="cancelled", error="cancelled by request", pending_decision=None, finished_at=utcnow())
            .execution_options(**_NO_SYNC))
        if at_once.rowcount:
            session.execute(
                update(JobStep).where(JobStep.job_id == job_id, JobStep.status == "waiting")
                .values(status="failed", message="cancelled", finished_at=utcnow()).execution_options(**_NO_SYNC))
            return "cancelled"
        flagged = session.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                                  .values(cancel_requested=True).execution_options(**_NO_SYNC))
        if flagged.rowcount:
            return "cancelling"
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    if status is None:
        raise NotFound(f"no job '{job_id}'")
    return status


class Worker:
    """Takes queued jobs one at a time and runs each to its end (or to its approval step)."""

    def __init__(self, settings: Settings, worker_id: str | None = None, poll_seconds: float = 1.0,
                 heartbeat_seconds: float = 5.0, stale_after: float = 30.0,
                 on_job: Callable[[str, str], None] | None = None):
        if stale_after <= heartbeat_seconds:
            raise ValueError(f"stale_after ({stale_after}s) must be longer than heartbeat_seconds "
                             f"({heartbeat_seconds}s), or live jobs would be taken from their worker")
        self.settings, self.worker_id = settings, worker_id or default_worker_id()
        self.poll_seconds, self.heartbeat_seconds, self.stale_after = poll_seconds, heartbeat_seconds, stale_after
        self.on_job = on_job or (lambda job_id, status: None)

    def run_once(self) -> str | None:
        """Queue stale work again, claim one job (else one drift check) and run it; its id, or None when
        nothing was queued."""
        db_url = self.settings.db_url
        for queue, run in ((Job, run_claimed), (DriftCheck, run_claimed_check)):
            requeue_stale(db_url, self.stale_after, queue)
            item_id = claim_next(db_url, self.worker_id, queue)
            if item_id is None:
                continue
            logger.info("worker %s claimed %s %s", self.worker_id, queue.__tablename__, item_id)
            with heartbeat(db_url, item_id, self.worker_id, self.heartbeat_seconds, queue):
                status = run(item_id, self.settings, self.worker_id)
            self.on_job(item_id, status)
            return item_id
        return None

    def run_forever(self, stop_event: threading.Event | None = None) -> None:
        """Run jobs until `stop_event` is set (checked between jobs); an unreachable database is retried."""
        stop = stop_event or threading.Event()
        while not stop.is_set():
            try:
                busy = self.run_once() is not None
            except Exception:
                logger.exception("worker %s: could not take a job; retrying", self.worker_id)
                busy = False
            if not busy:
                stop.wait(self.poll_seconds)
