"""`poise serve` as a user starts it: API, a worker and the MLflow UI in one command, a first
admin key written once to a file only its owner reads (never into the log), and everything stopped
with it, on Ctrl-C as on SIGTERM."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

POISE = str(Path(sys.executable).parent / "poise")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, seconds: float = 120, headers: dict | None = None) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, headers=headers, timeout=5)
        except httpx.HTTPError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def _children_of_home(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("POISE_HOME") == str(home) and process.pid != os.getpid():
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _serve(port: int, mlflow_port: int) -> subprocess.Popen:
    return subprocess.Popen([POISE, "serve", "--port", str(port), "--mlflow-ui", "--mlflow-port", str(mlflow_port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())


def test_serve_starts_api_worker_and_mlflow_ui_then_stops_them(poise_home):
    port, mlflow_port = _free_port(), _free_port()
    server = _serve(port, mlflow_port)
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
        workers = [p for p in _children_of_home(poise_home) if p.cmdline()[-2:] == ["poise.pipelines.cli", "worker"]]
        assert len(workers) == 1
        experiments = _wait_for(f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search?max_results=5")
        assert experiments.status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    key_file = poise_home / "first-admin-key"
    key = re.fullmatch(r"(poise_[0-9a-f]{12}_\S+)\n", key_file.read_text()).group(1)
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key not in output and str(key_file) in output  # the log says where the key is, not what it is
    time.sleep(1)
    assert _children_of_home(poise_home) == []  # worker and MLflow UI stopped with it

    again = _serve(port, mlflow_port)
    try:
        listing = _wait_for(f"http://127.0.0.1:{port}/api/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert listing.status_code == 200 and listing.json() == []
    finally:
        again.send_signal(signal.SIGINT)
        second_output, _ = again.communicate(timeout=60)
    assert "first admin API key" not in second_output  # printed once, on the first start only


def test_sigterm_stops_and_reaps_every_child(poise_home):
    port, mlflow_port = _free_port(), _free_port()
    server = subprocess.Popen([POISE, "serve", "--port", str(port), "--workers", "2", "--mlflow-ui",
                               "--mlflow-port", str(mlflow_port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    started: dict[int, psutil.Process] = {}
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert _wait_for(f"http://127.0.0.1:{mlflow_port}/health").status_code == 200
        started = {p.pid: p for p in _children_of_home(poise_home)} | {
            p.pid: p for p in psutil.Process(server.pid).children(recursive=True)}
        commands = [" ".join(p.cmdline()) for p in started.values()]
        assert sum(c.endswith("poise.pipelines.cli worker") for c in commands) == 2
        assert sum(c.endswith("poise.pipelines.cli scheduler") for c in commands) == 1
        assert any("mlflow" in c and "server" in c for c in commands)
        server.send_signal(signal.SIGTERM)
        try:  # the children inherited its stdout: the output ends only when they are gone too
            output, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            output = "(no end of output within 60 s: poise serve or a child of it still runs)"
        alive = psutil.wait_procs(list(started.values()), timeout=5)[1]
    finally:  # whatever happened, leave nothing behind
        for process in [*started.values(), psutil.Process(server.pid)] if server.poll() is None else started.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        server.communicate()
    assert server.returncode == 0 and "child process(es)" in output, output
    assert alive == [], [p.cmdline() for p in alive]
    assert _children_of_home(poise_home) == []


def test_an_open_web_ui_is_refused_on_any_address_but_loopback(poise_home):
    env = {**os.environ, "POISE_UI_OPEN": "true"}
    refused = subprocess.run([POISE, "serve", "--host", "0.0.0.0", "--port", str(_free_port())], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "POISE_UI_OPEN" in refused.stderr and "refused on 0.0.0.0" in refused.stderr
    assert not (poise_home / "first-admin-key").exists()  # refused before anything was started or created
