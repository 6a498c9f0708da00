"""The probes of issue 17, replayed over real HTTP against a real `poise serve` (API and web UI) on 127.0.0.1:
anonymous and under-scoped callers of the UI's Gradio endpoints, chat reading server files, a server path given
to the upload handler, one key continuing another key's chat session, a revoked key's UI session, guessing keys."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from poise.pipelines.access import FAILED_ATTEMPTS, FAILED_WINDOW
from poise.pipelines.settings import Settings
from poise.registry.db import session_scope
from poise.registry.keys import create_key, revoke_key
from poise.registry.models import Job

SECRET = "hunter2-secret-label"


def gradio_call(client: httpx.Client, name: str, data: list) -> tuple[str, object]:
    """Call a UI event the way the page does (`/gradio_api/call/<name>`); returns (event kind, payload)."""
    started = client.post(f"/ui/gradio_api/call/{name}", json={"data": data})
    if started.status_code != 200:
        return f"http {started.status_code}", started.text
    event_id = started.json()["event_id"]
    with client.stream("GET", f"/ui/gradio_api/call/{name}/{event_id}", timeout=60) as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                return kind, json.loads(line.split(":", 1)[1])
    return "no answer", None


def last_reply(chat: list[dict]) -> str:
    """The text of the chat's last message (Gradio sends a message's content as a list of parts)."""
    content = chat[-1]["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def signed_in(base: str, key: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    answer = client.post("/ui/login", data={"api_key": key}, follow_redirects=False)
    assert answer.status_code == 303 and "poise_ui_session" in answer.cookies, answer.text
    return client


def jobs_in(settings: Settings) -> int:
    with session_scope(settings.db_url) as db:
        return db.scalar(select(func.count()).select_from(Job))


@contextmanager
def poise_serve(home: Path, **env: str) -> Iterator[str]:
    """`poise serve` (API and UI, no worker, no scheduler) on a free port of 127.0.0.1, on `home`; stopped after."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "poise"), "serve", "--port", str(port),
                               "--workers", "0", "--no-scheduler"], env={**os.environ, "POISE_HOME": str(home), **env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr and server.stderr.read()
                time.sleep(0.5)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


@pytest.fixture
def service(settings, churn_csv, tmp_path):
    """`poise serve` on a home with keys of each kind, a table in the data folder, and a secret table outside it."""
    settings.data_folder.mkdir(parents=True)
    shutil.copyfile(churn_csv, settings.data_folder / "customers.csv")
    secret = tmp_path / "outside" / "secrets.csv"
    secret.parent.mkdir()
    secret.write_text(f"password,outcome\nx,{SECRET}\ny,other\n")
    keys = {scope: create_key(settings.db_url, f"probe-{scope}", [scope])[1] for scope in ("read", "submit", "admin")}
    with poise_serve(settings.home) as base:
        yield base, keys, settings, secret


def test_the_web_ui_admits_nobody_without_a_key(service):
    base, keys, settings, _ = service
    anonymous = httpx.Client(base_url=base, timeout=30)
    page = anonymous.get("/ui/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].endswith("/ui/login")
    assert "api_key" in anonymous.get("/ui/login").text
    for name, data in (("talk", ["train on customers.csv to predict churned", [], None, None]),
                       ("approve_plan", [[], None, None]), ("approve_drift_check", ["abc"]),
                       ("registry_tables", [])):
        kind, _ = gradio_call(anonymous, name, data)
        assert kind == "http 401", (name, kind)
    assert anonymous.get("/ui/gradio_api/info").status_code == 401
    assert anonymous.get("/ui/config").status_code == 401
    assert anonymous.post("/ui/gradio_api/upload", files={"files": ("x.csv", b"a,b\n1,2\n")}).status_code == 401
    wrong = anonymous.post("/ui/login", data={"api_key": "poise_0123456789ab_not-a-key"}, follow_redirects=False)
    assert wrong.status_code == 401 and "invalid or revoked" in wrong.text and "poise_ui_session" not in wrong.cookies
    assert jobs_in(settings) == 0


def test_ui_events_check_the_keys_scope_like_the_api(service):
    base, keys, settings, _ = service
    reader = signed_in(base, keys["read"])
    kind, (_, chat, *_) = gradio_call(reader, "talk", ["train on customers.csv to predict churned", [], None, None])
    assert kind == "complete" and "lacks the 'submit' scope" in last_reply(chat)
    kind, (models, checks) = gradio_call(reader, "registry_tables", [])
    assert kind == "complete" and models is not None  # reading is what a read key is for
    submitter = signed_in(base, keys["submit"])
    kind, (answer, _) = gradio_call(submitter, "approve_drift_check", ["0123abcd"])
    assert kind == "complete" and "lacks the 'admin' scope" in answer
    assert jobs_in(settings) == 0

    revoke_key(settings.db_url, 2)  # keys were made read, submit, admin: id 2 is the submit key
    kind, (_, chat, *_) = gradio_call(submitter, "talk", ["hello", [], None, None])
    assert kind == "complete" and "revoked" in last_reply(chat)


def test_chat_reads_only_the_data_folder_and_uploads(service):
    base, keys, settings, secret = service
    submitter = signed_in(base, keys["submit"])
    for path in (str(secret), f"../../{secret.parent.name}/secrets.csv", "~/secrets.csv", f"file://{secret}"):
        kind, (_, chat, *_) = gradio_call(submitter, "talk", [f"train on {path} to predict outcome", [], None, None])
        reply = last_reply(chat)
        assert kind == "complete" and "cannot read" in reply and SECRET not in reply and "password" not in reply, reply
    api = httpx.Client(base_url=base, headers={"X-API-Key": keys["submit"]}, timeout=60)
    answer = api.post("/api/v1/chat", json={"message": f"train on {secret} to predict outcome"})
    assert answer.status_code == 200 and "cannot read" in answer.json()["reply"] and SECRET not in answer.text
    assert jobs_in(settings) == 0

    server_file = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}  # a server path, not an upload
    kind, answer = gradio_call(submitter, "uploaded", [server_file, [], None, None])
    assert kind == "error" and SECRET not in json.dumps(answer) and "password" not in json.dumps(answer), answer
    assert not settings.uploads_folder.exists() or not any(settings.uploads_folder.rglob("*.csv"))

    inside = api.post("/api/v1/chat", json={"message": "train on customers.csv to predict churned"})
    assert inside.status_code == 200 and inside.json()["job_id"] is not None  # the data folder is readable
    assert "data: customers.csv" in inside.json()["plan"] and str(settings.home) not in inside.text
    assert jobs_in(settings) == 1


def test_a_chat_session_continues_only_with_the_key_that_started_it(service):
    base, keys, settings, _ = service
    first = httpx.Client(base_url=base, headers={"X-API-Key": keys["submit"]}, timeout=60)
    started = first.post("/api/v1/chat", json={"message": "I want to predict churn"})
    assert started.status_code == 200
    session_id = started.json()["session_id"]
    other = create_key(settings.db_url, "someone-else", ["submit"])[1]
    hijack = httpx.post(f"{base}/api/v1/chat", headers={"X-API-Key": other}, timeout=60,
                        json={"message": "the data is in customers.csv", "session_id": session_id})
    assert hijack.status_code == 403 and "another key" in hijack.json()["detail"]
    again = first.post("/api/v1/chat", json={"message": "the data is in customers.csv", "session_id": session_id})
    assert again.status_code == 200 and again.json()["session_id"] == session_id


def test_guessing_keys_gets_429_then_the_address_waits(service):
    base, keys, _, _ = service
    api = httpx.Client(base_url=base, timeout=30)
    wrong = [api.get("/api/v1/jobs", headers={"X-API-Key": f"poise_0123456789ab_guess{i}"}).status_code
             for i in range(FAILED_ATTEMPTS)]
    assert wrong == [401] * FAILED_ATTEMPTS
    throttled = api.get("/api/v1/jobs", headers={"X-API-Key": keys["read"]})  # even a right key, from this address
    assert throttled.status_code == 429 and 0 < int(throttled.headers["Retry-After"]) <= FAILED_WINDOW + 1
    login = api.post("/ui/login", data={"api_key": keys["read"]}, follow_redirects=False)
    assert login.status_code == 429 and "poise_ui_session" not in login.cookies


def test_no_other_origin_may_call_the_ui_or_the_api_from_a_browser(service):
    base, keys, _, _ = service
    signed = signed_in(base, keys["read"])
    for origin in ("http://localhost:3000", "http://127.0.0.1:9999", "null", "https://evil.example"):
        for path in ("/ui/config", "/ui/gradio_api/info", "/api/v1/jobs"):
            answer = signed.get(path, headers={"Origin": origin, "X-API-Key": keys["read"]})
            assert "access-control-allow-origin" not in answer.headers, (origin, path, answer.headers)
        preflight = signed.options("/ui/gradio_api/call/talk", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers, (origin, preflight.headers)


def test_an_open_ui_is_an_explicit_opt_in(poise_home):
    with poise_serve(poise_home, POISE_UI_OPEN="true") as base:
        anonymous = httpx.Client(base_url=base, timeout=60)
        assert anonymous.get("/ui/", follow_redirects=False).status_code == 200
        kind, (_, chat, *_) = gradio_call(anonymous, "talk", ["hello", [], None, None])
        assert kind == "complete" and "lacks" not in last_reply(chat)
