"""Drift-check schedules: kept in the Poise database by APScheduler's SQLAlchemy job store, fired by
`poise scheduler` (which `poise serve` starts).

A firing only queues a check; workers run it. Several schedulers may share one database:
each firing works out the fire time it belongs to, and a check row is unique per (model,
fire time), so when two schedulers fire the same schedule the second insert fails and
that scheduler skips — a scheduled check never runs twice.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import IntegrityError

from poise.agents.errors import SpecError
from poise.pipelines.monitoring.runner import create_check, make_check_spec
from poise.pipelines.settings import Settings
from poise.registry.db import get_engine
from poise.registry.models import SCHEDULER_TABLE

logger = logging.getLogger(__name__)

EVERY = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_EVERY_SECONDS = 10
LOOKBACKS = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=367))


@dataclass
class Schedule:
    model_name: str
    every_seconds: int | None
    cron: str | None
    next_run: datetime | None
    options: dict[str, Any]


def parse_every(text: str) -> int:
    match = EVERY.match(text)
    if not match:
        raise SpecError(f"--every '{text}': give a number and a unit, e.g. 30s, 15m, 1h or 1d")
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds < MIN_EVERY_SECONDS:
        raise SpecError(f"--every '{text}': checks can run at most every {MIN_EVERY_SECONDS} s")
    return seconds


def _trigger(every_seconds: int | None, cron: str | None, start: datetime | None):
    if (every_seconds is None) == (cron is None):
        raise SpecError("give exactly one of --every or --cron")
    if cron is not None:
        try:
            return CronTrigger.from_crontab(cron, timezone=UTC)
        except ValueError as error:
            raise SpecError(f"--cron '{cron}': {error}") from None
    return IntervalTrigger(seconds=every_seconds, start_date=start, timezone=UTC)


def _scheduler(settings: Settings) -> BackgroundScheduler:
    get_engine(settings.db_url)  # the Poise schema first (migrations), APScheduler's table beside it
    store = SQLAlchemyJobStore(url=settings.db_url, tablename=SCHEDULER_TABLE)
    return BackgroundScheduler(jobstores={"default": store}, timezone=UTC,
                               job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 600})


def _job_id(model_name: str) -> str:
    return f"drift-check:{model_name}"


def previous_fire_time(trigger, now: datetime) -> datetime | None:
    """The latest time at or before `now` at which `trigger` fires."""
    for lookback in LOOKBACKS:
        last, fire = None, trigger.get_next_fire_time(None, now - lookback)
        while fire is not None and fire <= now:
            last, fire = fire, trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
        if last is not None:
            return last
    return None


def fire(model_name: str, every_seconds: int | None, cron: str | None, start: str, options: dict[str, Any]) -> None:
    """Queue the check of one firing (called by APScheduler; reads settings from the environment)."""
    settings = Settings()
    slot = previous_fire_time(_trigger(every_seconds, cron, datetime.fromisoformat(start)), datetime.now(UTC))
    try:
        check_id = create_check(make_check_spec(model_name, **options), settings, "schedule", scheduled_for=slot)
    except IntegrityError:
        logger.info("drift check of %s for %s already queued by another scheduler", model_name, slot)
        return
    logger.info("queued drift check %s of %s (scheduled for %s)", check_id, model_name, slot)


def add_schedule(settings: Settings, model_name: str, every: str | None = None, cron: str | None = None,
                 **options: Any) -> Schedule:
    """Create or replace the schedule of `model_name`'s drift checks."""
    make_check_spec(model_name, **options)  # refuse bad options now, not at every firing
    every_seconds = parse_every(every) if every is not None else None
    start = datetime.now(UTC).replace(microsecond=0)
    trigger = _trigger(every_seconds, cron, start)
    scheduler = _scheduler(settings)
    scheduler.start(paused=True)
    try:
        job = scheduler.add_job(fire, trigger, id=_job_id(model_name), name=model_name, replace_existing=True,
                                kwargs={"model_name": model_name, "every_seconds": every_seconds, "cron": cron,
                                        "start": start.isoformat(), "options": options})
        return _schedule(job)
    finally:
        scheduler.shutdown(wait=False)


def _schedule(job) -> Schedule:
    kwargs = job.kwargs
    return Schedule(kwargs["model_name"], kwargs["every_seconds"], kwargs["cron"],
                    getattr(job, "next_run_time", None) or job.trigger.get_next_fire_time(None, datetime.now(UTC)),
                    kwargs["options"])


def list_schedules(settings: Settings) -> list[Schedule]:
    scheduler = _scheduler(settings)
    scheduler.start(paused=True)
    try:
        return [_schedule(job) for job in scheduler.get_jobs()]
    finally:
        scheduler.shutdown(wait=False)


def remove_schedule(settings: Settings, model_name: str) -> bool:
    scheduler = _scheduler(settings)
    scheduler.start(paused=True)
    try:
        if scheduler.get_job(_job_id(model_name)) is None:
            return False
        scheduler.remove_job(_job_id(model_name))
        return True
    finally:
        scheduler.shutdown(wait=False)


def run_scheduler(settings: Settings, stop: threading.Event, rescan_seconds: float = 5.0) -> None:
    """Fire schedules until `stop` is set; the store is re-read every `rescan_seconds` so schedules added
    by other processes (`poise schedule`, the API) are seen."""
    scheduler = _scheduler(settings)
    scheduler.start()
    try:
        while not stop.wait(rescan_seconds):
            scheduler.wakeup()
    finally:
        scheduler.shutdown(wait=True)
