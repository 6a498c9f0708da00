"""The job worker: each queued job runs exactly once however many workers race for it, a dead
worker's job is taken over and resumed from its checkpoint, and jobs can be cancelled."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from poise.agents.errors import NotFound
from poise.pipelines import runner
from poise.pipelines.graph_runner import StepEvent
from poise.pipelines.settings import Settings
from poise.pipelines.worker import (
    Worker,
    claim_next,
    heartbeat,
    request_cancel,
    requeue_stale,
)
from poise.registry import tracking
from poise.registry.db import session_scope
from poise.registry.models import Job, JobStep, ModelVersion, utcnow

POISE = str(Path(sys.executable).parent / "poise")
UNFINISHED = {"queued", "running"}


class _Output:
    """Collects a subprocess's output lines in a thread, so waiting for one never blocks forever."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(process.stdout), daemon=True)
        self._thread.start()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if text in line]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no line with {text!r} within {timeout}s; got {self.lines}")

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


def _start_worker(*options: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, _Output]:
    process = subprocess.Popen([POISE, "worker", *options], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True,
                               env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
    return process, _Output(process)


def _worker_id(line: str) -> str:
    """The id in the worker's first line, `worker <id> serving <database>`."""
    return line.split("worker ", 1)[1].split()[0]


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.2)


def _rows(db_url: str, job_ids: list[str]) -> dict[str, Job]:
    with session_scope(db_url) as session:
        return {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(job_ids)))}


def _steps(db_url: str, job_id: str) -> list[tuple[str, str]]:
    with session_scope(db_url) as session:
        steps = session.scalars(select(JobStep).where(JobStep.job_id == job_id).order_by(JobStep.id))
        return [(step.node, step.status) for step in steps]


def _queued_rows(db_url: str, count: int) -> list[str]:
    """Jobs as a submitter leaves them (only claimed here, never run): oldest first."""
    t0 = utcnow() - timedelta(minutes=10)
    job_ids = [uuid.uuid4().hex for _ in range(count)]
    with session_scope(db_url) as session:
        session.add_all(Job(id=job_id, name=f"job-{i}", status="queued", spec={}, created_at=t0 + timedelta(seconds=i))
                        for i, job_id in enumerate(job_ids))
    return job_ids


def test_two_worker_processes_run_each_job_exactly_once_on_postgresql(tmp_path, poise_home, postgres_url):
    settings = Settings(home=poise_home, database_url=postgres_url)
    data = tmp_path / "tiny.csv"  # its target is missing: each job is rejected right after load and profile
    data.write_text("x,y\n" + "".join(f"{i},{'b' if i % 4 == 0 else 'a'}\n" for i in range(40)))
    env = {"POISE_DATABASE_URL": postgres_url, "POISE_HOME": str(poise_home)}
    workers = [_start_worker("--poll-seconds", "0.2", env=env) for _ in range(2)]
    try:
        worker_ids = {_worker_id(output.wait_for(" serving ", 90)) for _, output in workers}
        job_ids = [runner.create_job(runner.make_spec(data, "label", settings, name=f"race-{i}"), settings)
                   for i in range(10)]
        _wait_until(lambda: not {job.status for job in _rows(postgres_url, job_ids).values()} & UNFINISHED,
                    60, "all jobs finished")
    finally:
        for process, _ in workers:
            _stop(process)  # SIGTERM: each worker is idle by now and exits at once
    outputs = [output.text() for _, output in workers]
    assert [process.returncode for process, _ in workers] == [0, 0], outputs

    jobs = _rows(postgres_url, job_ids)
    assert {job.status for job in jobs.values()} == {"rejected"}, {job.status: job.error for job in jobs.values()}
    assert {job.attempts for job in jobs.values()} == {1}
    assert {job.worker_id for job in jobs.values()} == worker_ids  # both workers took part
    with session_scope(postgres_url) as session:
        loads = dict(session.execute(select(JobStep.job_id, func.count()).where(JobStep.node == "load")
                                     .group_by(JobStep.job_id)).all())
    assert loads == dict.fromkeys(job_ids, 1)
    reported = [line.split()[1] for text in outputs for line in text.splitlines() if line.startswith("job ")]
    assert sorted(reported) == sorted(job_ids), outputs  # one line per job, from the worker that ran it
    assert all(f"job {job_id} rejected" in "".join(outputs) for job_id in job_ids)


def test_racing_claims_on_one_sqlite_file_take_each_job_once(settings):
    job_ids = _queued_rows(settings.db_url, 10)
    start = threading.Barrier(4)
    claimed: dict[str, list[str]] = {f"w{i}": [] for i in range(4)}

    def claim_all(worker_id: str) -> None:
        start.wait()
        while (job_id := claim_next(settings.db_url, worker_id)) is not None:
            claimed[worker_id].append(job_id)

    threads = [threading.Thread(target=claim_all, args=(worker_id,)) for worker_id in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sorted(j for ids in claimed.values() for j in ids) == sorted(job_ids)
    jobs = _rows(settings.db_url, job_ids)
    assert all(jobs[j].worker_id == w and jobs[j].status == "running" for w, ids in claimed.items() for j in ids)
    assert {job.attempts for job in jobs.values()} == {1}
    assert claim_next(settings.db_url, "late") is None


def test_stale_job_is_queued_again_and_claimed_with_a_second_attempt(db_url):
    dead_workers_job, live_workers_job = _queued_rows(db_url, 2)
    with session_scope(db_url) as session:  # run by `poise train`: no worker, no heartbeat, never requeued
        session.add(Job(id=uuid.uuid4().hex, name="direct", status="running", spec={}))
    assert claim_next(db_url, "w1") == dead_workers_job  # oldest first
    assert claim_next(db_url, "w2") == live_workers_job
    with session_scope(db_url) as session:
        session.execute(update(Job).where(Job.id == dead_workers_job).values(heartbeat_at=utcnow() - timedelta(seconds=60)))
        before = session.get(Job, live_workers_job).heartbeat_at

    with heartbeat(db_url, live_workers_job, "w2", every=0.05), heartbeat(db_url, dead_workers_job, "w2", every=0.05):
        time.sleep(0.5)
    jobs = _rows(db_url, [dead_workers_job, live_workers_job])
    assert jobs[live_workers_job].heartbeat_at > before
    assert jobs[dead_workers_job].heartbeat_at < utcnow() - timedelta(seconds=59)  # another worker's job: untouched

    assert requeue_stale(db_url, stale_after=30) == [dead_workers_job]
    job = _rows(db_url, [dead_workers_job])[dead_workers_job]
    assert (job.status, job.worker_id, job.attempts) == ("queued", None, 1)
    assert claim_next(db_url, "w3") == dead_workers_job
    job = _rows(db_url, [dead_workers_job])[dead_workers_job]
    assert (job.status, job.worker_id, job.attempts) == ("running", "w3", 2)
    assert requeue_stale(db_url, stale_after=30) == []


def test_cancel_queued_waiting_and_finished_jobs(settings, churn_csv):
    queued = runner.create_job(runner.make_spec(churn_csv, "churned", settings, name="queued"), settings)
    waiting = runner.run_spec(runner.make_spec(churn_csv, "churned", settings, name="waiting", require_approval=True),
                              settings)
    assert waiting.status == runner.AWAITING_APPROVAL

    assert request_cancel(settings.db_url, queued) == "cancelled"
    assert request_cancel(settings.db_url, waiting.job_id) == "cancelled"
    jobs = _rows(settings.db_url, [queued, waiting.job_id])
    assert {(job.status, job.error) for job in jobs.values()} == {("cancelled", "cancelled by request")}
    assert all(job.finished_at is not None and job.pending_decision is None for job in jobs.values())
    assert _steps(settings.db_url, waiting.job_id)[-1] == ("approve", "failed")  # no longer shown as waiting
    assert claim_next(settings.db_url, "w") is None  # nothing left for a worker
    assert request_cancel(settings.db_url, queued) == "cancelled"  # finished: left alone, status returned
    with pytest.raises(NotFound, match="no job"):
        request_cancel(settings.db_url, "0" * 32)


def test_running_job_stops_after_the_step_during_which_cancel_was_requested(settings, churn_csv):
    job_id = runner.create_job(runner.make_spec(churn_csv, "churned", settings, name="cancel-me"), settings)
    assert claim_next(settings.db_url, "w") == job_id
    answers = []

    def cancel_while_profiling(event: StepEvent) -> None:
        if (event.node, event.status) == ("profile", "running"):
            answers.append(request_cancel(settings.db_url, job_id))

    result = runner.run_job(job_id, settings, cancel_while_profiling)

    assert answers == ["cancelling"]
    assert (result.status, result.error) == ("cancelled", "cancelled by request")
    assert _rows(settings.db_url, [job_id])[job_id].status == "cancelled"
    assert _steps(settings.db_url, job_id) == [("load", "succeeded"), ("profile", "failed")]
    with session_scope(settings.db_url) as session:
        assert session.scalar(select(JobStep.message).where(JobStep.node == "profile")) == "cancelled"


def test_worker_resumes_a_waiting_job_with_its_queued_answer(settings, churn_csv):
    waiting = runner.run_spec(runner.make_spec(churn_csv, "churned", settings, name="answer", require_approval=True),
                              settings)
    with session_scope(settings.db_url) as session:  # what an answer given through the API leaves behind
        job = session.get(Job, waiting.job_id)
        job.status, job.pending_decision = "queued", {"approved": False, "by": "api:tester"}
    finished = []
    worker = Worker(settings, heartbeat_seconds=0.2, stale_after=5, on_job=lambda *done: finished.append(done))

    assert worker.run_once() == waiting.job_id
    assert finished == [(waiting.job_id, "cancelled")]  # the rejection reached the graph
    job = _rows(settings.db_url, [waiting.job_id])[waiting.job_id]
    assert (job.status, job.pending_decision, job.attempts, job.worker_id) == ("cancelled", None, 1, worker.worker_id)
    assert _steps(settings.db_url, waiting.job_id)[-2:] == [("approve", "succeeded"), ("approve", "failed")]
    assert worker.run_once() is None


def test_a_step_that_finished_while_its_record_could_not_be_written_is_recorded_as_finished(settings, churn_csv):
    """A database outage right after a node finished leaves its row `running`; resuming reads the checkpoint, so
    the step is recorded as finished (not `interrupted`) and does not run again (found by benchmarks/faults.py)."""
    waiting = runner.run_spec(runner.make_spec(churn_csv, "churned", settings, name="outage", require_approval=True),
                              settings)
    with session_scope(settings.db_url) as session:
        profile = session.scalar(select(JobStep).where(JobStep.job_id == waiting.job_id, JobStep.node == "profile"))
        profile.status, profile.finished_at, profile.message = "running", None, None  # the write that never came
    runner.decide(waiting.job_id, False, settings)

    steps = _steps(settings.db_url, waiting.job_id)
    assert [node for node, _ in steps].count("profile") == 1 and ("profile", "succeeded") in steps
    with session_scope(settings.db_url) as session:
        message = session.scalar(select(JobStep.message).where(JobStep.job_id == waiting.job_id,
                                                               JobStep.node == "profile"))
    assert "from the checkpoint" in message


@pytest.mark.slow
def test_job_of_a_killed_worker_is_taken_over_and_resumed_from_its_checkpoint(poise_home, settings, churn_csv):
    job_id = runner.create_job(runner.make_spec(churn_csv, "churned", settings, name="takeover", time_limit=10),
                               settings)
    process, output = _start_worker("--poll-seconds", "0.2", "--heartbeat-seconds", "0.5", "--stale-after", "2")
    try:
        def evaluating() -> bool:
            return ("evaluate", "running") in _steps(settings.db_url, job_id)

        first_worker = _worker_id(output.wait_for(" serving ", 90))
        _wait_until(evaluating, 240, "the first worker reached the evaluate step")
    finally:
        _stop(process, signal.SIGKILL)
    job = _rows(settings.db_url, [job_id])[job_id]
    assert (job.status, job.worker_id, job.attempts) == ("running", first_worker, 1)  # dead, still claimed
    _wait_until(lambda: _rows(settings.db_url, [job_id])[job_id].heartbeat_at < utcnow() - timedelta(seconds=2.5),
                10, "the heartbeat went stale")

    second = subprocess.run([POISE, "worker", "--once", "--heartbeat-seconds", "0.5", "--stale-after", "2"],
                            check=False, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"job {job_id} succeeded" in second.stdout

    job = _rows(settings.db_url, [job_id])[job_id]
    assert job.status == "succeeded" and job.attempts == 2 and job.worker_id not in (None, first_worker)
    runs = _steps(settings.db_url, job_id)
    assert runs.count(("train", "succeeded")) == 1 and [node for node, _ in runs].count("train") == 1
    assert ("evaluate", "failed") in runs and runs.count(("evaluate", "succeeded")) == 1
    assert runs[-1] == ("report", "succeeded")
    with session_scope(settings.db_url) as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    assert [str(v.version) for v in client.search_model_versions("name = 'takeover'")] == ["1"]


@pytest.fixture
def mlflow_server(tmp_path, free_port):
    """A real MLflow tracking server proxying artifacts, as docker/compose.yaml runs it, on 127.0.0.1."""
    store = tmp_path / "mlflow-server"
    store.mkdir()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(free_port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--serve-artifacts",
         "--artifacts-destination", str(store / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{free_port}"

    def healthy() -> bool:
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            assert process.poll() is None, "the MLflow server exited"
            return False

    try:
        _wait_until(healthy, 120, "the MLflow server answered")
        yield url, store / "artifacts"
    finally:
        _stop(process)


@pytest.mark.slow
def test_a_job_moves_between_machines_with_no_shared_disk(tmp_path, postgres_url, mlflow_server, churn_csv,
                                                           monkeypatch):
    """API, first worker and second worker each see an empty Poise home (one path, wiped between them, as on three
    machines): the upload, the job's files and its checkpoints reach the next one through PostgreSQL and the MLflow
    server's artifact proxy alone."""
    url, artifacts = mlflow_server
    home = tmp_path / "home"
    for name, value in {"POISE_HOME": str(home), "POISE_DATABASE_URL": postgres_url, "POISE_MLFLOW_TRACKING_URI": url,
                        "POISE_MLFLOW_REGISTRY_URI": url, "POISE_MLFLOW_ARTIFACT_ROOT": "mlflow-artifacts:/poise"
                        }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    upload = settings.uploads_folder / "u1" / "churn.csv"  # as the API writes an upload
    upload.parent.mkdir(parents=True)
    upload.write_bytes(churn_csv.read_bytes())
    job_id = runner.create_job(runner.make_spec(upload, "churned", settings, name="no-shared-disk", time_limit=10),
                               settings)
    shutil.rmtree(home)  # the API's machine

    process, output = _start_worker("--poll-seconds", "0.2", "--heartbeat-seconds", "0.5", "--stale-after", "2")
    try:
        first_worker = _worker_id(output.wait_for(" serving ", 90))
        _wait_until(lambda: ("evaluate", "running") in _steps(postgres_url, job_id), 240,
                    "the first worker reached the evaluate step")
    finally:
        _stop(process, signal.SIGKILL)
    assert (settings.job_dir(job_id) / "autogluon").is_dir()  # the first worker's disk held the fit ...
    assert not settings.checkpoint_path.exists()  # ... but not the checkpoints: those are in PostgreSQL
    shutil.rmtree(home)  # ... and is gone with its machine
    _wait_until(lambda: _rows(postgres_url, [job_id])[job_id].heartbeat_at < utcnow() - timedelta(seconds=2.5),
                10, "the heartbeat went stale")

    second = subprocess.run([POISE, "worker", "--once", "--heartbeat-seconds", "0.5", "--stale-after", "2"],
                            check=False, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"job {job_id} succeeded" in second.stdout
    job = _rows(postgres_url, [job_id])[job_id]
    assert job.status == "succeeded" and job.attempts == 2 and job.worker_id not in (None, first_worker)
    runs = _steps(postgres_url, job_id)
    assert runs.count(("train", "succeeded")) == 1 and [node for node, _ in runs].count("train") == 1  # not refitted
    with session_scope(postgres_url) as session:
        note = session.scalar(select(JobStep.message).where(JobStep.job_id == job_id, JobStep.node == "evaluate",
                                                            JobStep.status == "failed"))
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1
    assert "resumed on another worker from the checkpoint, with" in note and "restored from the file store" in note
    client = tracking.configure(url, url)
    assert [str(v.version) for v in client.search_model_versions("name = 'no-shared-disk'")] == ["1"]

    mirrored = artifacts / "poise" / "poise-home"
    assert (mirrored / "uploads" / "u1" / "churn.csv").read_bytes() == churn_csv.read_bytes()
    assert (mirrored / "jobs" / job_id / "report.md").is_file()
    shutil.rmtree(home)  # a reader on a fourth machine (the web UI) still gets the job's plots
    assert Settings().file_store.fetch(settings.job_dir(job_id) / "plots" / "pr_curve.png")
