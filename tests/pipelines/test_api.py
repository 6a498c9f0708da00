"""The REST API over real HTTP (uvicorn on 127.0.0.1): auth, bad input as 4xx, and the whole
service flow — chat → plan approval → worker → champion → predictions → feedback → promote/rollback."""

import io
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlflow.types import ColSpec, Schema
from sqlalchemy import select

from poise.agents.deployment.signature import conform_to_signature
from poise.pipelines import runner
from poise.pipelines.api.main import create_app
from poise.pipelines.api.prediction_log import PredictionLog, prediction_log
from poise.pipelines.api.routes.models import _csv_table, _json_records
from poise.pipelines.settings import Settings
from poise.pipelines.worker import Worker
from poise.registry.db import session_scope
from poise.registry.keys import create_key, recently_verified, revoke_key
from poise.registry import tracking
from poise.registry.models import Job, ModelVersion, Prediction
from poise.ui import views as ui_views

POISE = str(Path(sys.executable).parent / "poise")


@pytest.fixture
def service(poise_home, tmp_path, serve_app):
    source = tmp_path / "warehouse.db"
    with sqlite3.connect(source) as connection:
        connection.execute("CREATE TABLE customers (tenure REAL, plan TEXT, churned TEXT)")
        connection.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                               [(i % 40, "monthly" if i % 3 else "yearly", "yes" if i % 10 == 0 else "no")
                                for i in range(200)])
    settings = Settings(home=poise_home, upload_max_bytes=2_000_000, predict_max_rows=500,
                        sql_sources={"warehouse": f"sqlite:///{source}"})
    keys = {scope: create_key(settings.db_url, f"test-{scope}", [scope])[1] for scope in ("read", "submit", "predict",
                                                                                            "admin")}
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client, keys, settings


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_health_is_open_and_everything_else_needs_a_key_with_the_right_scope(service):
    client, keys, _ = service
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/api/v1/jobs", headers=_auth("poise_nothere_secret")).status_code == 401
    assert client.get("/api/v1/jobs", headers={"X-API-Key": keys["read"]}).status_code == 200
    forbidden = client.post("/api/v1/jobs", json={"target": "y", "data_path": "x.csv"}, headers=_auth(keys["read"]))
    assert forbidden.status_code == 403 and "submit" in forbidden.json()["detail"]
    assert client.post("/api/v1/models/m/promote", json={"version": "1"},
                       headers=_auth(keys["submit"])).status_code == 403


@pytest.mark.parametrize(
    ("files", "options", "status", "message"),
    [
        ({"file": ("c.csv", b"tenure,churned\n1,yes\n2,no\n")}, {"target": "churn"}, 422, "did you mean 'churned'"),
        ({"file": ("c.xlsx", b"PK\x03\x04")}, {"target": "y"}, 415, "unsupported file type"),
        ({"file": ("c.csv", bytes(range(256)) * 100)}, {"target": "y"}, 422, "c.csv"),
        ({"file": ("big.csv", b"a,b\n" + b"1,2\n" * 600_000)}, {"target": "b"}, 413, "larger than"),
        ({"file": ("c.csv", b"a,y\n1,2\n")}, {"target": "y", "objective": "accuracy"}, 422, "invalid options"),
    ],
    ids=["missing-target", "wrong-type", "binary-garbage", "too-large", "bad-objective"],
)
def test_bad_uploads_get_a_clear_4xx_and_leave_no_job(service, files, options, status, message):
    client, keys, settings = service
    response = client.post("/api/v1/jobs/upload", files=files, data={"options": json.dumps(options)},
                           headers=_auth(keys["submit"]))
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert client.get("/api/v1/jobs", headers=_auth(keys["read"])).json() == []
    uploads = settings.home / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_paths_stay_in_the_data_folder_and_sql_sources_are_named(service):
    client, keys, settings = service
    headers = _auth(keys["submit"])
    traversal = client.post("/api/v1/jobs", json={"target": "y", "data_path": "../../../etc/passwd"}, headers=headers)
    assert traversal.status_code == 400 and "inside the data folder" in traversal.json()["detail"]
    nul = client.post("/api/v1/jobs", json={"target": "y", "data_path": "e\u0000x.csv"}, headers=headers)
    assert nul.status_code == 400 and "NUL" in nul.json()["detail"]  # found by schemathesis: was a 500
    unknown = client.post("/api/v1/jobs", json={"target": "y", "sql": {"source": "prod", "query": "SELECT 1"}},
                          headers=headers)
    assert unknown.status_code == 400 and "unknown SQL source" in unknown.json()["detail"]
    broken = client.post("/api/v1/jobs", json={"target": "y", "sql": {"source": "warehouse", "query": "SELEC x"}},
                         headers=headers)
    assert broken.status_code == 422 and "query failed" in broken.json()["detail"]
    queued = client.post("/api/v1/jobs", headers=headers, json={
        "target": "churned", "sql": {"source": "warehouse", "query": "SELECT tenure, plan, churned FROM customers"}})
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    assert queued.json()["spec"]["data"].startswith("uploads/") and queued.json()["spec"]["data"].endswith("/query")
    uploads = {path.name for path in settings.uploads_folder.iterdir()}
    no_target = client.post("/api/v1/jobs", headers=headers, json={
        "target": "churned", "sql": {"source": "warehouse", "query": "SELECT tenure, plan FROM customers"}})
    assert no_target.status_code == 422 and "target column 'churned' not found" in no_target.json()["detail"]
    assert {path.name for path in settings.uploads_folder.iterdir()} == uploads  # the refused query left nothing


def test_a_folder_or_glob_of_parquet_parts_is_read_only_when_every_part_is_inside(service, tmp_path, parquet_parts):
    client, keys, settings = service
    headers = _auth(keys["submit"])
    parquet_parts(settings.data_folder / "events", parts=2, rows=300)
    for data_path in ("events", "events/part-*.parquet"):
        queued = client.post("/api/v1/jobs", json={"target": "bad", "data_path": data_path}, headers=headers)
        assert queued.status_code == 202, queued.text
        assert queued.json()["spec"]["data"].endswith(data_path)
    # a part that links outside the data folder makes the whole folder unreadable, and says so without naming it
    parquet_parts(tmp_path / "elsewhere", parts=1, rows=300)
    (settings.data_folder / "events" / "part-00009.parquet").symlink_to(tmp_path / "elsewhere" / "part-00000.parquet")
    for data_path in ("events", "events/*.parquet"):
        refused = client.post("/api/v1/jobs", json={"target": "bad", "data_path": data_path}, headers=headers)
        assert refused.status_code == 400 and "parts that are not inside" in refused.json()["detail"]
        assert str(tmp_path / "elsewhere") not in refused.text
    missing = client.post("/api/v1/jobs", json={"target": "bad", "data_path": "events/none-*.parquet"},
                          headers=headers)
    assert missing.status_code == 404 and "no Parquet part" in missing.json()["detail"]
    escaping = client.post("/api/v1/jobs", json={"target": "bad", "data_path": "../*/*.parquet"}, headers=headers)
    assert escaping.status_code == 400 and "inside the data folder" in escaping.json()["detail"]


@pytest.mark.slow
def test_chat_approval_worker_serving_feedback_promote_and_rollback(service, churn_csv):
    client, keys, settings = service
    submit, read, predict, admin = (_auth(keys[s]) for s in ("submit", "read", "predict", "admin"))
    worker = Worker(settings)

    settings.data_folder.mkdir(parents=True)
    shutil.copyfile(churn_csv, settings.data_folder / "customers.csv")  # chat reads only the data folder and uploads
    reply = client.post("/api/v1/chat", headers=submit, json={
        "message": "train on customers.csv to predict churned in 15 seconds, call it churn-api"}).json()
    assert reply["status"] == "queued" and reply["job_id"]
    job_id = reply["job_id"]
    assert worker.run_once() == job_id  # profiles, then pauses for approval
    job = client.get(f"/api/v1/jobs/{job_id}", headers=read).json()
    assert job["status"] == "awaiting_approval" and any("target: churned" in line for line in job["plan"])

    approved = client.post("/api/v1/chat", headers=submit, json={"message": "yes", "session_id": reply["session_id"]})
    assert approved.json()["status"] == "queued"
    assert worker.run_once() == job_id
    job = client.get(f"/api/v1/jobs/{job_id}", headers=read).json()
    assert job["status"] == "succeeded" and job["model_version"]["version"] == "1" and job["summary"]

    events = client.get(f"/api/v1/jobs/{job_id}/events", headers=read).text
    assert "event: step" in events and '"status": "succeeded"' in events

    models = client.get("/api/v1/models", headers=read).json()
    assert models[0]["name"] == "churn-api" and models[0]["champion"] == "1"
    assert models[0]["versions"][0]["aliases"] == ["champion"]

    holdout = pd.read_parquet(settings.job_dir(job_id) / "holdout.parquet").drop(columns=["churned"]).head(20)
    records = json.loads(holdout.to_json(orient="records"))
    served = client.post("/api/v1/models/churn-api/predict", json={"records": records}, headers=predict).json()
    assert served["version"] == "1" and len(served["predictions"]) == 20
    first = served["predictions"][0]
    assert set(first["probabilities"]) == {"yes", "no"} and first["label"] in ("yes", "no")
    as_csv = client.post("/api/v1/models/churn-api/predict", content=holdout.to_csv(index=False),
                         headers={**predict, "Content-Type": "text/csv"}).json()
    assert [p["label"] for p in as_csv["predictions"]] == [p["label"] for p in served["predictions"]]
    missing = client.post("/api/v1/models/churn-api/predict", json={"records": [{"tenure_months": 3}]},
                          headers=predict)
    assert missing.status_code == 422 and "lacks the model's columns" in missing.json()["detail"]
    assert client.post("/api/v1/models/nope/predict", json={"records": records}, headers=predict).status_code == 404

    feedback = client.post("/api/v1/models/churn-api/feedback", headers=predict, json={"items": [
        {"prediction_id": first["id"], "label": "no"}, {"prediction_id": "f" * 32, "label": "yes"}]}).json()
    assert feedback == {"updated": 1, "unknown": ["f" * 32]}
    with session_scope(settings.db_url) as db:
        logged = db.scalars(select(Prediction).where(Prediction.model_name == "churn-api")).all()
        assert len(logged) == 40 and sum(p.feedback_label == "no" for p in logged) == 1

    upload = client.post("/api/v1/jobs/upload", headers=submit, files={"file": ("customers.csv", churn_csv.read_bytes())},
                         data={"options": json.dumps({"target": "churned", "name": "churn-api", "time_limit": 10})})
    assert upload.status_code == 202
    assert worker.run_once() == upload.json()["id"]
    promoted = client.post("/api/v1/models/churn-api/promote", json={"version": "2"}, headers=admin).json()
    assert promoted == {"name": "churn-api", "champion": "2", "previous_champion": "1"}
    assert client.post("/api/v1/models/churn-api/predict", json={"records": records},
                       headers=predict).json()["version"] == "2"
    rolled = client.post("/api/v1/models/churn-api/rollback", headers=admin)
    assert rolled.json() == {"name": "churn-api", "champion": "1", "previous_champion": "2"}
    assert client.post("/api/v1/models/churn-api/predict", json={"records": records},
                       headers=predict).json()["version"] == "1"
    # one truth about the champion after the rollback: the registry's alias, wherever it is read, whatever the
    # version's row says about its registration (here as if v2 had passed its gate and become champion then)
    second = upload.json()["id"]
    with session_scope(settings.db_url) as db:
        db.scalars(select(ModelVersion).where(ModelVersion.job_id == second)).one().champion_at_registration = True
    views = {job: client.get(f"/api/v1/jobs/{job}", headers=read).json() for job in (job_id, second)}
    assert [views[job]["model_version"]["champion"] for job in (job_id, second)] == [True, False]
    assert [views[job]["gate"]["champion"] for job in (job_id, second)] == ["1", "1"]
    (listed,) = [m for m in client.get("/api/v1/models", headers=read).json() if m["name"] == "churn-api"]
    assert listed["champion"] == "1"
    shown = {job: subprocess.run([POISE, "show", job], capture_output=True, text=True, timeout=120).stdout
             for job in (job_id, second)}
    assert "churn-api v1 — champion" in shown[job_id] and "churn-api v2 — not champion" in shown[second]
    ui = {job: ui_views.job_view(settings, runner.find_job(settings, job)).details for job in (job_id, second)}
    assert "version 1 (champion)" in ui[job_id] and "version 2 (not champion)" in ui[second]

    metrics = client.get("/metrics").text
    assert 'poise_jobs{status="succeeded"} 2.0' in metrics
    assert "poise_http_request_duration_seconds_bucket" in metrics


def test_a_revoked_key_is_refused_at_once_though_verified_keys_are_remembered(service):
    client, _, settings = service
    info, key = create_key(settings.db_url, "short-lived", ["read"])
    assert client.get("/api/v1/jobs", headers=_auth(key)).status_code == 200
    assert recently_verified(settings.db_url, key) is not None  # the next request skips the key table
    assert revoke_key(settings.db_url, info.id)
    assert recently_verified(settings.db_url, key) is None
    assert client.get("/api/v1/jobs", headers=_auth(key)).status_code == 401


def _served(rows: int, label: str = "no") -> tuple[pd.DataFrame, pd.DataFrame]:
    table = pd.DataFrame({"tenure": [float(i) for i in range(rows)], "plan": ["monthly", None] * (rows // 2) + [None] * (rows % 2)})
    output = pd.DataFrame({"label": [label] * rows, "proba_no": [0.75] * rows, "proba_yes": [0.25] * rows})
    return table, output


def _stored(db_url: str, name: str) -> dict[str, Prediction]:
    with session_scope(db_url) as db:
        return {p.id: p for p in db.scalars(select(Prediction).where(Prediction.model_name == name))}


def test_the_prediction_log_stores_every_row_off_the_request_path(poise_home):
    settings = Settings(home=poise_home)
    settings.ensure_home()
    log = PredictionLog(settings.db_url, max_delay=30)  # nothing is written until asked
    try:
        ids = [log.add("m", "1", *_served(3)) for _ in range(4)]
        assert all(len(batch) == 3 and len(set(batch)) == 3 for batch in ids)
        assert log.pending == 4 and _stored(settings.db_url, "m") == {}
        assert log.flush()
        stored = _stored(settings.db_url, "m")
        assert set(stored) == {pid for batch in ids for pid in batch} and log.pending == 0
        first = stored[ids[0][1]]
        assert first.model_version == "1" and first.inputs == {"tenure": 1.0, "plan": None}
        assert first.outputs == {"label": "no", "proba_no": 0.75, "proba_yes": 0.25}
        sent = [{"tenure": 4, "plan": "yearly", "extra": [1, 2]}]  # a JSON request's records: stored as sent
        as_sent = log.add("m", "1", sent, _served(1)[1])
        assert log.flush() and _stored(settings.db_url, "m")[as_sent[0]].inputs == sent[0]
        late = log.add("m", "1", *_served(2))
    finally:
        log.close()
    assert set(late) <= set(_stored(settings.db_url, "m"))  # close writes what is still queued
    after = log.add("m", "1", *_served(1))  # after close: stored at once
    assert set(after) <= set(_stored(settings.db_url, "m"))


def test_a_write_that_keeps_failing_is_counted_and_does_not_take_other_requests_with_it(poise_home):
    settings = Settings(home=poise_home)
    settings.ensure_home()
    dropped = []
    log = PredictionLog(settings.db_url, max_delay=30, retries=2, on_drop=dropped.append)
    try:
        good = log.add("m", "1", *_served(2))
        table, output = _served(2)
        bad = log.add("m", "1", table, output.assign(label=[object(), object()]))  # not JSON: cannot be stored
        also_good = log.add("m", "1", *_served(1))
        assert log.flush()
    finally:
        log.close()
    stored = _stored(settings.db_url, "m")
    assert set(good) | set(also_good) <= set(stored) and not set(bad) & set(stored)
    assert dropped == [2] and log.dropped_rows == 2


def test_stopping_the_api_writes_the_predictions_it_has_answered(poise_home, serve_app):
    settings = Settings(home=poise_home)
    app = create_app(settings)
    with serve_app(app):
        log = prediction_log(app)
        log.max_delay = 600  # would wait ten minutes: only the shutdown can write these
        ids = log.add("m", "1", *_served(5))
        time.sleep(0.2)
        assert _stored(settings.db_url, "m") == {}
    assert set(_stored(settings.db_url, "m")) == set(ids)


def test_a_csv_body_gives_the_frame_its_rows_give_as_json():
    body = b"age,smoker,plan,code\n41,true,t,007\n,false,,12\n39.5,TRUE,f,x\n"
    table = _csv_table(body)
    assert table["age"].tolist()[::2] == [41.0, 39.5] and pd.isna(table["age"].iloc[1])
    assert table["smoker"].tolist() == ["true", "false", "TRUE"]  # text, not booleans
    assert table["plan"].tolist()[::2] == ["t", "f"] and pd.isna(table["plan"].iloc[1])
    assert table["code"].tolist() == ["007", "12", "x"]  # not every value is a number: kept as written
    as_json = pd.DataFrame(_json_records(json.dumps({"records": [
        {"age": 41, "smoker": "true", "plan": "t"}, {"age": None, "smoker": "false", "plan": None},
        {"age": 39.5, "smoker": "TRUE", "plan": "f"}]}).encode())[0])
    schema = Schema([ColSpec("double", "age"), ColSpec("string", "smoker"), ColSpec("string", "plan")])
    pd.testing.assert_frame_equal(conform_to_signature(table, schema), conform_to_signature(as_json, schema))


def test_na_values_reach_the_job_spec_from_json_and_upload(service, churn_csv):
    client, keys, settings = service
    headers = _auth(keys["submit"])
    settings.data_folder.mkdir(parents=True, exist_ok=True)
    (settings.data_folder / "customers.csv").write_bytes(churn_csv.read_bytes())
    by_path = client.post("/api/v1/jobs", headers=headers, json={
        "target": "churned", "data_path": "customers.csv", "na_values": ["?", "none", "-999"]})
    assert by_path.status_code == 202, by_path.text
    uploaded = client.post("/api/v1/jobs/upload", headers=headers, files={"file": ("c.csv", churn_csv.read_bytes())},
                           data={"options": json.dumps({"target": "churned", "na_values": ["?"]})})
    assert uploaded.status_code == 202, uploaded.text
    too_many = client.post("/api/v1/jobs", headers=headers, json={
        "target": "churned", "data_path": "customers.csv", "na_values": [str(i) for i in range(51)]})
    assert too_many.status_code == 422
    with session_scope(settings.db_url) as db:
        specs = {job.id: job.spec for job in db.scalars(select(Job))}
    assert specs[by_path.json()["id"]]["na_values"] == ["?", "none", "-999"]
    assert specs[uploaded.json()["id"]]["na_values"] == ["?"]
    assert by_path.json()["spec"]["na_values"] == ["?", "none", "-999"]


@pytest.mark.slow
def test_a_refused_gate_in_the_job_json_a_409_from_predict_and_a_promotion_with_its_reason(service, noise_table):
    client, keys, settings = service
    submit, read, predict, admin = (_auth(keys[s]) for s in ("submit", "read", "predict", "admin"))
    options = {"target": "outcome", "name": "noisy-api", "objective": "cost", "cost_fn": 1, "cost_fp": 50,
               "time_limit": 10}
    queued = client.post("/api/v1/jobs/upload", headers=submit, files={"file": ("noise.csv", noise_table().to_csv(index=False).encode())},
                         data={"options": json.dumps(options)})
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["id"]
    assert Worker(settings).run_once() == job_id

    job = client.get(f"/api/v1/jobs/{job_id}", headers=read).json()
    assert job["status"] == "succeeded" and job["model_version"]["champion"] is False
    gate = job["gate"]
    assert gate["passed"] is False and "does not beat the majority baseline" in gate["reason"]  # really refused
    assert gate["champion"] is None and gate["is_champion"] is False and gate["version"] == "1"
    assert gate["explanation"].startswith("No version of 'noisy-api' is champion")
    steps = {step["action"]: step for step in gate["next_steps"]}
    assert list(steps) == ["change_objective", "longer_budget", "predict_with_version", "promote"]
    assert steps["longer_budget"]["api"]["body"] == {**options, "time_limit": 30, "presets": "medium_quality",
                                                     "threshold_policy": "calibrate", "label_noise": "keep"}
    assert steps["change_objective"]["api"]["body"]["objective"] == "balanced_accuracy"
    assert steps["promote"]["api"]["path"] == "/api/v1/models/noisy-api/promote"
    assert steps["promote"]["command"].startswith("poise promote noisy-api 1 --reason ")
    assert all(step["command"] in job["summary"] for step in gate["next_steps"])  # the summary carries them too

    records = json.loads(pd.read_csv(io.BytesIO(noise_table().to_csv(index=False).encode())).drop(columns=["outcome"]).head(3)
                         .to_json(orient="records"))
    refused = client.post("/api/v1/models/noisy-api/predict", json={"records": records}, headers=predict)
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["detail"].startswith("model 'noisy-api' has no champion yet") and "v1 (gate: " in body["detail"]
    assert [v["version"] for v in body["versions"]] == ["1"] and body["versions"][0]["job_id"] == job_id
    assert [step["action"] for step in body["next_steps"]] == list(steps)
    assert all(step["command"] in body["detail"] for step in body["next_steps"])
    missing = client.post("/api/v1/models/nope/predict", json={"records": records}, headers=predict)
    assert missing.status_code == 404 and "no model named 'nope'" in missing.json()["detail"]

    reason = "accepted for the pilot; costs under review"
    promote = steps["promote"]["api"]
    assert client.post(promote["path"], json={**promote["body"], "reason": ""}, headers=admin).status_code == 422
    promoted = client.post(promote["path"], json={**promote["body"], "reason": reason}, headers=admin)
    assert promoted.json() == {"name": "noisy-api", "champion": "1", "previous_champion": None}
    (model,) = client.get("/api/v1/models", headers=read).json()
    version = model["versions"][0]
    assert model["champion"] == "1" and version["promoted_reason"] == reason
    assert version["promoted_by"] == "api:test-admin" and version["promoted_at"]
    assert "does not beat" in version["gate"]
    served = client.post("/api/v1/models/noisy-api/predict", json={"records": records}, headers=predict)
    assert served.status_code == 200 and served.json()["version"] == "1"

    gate = client.get(f"/api/v1/jobs/{job_id}", headers=read).json()["gate"]
    assert gate["passed"] is False and gate["is_champion"] and gate["next_steps"] == []
    assert gate["promotion"]["reason"] == reason and gate["promotion"]["by"] == "api:test-admin"
    client_ = tracking.configure(settings.tracking_uri, settings.registry_uri)
    assert client_.get_model_version("noisy-api", "1").tags["poise.promoted_reason"] == reason
