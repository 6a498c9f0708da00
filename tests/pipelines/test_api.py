"""The REST API over real HTTP (uvicorn on 127.0.0.1): auth, bad input as 4xx, and the whole
service flow — chat → plan approval → worker → champion → predictions → feedback → promote/rollback."""

import json
import sqlite3
import threading
import time

import httpx
import pandas as pd
import pytest
import uvicorn
from sqlalchemy import select

from pipelines.api.main import create_app
from pipelines.settings import Settings
from pipelines.worker import Worker
from registry.db import session_scope
from registry.keys import create_key
from registry.models import Prediction


@pytest.fixture
def service(poise_home, tmp_path):
    source = tmp_path / "warehouse.db"
    with sqlite3.connect(source) as connection:
        connection.execute("CREATE TABLE customers (tenure REAL, plan TEXT, churned TEXT)")
        connection.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                               [(i % 40, "monthly" if i % 3 else "yearly", "yes" if i % 10 == 0 else "no")
                                for i in range(200)])
    settings = Settings(home=poise_home, upload_max_bytes=2_000_000, predict_max_rows=500,
                        sql_sources={"warehouse": f"sqlite:///{source}"})
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    keys = {scope: create_key(settings.db_url, f"test-{scope}", [scope])[1] for scope in ("read", "submit", "predict",
                                                                                            "admin")}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        yield client, keys, settings
    server.should_exit = True
    thread.join(timeout=10)


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
    unknown = client.post("/api/v1/jobs", json={"target": "y", "sql": {"source": "prod", "query": "SELECT 1"}},
                          headers=headers)
    assert unknown.status_code == 400 and "unknown SQL source" in unknown.json()["detail"]
    broken = client.post("/api/v1/jobs", json={"target": "y", "sql": {"source": "warehouse", "query": "SELEC x"}},
                         headers=headers)
    assert broken.status_code == 422 and "query failed" in broken.json()["detail"]
    queued = client.post("/api/v1/jobs", headers=headers, json={
        "target": "churned", "sql": {"source": "warehouse", "query": "SELECT tenure, plan, churned FROM customers"}})
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    assert queued.json()["spec"]["data"].endswith("query.parquet")


@pytest.mark.slow
def test_chat_approval_worker_serving_feedback_promote_and_rollback(service, churn_csv):
    client, keys, settings = service
    submit, read, predict, admin = (_auth(keys[s]) for s in ("submit", "read", "predict", "admin"))
    worker = Worker(settings)

    reply = client.post("/api/v1/chat", headers=submit, json={
        "message": f"train on {churn_csv} to predict churned in 15 seconds, call it churn-api"}).json()
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

    metrics = client.get("/metrics").text
    assert 'poise_jobs{status="succeeded"} 2.0' in metrics
    assert "poise_http_request_duration_seconds_bucket" in metrics
