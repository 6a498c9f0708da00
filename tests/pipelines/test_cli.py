"""The `poise` command as a user runs it: bad input gets a clear error, nothing is half-written,
and a job killed between steps resumes without redoing finished steps."""

import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from poise.registry import tracking
from poise.registry.db import session_scope
from poise.registry.models import Job, JobStep, ModelVersion

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
    assert "serving path: " in shown.stdout  # fast_trees, or autogluon with the reason why not


def test_mlflow_ui_serves_the_store_read_only_and_stops_with_its_process_group(poise_home, settings):
    import json
    import socket
    import urllib.request

    import httpx

    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    client.create_registered_model("guarded")
    for _ in range(2):
        client.create_model_version("guarded", source=str(poise_home))
    client.set_registered_model_alias("guarded", tracking.CHAMPION, "1")

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
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        moved = httpx.post(f"{base}/registered-models/alias", json={"name": "guarded", "alias": "champion",
                                                                     "version": "2"}, timeout=30)
        dropped = httpx.request("DELETE", f"{base}/registered-models/alias", json={"name": "guarded",
                                                                                   "alias": "champion"}, timeout=30)
        created = httpx.post(f"{base}/registered-models/create", json={"name": "planted"}, timeout=30)
        assert [r.status_code >= 400 for r in (moved, dropped, created)] == [True] * 3, (moved.text, created.text)
        assert "readonly" in moved.text
        assert str(client.get_model_version_by_alias("guarded", tracking.CHAMPION).version) == "1"
        assert [m.name for m in client.search_registered_models()] == ["guarded"]
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


def test_label_noise_option_reaches_the_job_spec_and_a_wrong_value_is_refused(poise_home, settings, churn_csv):
    completed = poise("train", str(churn_csv), "--target", "churn", "--label-noise", "downweight")
    assert completed.returncode == 2, completed.stdout + completed.stderr  # rejected at profiling: no fit needed
    with session_scope(settings.db_url) as session:
        (spec,) = [job.spec for job in session.scalars(select(Job))]
    assert spec["label_noise"] == "downweight"
    wrong = poise("train", str(churn_csv), "--target", "churned", "--label-noise", "ignore")
    assert wrong.returncode == 2 and "label-noise" in wrong.stdout + wrong.stderr


@pytest.mark.slow
def test_a_refused_gate_says_why_and_what_to_do_and_a_promotion_records_its_reason(poise_home, settings, tmp_path,
                                                                                        noise_table):
    data = tmp_path / "noise.csv"
    noise_table().to_csv(data, index=False)
    trained = poise("train", str(data), "--target", "outcome", "--name", "noisy", "--objective", "cost",
                    "--cost-fn", "1", "--cost-fp", "50", "--time-limit", "10")
    assert trained.returncode == 0, trained.stdout + trained.stderr

    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    with session_scope(settings.db_url) as session:
        version = session.scalar(select(ModelVersion).where(ModelVersion.registered_name == "noisy"))
        job_id, promoted, gate = version.job_id, version.champion_at_registration, version.gate_reason
    assert not promoted and "does not beat the majority baseline" in gate, gate  # the gate really refused
    assert tracking.champion_version(client, "noisy") is None

    steps = [
        shlex.join(["poise", "train", str(data), "--target", "outcome", "--name", "noisy", "--objective",
                    "balanced_accuracy", "--time-limit", "10"]),
        shlex.join(["poise", "train", str(data), "--target", "outcome", "--name", "noisy", "--objective", "cost",
                    "--cost-fn", "1", "--cost-fp", "50", "--time-limit", "30"]),
        "poise predict noisy NEW_DATA.csv --out predictions.csv --version 1",
        "poise promote noisy 1 --reason '<why v1 should serve although the gate refused it>'",
    ]
    explained = "No version of 'noisy' is champion, so `poise predict noisy`"
    assert "refused: expected_cost" in " ".join(trained.stdout.split())
    assert explained in trained.stdout and "Next steps:" in trained.stdout
    assert all(step in trained.stdout for step in steps), trained.stdout  # whole lines, ready to copy

    shown = poise("show", job_id[:10])
    assert shown.returncode == 0, shown.stderr
    assert "gate: refused — expected_cost" in shown.stdout and explained in shown.stdout
    assert all(step in shown.stdout for step in steps), shown.stdout

    out = tmp_path / "scored.csv"
    refused = poise("predict", "noisy", str(data), "--out", str(out))
    assert refused.returncode == 2 and not out.exists()
    assert "model 'noisy' has no champion yet" in refused.stderr
    assert "Registered: v1 (gate: expected_cost" in refused.stderr
    use_v1 = shlex.join(["poise", "predict", "noisy", str(data), "--out", str(out), "--version", "1"])
    assert use_v1 in refused.stderr and steps[0] in refused.stderr and steps[3] in refused.stderr
    assert poise(*shlex.split(use_v1)[1:]).returncode == 0 and len(pd.read_csv(out)) == 300  # the step works

    assert "Missing option '--reason'" in poise("promote", "noisy", "1").stderr
    assert "has no version 9" in poise("promote", "noisy", "9", "--reason", "pilot").stderr
    promoted = poise("promote", "noisy", "1", "--reason", "accepted for the pilot; costs under review")
    assert promoted.returncode == 0 and "champion is now v1" in promoted.stdout, promoted.stderr
    assert tracking.champion_version(client, "noisy") == "1"
    tags = client.get_model_version("noisy", "1").tags
    assert tags["poise.promoted_reason"] == "accepted for the pilot; costs under review"
    assert tags["poise.promoted_by"].startswith("cli:") and datetime.fromisoformat(tags["poise.promoted_at"])

    shown = poise("show", job_id[:10])
    assert "The gate refused v1, but it was promoted by hand by cli:" in shown.stdout
    assert "accepted for the pilot; costs under review" in shown.stdout and "Next steps" not in shown.stdout
    served = poise("predict", "noisy", str(data), "--out", str(out))
    assert served.returncode == 0 and "from noisy v1" in served.stdout, served.stderr

    retrained = poise(*shlex.split(steps[0])[1:])  # the suggested retraining runs as printed
    assert retrained.returncode == 0 and "noisy v2" in retrained.stdout, retrained.stdout + retrained.stderr
