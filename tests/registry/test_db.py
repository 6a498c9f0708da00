"""Tests of the job database: migrations, ORM round-trips and constraints, on SQLite and PostgreSQL.

PostgreSQL tests run against a throwaway database created on the local server
(127.0.0.1:5432, trust auth, user `postgres` or else `root`) and dropped afterwards;
they are skipped, with the reason, only when that server cannot be reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from poise.registry.db import (
    alembic_config,
    dispose_engine,
    get_engine,
    run_migrations,
    session_scope,
)
from poise.registry.models import Base, Dataset, DriftCheck, Job, JobStep, ModelVersion

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLES = {"jobs", "job_steps", "datasets", "model_versions", "drift_checks", "alembic_version"}
HOSTILE = "'; DROP TABLE jobs;-- <script>alert(\"x\")</script> \\ \"quoted\" 日本語 ünïcödé 🚀 עברית\n\ttab"


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _versions(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _job(name: str = "job", **kwargs) -> Job:
    return Job(id=uuid.uuid4().hex, name=name, status="queued", spec={"target": "y"}, **kwargs)


def test_migrations_apply_on_fresh_database_and_are_idempotent(db_url: str) -> None:
    engine = get_engine(db_url)
    assert get_engine(db_url) is engine  # cached per URL
    assert TABLES <= set(inspect(engine).get_table_names())
    assert _head() == "0008"
    assert _versions(engine) == [_head()]

    run_migrations(engine)  # second application: nothing to do
    assert _versions(engine) == [_head()]
    dispose_engine(db_url)
    engine = get_engine(db_url)  # a "new process" finding the database at head
    assert _versions(engine) == [_head()]
    assert TABLES <= set(inspect(engine).get_table_names())

    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_models_match_migrations(db_url: str) -> None:
    engine = get_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_round_trip_job_steps_dataset_model_versions(db_url: str) -> None:
    nested = {
        "outer": {"inner": [1, 2.5, None, True, {"deep": HOSTILE}], "empty": {}},
        HOSTILE: "key is hostile too",
        "<script>": "'; DROP TABLE jobs;--",
    }
    t0 = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    job_id = uuid.uuid4().hex
    with session_scope(db_url) as session:
        dataset = Dataset(
            content_hash="a" * 64, source=HOSTILE, n_rows=1000, n_columns=12, profile={"columns": nested}
        )
        job = Job(
            id=job_id,
            name="'; DROP TABLE jobs;--",
            status="running",
            spec={"target": "<script>", "nested": nested},
            error=HOSTILE,
            mlflow_run_id="r" * 32,
            dataset=dataset,
            started_at=t0,
        )
        # Added out of order: the relationship must come back ordered by (started_at, id).
        job.steps.append(
            JobStep(node="train", agent="trainer", status="running", started_at=t0 + timedelta(minutes=5))
        )
        job.steps.append(
            JobStep(
                node="profile",
                agent="profiler",
                status="succeeded",
                started_at=t0,
                finished_at=t0 + timedelta(seconds=30),
                message=HOSTILE,
                metrics=nested,
            )
        )
        job.model_versions.append(
            ModelVersion(
                mlflow_run_id="r" * 32,
                registered_name="poise-<script>",
                version="1",
                metrics={"roc_auc": 0.91, "per_class": nested},
                threshold=0.37,
                gate_reason=HOSTILE,
            )
        )
        job.model_versions.append(
            ModelVersion(mlflow_run_id="s" * 32, registered_name="poise-<script>", version="2", metrics={})
        )
        session.add(job)

    with session_scope(db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.name == "'; DROP TABLE jobs;--"
        assert job.status == "running"
        assert job.spec == {"target": "<script>", "nested": nested}
        assert job.error == HOSTILE
        assert job.mlflow_run_id == "r" * 32
        assert job.started_at == t0 and job.started_at.tzinfo == UTC
        assert job.created_at.tzinfo == UTC
        assert abs(datetime.now(UTC) - job.created_at) < timedelta(minutes=5)
        assert job.finished_at is None

        assert job.dataset is not None
        assert job.dataset.source == HOSTILE
        assert (job.dataset.n_rows, job.dataset.n_columns) == (1000, 12)
        assert job.dataset.profile == {"columns": nested}
        assert job.dataset.created_at.tzinfo == UTC

        assert [s.node for s in job.steps] == ["profile", "train"]
        profile_step, train_step = job.steps
        assert profile_step.metrics == nested
        assert profile_step.message == HOSTILE
        assert profile_step.finished_at - profile_step.started_at == timedelta(seconds=30)
        assert train_step.metrics is None and train_step.message is None and train_step.finished_at is None

        assert [(mv.version, mv.champion_at_registration) for mv in job.model_versions] == [("1", False), ("2", False)]
        first = job.model_versions[0]
        assert first.metrics == {"roc_auc": 0.91, "per_class": nested}
        assert first.threshold == pytest.approx(0.37)
        assert first.gate_reason == HOSTILE
        assert job.model_versions[1].threshold is None

        # SQL NULL (not JSON null) for absent metrics, so IS NULL queries work.
        assert session.scalar(select(func.count()).select_from(JobStep).where(JobStep.metrics.is_(None))) == 1
        # The hostile strings were data, not SQL.
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_drift_checks_are_found_by_the_reference_run_in_their_results(db_url: str) -> None:
    """The monitor finds a champion's earlier clean windows by the reference run their results record."""
    runs = {"a": "run-a", "b": "run-b", "hostile": HOSTILE, "none": None}
    with session_scope(db_url) as session:
        for key, run in runs.items():
            session.add(DriftCheck(id=f"check-{key}", model_name="m", status="succeeded", trigger="cli", spec={},
                                   results=None if run is None else {"reference_run": run, "window": {"n_rows": 1}}))
    with session_scope(db_url) as session:
        for key in ("a", "hostile"):
            found = session.scalars(select(DriftCheck.id).where(
                DriftCheck.results["reference_run"].as_string() == runs[key])).all()
            assert found == [f"check-{key}"]


def test_unique_model_version_rolls_back_and_keeps_earlier_data(db_url: str) -> None:
    job = _job()
    with session_scope(db_url) as session:
        session.add(job)
        session.add(ModelVersion(job_id=job.id, mlflow_run_id="r1", registered_name="m", version="1", metrics={}))

    other_job = _job("other")
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as session:
            session.add(other_job)
            session.add(ModelVersion(job_id=job.id, mlflow_run_id="r1", registered_name="m", version="2", metrics={}))
            session.flush()
            session.add(ModelVersion(job_id=job.id, mlflow_run_id="r2", registered_name="m", version="1", metrics={}))

    with session_scope(db_url) as session:
        rows = session.execute(select(ModelVersion.registered_name, ModelVersion.version, ModelVersion.mlflow_run_id))
        assert rows.all() == [("m", "1", "r1")]
        assert session.get(Job, other_job.id) is None
        assert session.get(Job, job.id) is not None
        # The same version under another registered name is fine.
        session.add(ModelVersion(job_id=job.id, mlflow_run_id="r3", registered_name="n", version="1", metrics={}))


def test_session_scope_rolls_back_on_exception(db_url: str) -> None:
    job = _job()
    with pytest.raises(RuntimeError):
        with session_scope(db_url) as session:
            session.add(job)
            session.flush()
            raise RuntimeError("boom")
    with session_scope(db_url) as session:
        assert session.get(Job, job.id) is None


def test_foreign_keys_and_status_checks_are_enforced(db_url: str) -> None:
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as session:
            session.add(JobStep(job_id="0" * 32, node="n", agent="a", status="running"))
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as session:
            session.add(Job(id=uuid.uuid4().hex, name="x", status="bogus", spec={}))

    job = _job()
    with session_scope(db_url) as session:
        job.steps.append(JobStep(node="n", agent="a", status="running"))
        session.add(job)
    with session_scope(db_url) as session:
        session.delete(session.get(Job, job.id))
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count()).select_from(JobStep)) == 0


CONCURRENT_SCRIPT = """
import sys, time
from sqlalchemy import text
from poise.registry.db import get_engine
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
with get_engine(sys.argv[1]).connect() as conn:
    print(conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all())
"""


def test_concurrent_first_use_by_several_processes(db_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.time() + 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_SCRIPT, db_url, str(start)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert out.strip() == repr([_head()])
    assert _versions(get_engine(db_url)) == [_head()]
