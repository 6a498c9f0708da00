"""Running Poise's long-lived processes for the CLI: the API with its job workers, the drift-check scheduler and
the MLflow UI as child processes, each in its own process group, all stopped and reaped together."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from poise.pipelines.console import console, escape, fail
from poise.pipelines.settings import Settings

FIRST_KEY_FILE = "first-admin-key"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def start_mlflow_ui(settings: Settings, port: int) -> subprocess.Popen:
    """The MLflow server for reviewing Poise's runs: on 127.0.0.1, one worker, no job runner, in its own process
    group, and read-only (`Settings.mlflow_ui_store_uri`), so that no caller of it can move the `champion` alias
    or change a run around Poise's `admin` scope; it accepts no artifact uploads either."""
    try:
        store = settings.mlflow_ui_store_uri
    except ValueError as problem:
        fail(str(problem))
    from poise.registry import tracking

    tracking.configure(settings.tracking_uri, settings.registry_uri).search_experiments(max_results=1)  # the store
    # exists and is migrated before a read-only server opens it
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", store, "--registry-store-uri", store, "--no-serve-artifacts",
               "--default-artifact-root", settings.artifact_root]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(command, env=env, start_new_session=True)


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)  # signal 0: only asks whether any process of the group is left
    except ProcessLookupError:
        return False
    return True


def stop_process_groups(processes: list[subprocess.Popen], grace_seconds: float = 15.0) -> None:
    """SIGTERM each child's process group, then SIGKILL what is still running after the grace period — the child,
    or a process it started that outlived it — and reap every child: Ctrl-C and SIGTERM must stop what Poise
    started even when a child does not honour SIGTERM. Each child leads its own group (`start_new_session`)."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    while time.monotonic() < deadline and any(group_alive(process.pid) for process in processes):
        time.sleep(0.1)
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_mlflow_ui(settings: Settings, port: int) -> None:
    """`poise mlflow`: the MLflow UI until Ctrl-C or SIGTERM, then its whole process group stopped."""
    process = start_mlflow_ui(settings, port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the server too (its own session)
    try:
        # polled, not a blocking wait: MLflow imports Polars when it is installed, and a signal the kernel hands to
        # one of Polars' threads would never interrupt a `waitpid` in this one; its handler runs after the next sleep
        while process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop_process_groups([process])


def run_worker(settings: Settings, poll_seconds: float, heartbeat_seconds: float, stale_after: float,
               once: bool) -> None:
    """`poise worker`: run queued jobs until stopped (or one, `once`). The first SIGTERM/Ctrl-C lets the current job
    finish, a second one exits now."""
    import threading

    from sqlalchemy import make_url

    from poise.pipelines.console import styled
    from poise.pipelines.worker import Worker

    stop = threading.Event()

    def _stop(signum, frame) -> None:
        stop.set()
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_DFL)

    def _report(job_id: str, status: str) -> None:
        console.print(f"job {job_id} {styled(status, 'default')}", soft_wrap=True)

    try:
        queue_worker = Worker(settings, poll_seconds=poll_seconds, heartbeat_seconds=heartbeat_seconds,
                              stale_after=stale_after, on_job=_report)
    except ValueError as problem:
        fail(str(problem))
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _stop)
    database = make_url(settings.db_url).render_as_string(hide_password=True)
    console.print(f"worker {escape(queue_worker.worker_id)} serving {escape(database)}", soft_wrap=True)
    if once:
        queue_worker.run_once()
    else:
        queue_worker.run_forever(stop)
    console.print(f"worker {escape(queue_worker.worker_id)} stopped", soft_wrap=True)


def run_scheduler_until_stopped(settings: Settings) -> None:
    """`poise scheduler`: fire scheduled drift checks until SIGTERM or Ctrl-C."""
    import threading

    from poise.pipelines.scheduler import run_scheduler

    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda signum, frame: stop.set())
    console.print("scheduler running (Ctrl-C to stop)")
    run_scheduler(settings, stop)
    console.print("scheduler stopped")


def write_private(path: Path, text: str) -> Path:
    """Write `text` to a file only its owner can read or write (0600, also when it existed; never through a
    symlink)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)
    return path


def ensure_first_key(settings: Settings) -> None:
    """On a home without API keys, create an admin key into a file only this user can read (never printed)."""
    from poise.registry.keys import create_key, has_keys

    if has_keys(settings.db_url):
        return
    _, key = create_key(settings.db_url, "first-admin", ["admin"])
    path = write_private(settings.home / FIRST_KEY_FILE, key + "\n")
    console.print(f"Created the first admin API key; it is in {escape(str(path))} (readable only by this user, "
                  "never printed): store it, then delete the file", soft_wrap=True)


def serve(settings: Settings, app, host: str, port: int, workers: int, scheduler: bool, mlflow_ui: bool,
          mlflow_port: int) -> None:
    """`poise serve`: the API in this process, `workers` job workers, the scheduler and the MLflow UI as children.

    SIGTERM stops it as Ctrl-C does: the API shuts down, then every child is stopped and reaped. A signal while the
    children start is held until they all have started, so none is left out of the list to stop."""
    import uvicorn

    held: list[int] = []
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda signum, frame: held.append(signum))
    children: list[subprocess.Popen] = []
    try:
        for command in ["worker"] * workers + ["scheduler"] * scheduler:
            children.append(subprocess.Popen([sys.executable, "-m", "poise.pipelines.cli", command], start_new_session=True))
        if mlflow_ui:
            children.append(start_mlflow_ui(settings, mlflow_port))
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.default_int_handler)
        if held:
            raise KeyboardInterrupt
        console.print(f"API on http://{host}:{port} (docs at /docs); {workers} worker(s)"
                      + (", drift-check scheduler" if scheduler else "")
                      + (f"; MLflow UI on http://127.0.0.1:{mlflow_port}" if mlflow_ui else ""))
        uvicorn.run(app, host=host, port=port, log_level="warning")  # re-raises a SIGTERM it stopped on
    except KeyboardInterrupt:
        pass
    finally:
        for number in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the reaping short
            signal.signal(number, signal.SIG_IGN)
        stop_process_groups(children)
        console.print(f"stopped the API and {len(children)} child process(es)")
