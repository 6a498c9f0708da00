"""Limits before parsing, over real HTTP (uvicorn on 127.0.0.1): a body over its route's limit gets 413 before it
is read (declared by Content-Length) or as soon as it crosses the limit (chunked), stores nothing and leaves
/healthz answering; a big CSV is parsed off the event loop; the prediction log keeps only the model's input
columns; no API answer names the server's own folders."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from poise.pipelines.api.main import create_app
from poise.pipelines.api.prediction_log import prediction_log
from poise.pipelines.settings import Settings
from poise.registry import tracking
from poise.registry.db import session_scope
from poise.registry.keys import create_key
from poise.registry.models import Job, Prediction

LIMIT = 100_000
UPLOAD_LIMIT = 2_000_000


class Stub(mlflow.pyfunc.PythonModel):
    """A champion that answers 'no' for every row: enough to serve and log predictions."""

    def predict(self, context, model_input, params=None):
        rows = len(model_input)
        return pd.DataFrame({"label": ["no"] * rows, "proba_no": [0.75] * rows, "proba_yes": [0.25] * rows})


def _register_stub(settings: Settings, name: str) -> None:
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    mlflow.set_experiment(experiment_id=tracking.ensure_experiment(client, name, settings.artifact_root))
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model=Stub(), registered_model_name=name,
                                input_example=pd.DataFrame({"tenure": [1.0], "plan": ["monthly"]}))
    tracking.promote(client, name, "1")


@pytest.fixture
def limited(poise_home, serve_app):
    settings = Settings(home=poise_home, request_max_bytes=LIMIT, upload_max_bytes=UPLOAD_LIMIT,
                        predict_max_rows=10_000_000)
    keys = {scope: create_key(settings.db_url, f"test-{scope}", [scope])[1] for scope in ("predict", "submit", "read")}
    app = create_app(settings)
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client, {scope: {"Authorization": f"Bearer {key}"} for scope, key in keys.items()}, settings, app


def _predictions(settings: Settings) -> list[Prediction]:
    with session_scope(settings.db_url) as db:
        rows = db.scalars(select(Prediction)).all()
        db.expunge_all()
        return rows


def _jobs(settings: Settings) -> int:
    with session_scope(settings.db_url) as db:
        return db.scalar(select(func.count()).select_from(Job))


def _declared_but_not_sent(url: str, path: str, headers: dict[str, str], declared: int) -> tuple[int, str, float]:
    """POST a request that declares `declared` bytes and sends only 1 KB of them; the status, body and seconds
    until the answer came. A server that waited for the body would never answer (the socket times out)."""
    host, port = url.removeprefix("http://").split(":")
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
            f"Content-Length: {declared}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode() + b'{"records": [' + b" " * 1000)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 10:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    seconds = time.monotonic() - started
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.split(b"\r\n\r\n", 1)[1].decode(errors="replace"), seconds


def test_a_declared_oversized_body_is_refused_before_it_is_sent(limited):
    client, headers, settings, _ = limited
    _register_stub(settings, "stub")
    status, body, seconds = _declared_but_not_sent(str(client.base_url), "/api/v1/models/stub/predict",
                                                   headers["predict"], 100_000_000)
    assert status == 413 and f"larger than {LIMIT} bytes" in body and seconds < 5
    status, _, _ = _declared_but_not_sent(str(client.base_url), "/api/v1/jobs", headers["submit"], LIMIT + 1)
    assert status == 413
    status, _, _ = _declared_but_not_sent(str(client.base_url), "/api/v1/jobs/upload", headers["submit"],
                                          UPLOAD_LIMIT + (2 << 20))
    assert status == 413
    assert client.get("/healthz").status_code == 200
    assert _predictions(settings) == [] and _jobs(settings) == 0


def _chunks(total: int, piece: int = 16_384):
    sent = 0
    yield b'{"records": ['
    while sent < total:
        yield b'{"tenure": 1, "plan": "monthly", "pad": "' + b"x" * piece + b'"},'
        sent += piece
    yield b'{"tenure": 1, "plan": "monthly"}]}'


def test_a_chunked_body_is_cut_off_at_the_limit_and_stores_nothing(limited):
    client, headers, settings, _ = limited
    _register_stub(settings, "stub")
    small = client.post("/api/v1/models/stub/predict", headers=headers["predict"], content=_chunks(LIMIT // 2))
    assert small.status_code == 200, small.text  # chunked (no Content-Length) and under the limit: served
    for _ in range(5):
        assert prediction_log(_app(limited)).flush()
    served = len(_predictions(settings))
    assert served > 0

    big = client.post("/api/v1/models/stub/predict", headers=headers["predict"], content=_chunks(20 * LIMIT))
    assert big.status_code == 413 and f"larger than {LIMIT} bytes" in big.json()["detail"]
    job = client.post("/api/v1/jobs", headers={**headers["submit"], "Content-Type": "application/json"},
                      content=_chunks(20 * LIMIT))
    assert job.status_code == 413
    assert prediction_log(_app(limited)).flush()
    assert len(_predictions(settings)) == served and _jobs(settings) == 0
    assert client.get("/healthz").status_code == 200


def _app(limited):
    return limited[3]


def test_an_upload_keeps_its_own_larger_limit_and_the_ui_keeps_gradios(limited, make_table):
    client, headers, settings, _ = limited
    table = make_table(4000).to_csv(index=False).encode()
    assert LIMIT < len(table) < UPLOAD_LIMIT
    upload = client.post("/api/v1/jobs/upload", headers=headers["submit"],
                         files={"file": ("customers.csv", table)},  # bigger than request_max_bytes
                         data={"options": json.dumps({"target": "churned"})})
    assert upload.status_code != 413, upload.text  # the upload limit applies, not the JSON one
    as_json = client.post("/api/v1/jobs", headers=headers["submit"],
                          json={"target": "churned", "data_path": "x" * (LIMIT + 10)})
    assert as_json.status_code == 413
    ui = client.post("/ui/gradio_api/upload", files={"files": ("c.csv", table)})
    assert "request body larger than" not in ui.text  # /ui is Gradio's to limit


def test_a_big_csv_is_parsed_off_the_event_loop(poise_home, serve_app):
    settings = Settings(home=poise_home, predict_max_rows=10_000_000)
    key = create_key(settings.db_url, "p", ["predict"])[1]
    rows = 450_000
    rng = np.random.default_rng(0)
    body = pd.DataFrame({"tenure": rng.normal(size=rows).round(4), "charges": rng.normal(size=rows).round(4),
                         "plan": rng.choice(["monthly", "yearly"], rows), "code": [f"C{i}" for i in range(rows)]}
                        ).to_csv(index=False).encode()
    assert len(body) < settings.request_max_bytes
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=120) as client:
        client.get("/healthz")
        answer: dict = {}

        def post() -> None:
            started = time.monotonic()
            answer["response"] = httpx.post(f"{url}/api/v1/models/nope/predict", content=body, timeout=120,
                                            headers={"Authorization": f"Bearer {key}", "Content-Type": "text/csv"})
            answer["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=post)
        thread.start()
        latencies = []
        while thread.is_alive():
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
        thread.join()
    assert answer["response"].status_code == 404  # parsed in full, then no such model
    assert answer["seconds"] > 1.0 and len(latencies) >= 5  # a parse long enough to have blocked /healthz
    assert max(latencies) < min(1.0, answer["seconds"] / 2), (max(latencies), answer["seconds"])


def test_the_prediction_log_keeps_only_the_models_columns(limited):
    client, headers, settings, app = limited
    _register_stub(settings, "stub")
    sent = {"tenure": 3.0, "plan": "yearly", "password": "hunter2", "blob": "x" * 5000}
    as_json = client.post("/api/v1/models/stub/predict", headers=headers["predict"], json={"records": [sent]})
    assert as_json.status_code == 200, as_json.text
    as_csv = client.post("/api/v1/models/stub/predict", headers={**headers["predict"], "Content-Type": "text/csv"},
                         content=pd.DataFrame([sent]).to_csv(index=False))
    assert as_csv.status_code == 200, as_csv.text
    with_nan = client.post("/api/v1/models/stub/predict", headers={**headers["predict"], "Content-Type": "application/json"},
                           content=b'{"records": [{"tenure": NaN, "plan": "monthly", "password": "hunter2"}]}')
    assert with_nan.status_code == 200, with_nan.text  # Python's JSON reader: a frame, not records
    assert prediction_log(app).flush()
    stored = {p.id: p.inputs for p in _predictions(settings)}
    ids = [r.json()["predictions"][0]["id"] for r in (as_json, as_csv, with_nan)]
    assert stored[ids[0]] == {"tenure": 3.0, "plan": "yearly"}
    assert stored[ids[1]] == {"tenure": 3.0, "plan": "yearly"}
    assert stored[ids[2]] == {"tenure": None, "plan": "monthly"}
    assert "hunter2" not in json.dumps(list(stored.values()))


def test_errors_and_job_views_do_not_name_the_servers_folders(limited, churn_csv):
    client, headers, settings, _ = limited
    home = str(settings.home)
    escape = client.post("/api/v1/jobs", headers=headers["submit"],
                         json={"target": "churned", "data_path": "../../etc/passwd"})
    assert escape.status_code == 400 and home not in escape.text and "data folder" in escape.json()["detail"]
    garbage = client.post("/api/v1/jobs/upload", headers=headers["submit"],
                          files={"file": ("c.parquet", b"not parquet at all")},
                          data={"options": json.dumps({"target": "y"})})
    assert garbage.status_code == 422 and home not in garbage.text and "c.parquet" in garbage.json()["detail"]

    settings.data_folder.mkdir(parents=True, exist_ok=True)
    (settings.data_folder / "sub").mkdir(exist_ok=True)
    (settings.data_folder / "sub" / "customers.csv").write_bytes(churn_csv.read_bytes())
    by_path = client.post("/api/v1/jobs", headers=headers["submit"],
                          json={"target": "churned", "data_path": "sub/customers.csv"})
    assert by_path.status_code == 202, by_path.text
    uploaded = client.post("/api/v1/jobs/upload", headers=headers["submit"],
                           files={"file": ("c.csv", churn_csv.read_bytes())},
                           data={"options": json.dumps({"target": "churned"})})
    assert uploaded.status_code == 202, uploaded.text
    for job in (by_path, uploaded):
        shown = client.get(f"/api/v1/jobs/{job.json()['id']}", headers=headers["read"])
        assert shown.status_code == 200 and home not in shown.text and home not in job.text
    assert by_path.json()["spec"]["data"] == "sub/customers.csv"
    assert uploaded.json()["spec"]["data"].startswith("uploads/") and uploaded.json()["spec"]["data"].endswith("/c.csv")
    listing = client.get("/api/v1/jobs", headers=headers["read"])
    assert len(listing.json()) == 2 and home not in listing.text
    with session_scope(settings.db_url) as db:  # the worker still gets the real path
        assert all(job.spec["data"].startswith(home) for job in db.scalars(select(Job)))
