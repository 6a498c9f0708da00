"""The `poise` command as a user runs it: bad input gets a clear error, nothing is half-written,
and a job killed between steps resumes without redoing finished steps."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from registry import tracking
from registry.db import session_scope
from registry.models import Job, JobStep

POISE = [str(Path(sys.executable).parent / "poise")]


def poise(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*POISE, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("make_input", "options", "expected"),
    [
        (lambda tmp, csv: csv, ["--target", "churn"], "target column 'churn' not found; did you mean 'churned'"),
        (lambda tmp, csv: _write(tmp / "one.csv", b"x,y\n" + b"".join(b"%d,a\n" % i for i in range(50))),
         ["--target", "y"], "only one class"),
        (lambda tmp, csv: _write(tmp / "garbage.csv", bytes(range(256)) * 40), ["--target", "y"], "garbage.csv"),
        (lambda tmp, csv: _write(tmp / "empty.csv", b""), ["--target", "y"], "empty"),
        (lambda tmp, csv: tmp / "missing.csv", ["--target", "y"], "missing.csv"),
        (lambda tmp, csv: csv, ["--target", "churned", "--name", "../../etc/passwd"], "invalid job options: name"),
        (lambda tmp, csv: csv, ["--target", "churned", "--objective", "cost"], "needs both cost_fn and cost_fp"),
        (lambda tmp, csv: _write(tmp / "tiny.csv", b"x,y\n" + b"".join(b"%d,%s\n" % (i, b"b" if i < 2 else b"a")
                                                                          for i in range(40))),
         ["--target", "y"], "'b'"),
    ],
    ids=["missing-target", "one-class", "binary-garbage", "empty-file", "no-such-file", "hostile-name",
         "cost-without-costs", "minority-too-small"],
)
def test_bad_input_gets_a_clear_error_and_leaves_nothing_behind(poise_home, tmp_path, churn_csv, make_input,
                                                                 options, expected):
    completed = poise("train", str(make_input(tmp_path, churn_csv)), *options, "--time-limit", "5")

    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "error:" in completed.stderr and expected in " ".join(completed.stderr.split())
    assert "Traceback" not in completed.stderr + completed.stdout
    jobs_folder = poise_home / "jobs"
    assert not jobs_folder.exists() or not any(jobs_folder.iterdir())  # no half-written job files
    settings_db = f"sqlite:///{poise_home / 'poise.db'}"
    if (poise_home / "poise.db").exists():
        with session_scope(settings_db) as session:
            statuses = {job.status for job in session.scalars(select(Job))}
        assert statuses <= {"rejected"}


def test_rejected_job_is_listed_with_its_reason(poise_home, churn_csv):
    assert poise("train", str(churn_csv), "--target", "churn").returncode == 2
    listing = poise("jobs")
    assert listing.returncode == 0
    assert "rejected" in listing.stdout and "customers-churn" in listing.stdout


@pytest.mark.slow
def test_killed_job_resumes_without_retraining_or_duplicate_version(poise_home, settings):
    """`poise demo` (a real KEEL table) is killed while evaluating, then resumed in a new process."""
    process = subprocess.Popen([*POISE, "demo", "--time-limit", "10"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    job_id = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and job_id is None:
            time.sleep(0.2)
            if not (poise_home / "poise.db").exists():
                continue
            with session_scope(settings.db_url) as session:
                job_id = session.scalar(select(JobStep.job_id).where(JobStep.node == "evaluate"))
        assert job_id is not None, "the job never reached the evaluate step"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    with session_scope(settings.db_url) as session:
        assert session.get(Job, job_id).status == "running"  # killed: nobody marked it finished

    resumed = poise("resume", job_id[:10])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "registered version 1" in resumed.stdout

    with session_scope(settings.db_url) as session:
        assert session.get(Job, job_id).status == "succeeded"
        steps = session.scalars(select(JobStep).where(JobStep.job_id == job_id).order_by(JobStep.id)).all()
    runs = [(s.node, s.status) for s in steps]
    assert runs.count(("train", "succeeded")) == 1 and [n for n, _ in runs].count("train") == 1
    assert ("evaluate", "failed") in runs and runs.count(("evaluate", "succeeded")) == 1
    assert runs[-1] == ("report", "succeeded")

    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    versions = client.search_model_versions("name = 'demo-hypothyroid'")
    assert [v.version for v in versions] == [1] or [str(v.version) for v in versions] == ["1"]
    assert len(client.search_runs([client.get_experiment_by_name("demo-hypothyroid").experiment_id])) == 1

    # the champion serves batch predictions for the whole table
    demo_csv = poise_home / "demo" / "hypothyroid.csv"
    out = poise_home / "predictions.csv"
    predicted = poise("predict", "demo-hypothyroid", str(demo_csv), "--out", str(out))
    assert predicted.returncode == 0, predicted.stderr
    predictions = pd.read_csv(out)
    assert len(predictions) == len(pd.read_csv(demo_csv))
    assert set(predictions["predicted_label"]) <= {"hypothyroid", "negative"}
    assert predictions["predicted_proba_hypothyroid"].between(0, 1).all()

    shown = poise("show", job_id[:10])
    assert shown.returncode == 0 and "demo-hypothyroid v1" in shown.stdout


def test_mlflow_ui_serves_the_store_and_stops_with_its_process_group(poise_home):
    import json
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # as from a terminal: SIGINT at its default, whatever an earlier test left ignored in this process
    process = subprocess.Popen([*POISE, "mlflow", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
    answer = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and answer is None:
            time.sleep(1)
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    answer = json.load(response)
            except OSError:
                continue
        assert answer is not None, "MLflow UI did not answer within 120 s"
        assert "experiments" in answer  # the server reads Poise's SQLite store
        assert (poise_home / "mlflow.db").exists()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    time.sleep(1)
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=3)


def test_na_values_option_reaches_the_job_spec(poise_home, settings, churn_csv):
    """Repeatable `--na-values` lands in the job's spec (here a job rejected at profiling: no fit needed)."""
    completed = poise("train", str(churn_csv), "--target", "churn", "--na-values", "?", "--na-values", "none",
                      "--na-values", "-999")
    assert completed.returncode == 2, completed.stdout + completed.stderr
    with session_scope(settings.db_url) as session:
        (spec,) = [job.spec for job in session.scalars(select(Job))]
    assert spec["na_values"] == ["?", "none", "-999"]
