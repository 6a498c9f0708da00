"""`poise serve` as a user starts it: API, a worker and the MLflow UI in one command, a first
admin key printed once, and everything stopped with it."""

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
        workers = [p for p in _children_of_home(poise_home) if p.cmdline()[-2:] == ["pipelines.cli", "worker"]]
        assert len(workers) == 1
        experiments = _wait_for(f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search?max_results=5")
        assert experiments.status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    key = re.search(r"(poise_[0-9a-f]{12}_\S+)", output).group(1)
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
