"""Do Poise's jobs survive the faults a deployment meets? A fault suite with figures.

Each scenario runs the real thing with subprocesses on 127.0.0.1: `poise worker`, `poise serve`,
`poise chat` and `poise resume` as a user starts them, a real `mlflow server`, a private PostgreSQL
cluster, a scripted OpenAI-compatible server (tests/llm_server.py), a real small tmpfs. Every job
trains on a tiny generated table (600 rows, ~10 % minority) with `--time-limit` seconds (default 10).

Scenarios (`--scenarios a,b`; `mlflow` and `llm` name their groups):
- kill_worker: two workers; the one that claimed the job gets SIGKILL (its pid only, as the OOM
  killer would) while AutoGluon is fitting; the other must take the job over and resume it.
- kill_registering: the same, but the worker is killed right after MLflow created the model version
  (before Poise knows its number): a proxy in front of the MLflow server stops answering right after
  forwarding `model-versions/create`, and the worker, retrying that call or its next, is killed there.
- mlflow_fit / mlflow_register: the job tracks to a `mlflow server` subprocess (`--workers 1`,
  `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`, SQLite store); it is stopped (its process group) while
  AutoGluon fits / as soon as the job's model is being logged (a `logged_models` row appears), stays
  down `--outage` seconds, and is started again on the same port and store.
- postgres_restart: a private cluster (initdb as the `postgres` user on a free port; the machine's
  shared PostgreSQL is never touched) is the job database of two workers; it is stopped (`-m fast`)
  while AutoGluon fits, stays down `--pg-outage` seconds (longer than `--stale-after`) and is started.
- llm_slow / llm_down / llm_garbage / llm_invented: `poise chat -m "train ..." --yes` with an LLM
  configured (`POISE_LLM_TIMEOUT=3`, one retry) whose endpoint answers every call after 10 s, listens
  nowhere, answers protocol garbage (a body that is not JSON, a completion without choices), or
  answers well-formed replies that make things up (a plan turn claiming results as plain text, as in
  issue 17, a review calling its tool with broken arguments, a summary with invented numbers); see
  GARBAGE for the kind each call gets.
- disk_full: POISE_HOME is a tmpfs of `--disk-mb` MB (mounted here; the scenario is "not run" where it
  cannot be); a ballast file fills it while AutoGluon fits; it stays full until the job stops moving,
  then the ballast is deleted and, if the job failed, `poise resume` is run as the error tells.
- worker_race: two idle workers, then one job: exactly one of them must run it, once.
- serve_sigterm: `poise serve --workers 1 --mlflow-ui` gets SIGTERM (its pid only) while its worker fits;
  the worker is paused (SIGSTOP) just before, as a fit too long for serve's 15 s grace would keep it
  (the tiny table's jobs end within the grace otherwise); no process serve started may be left;
  `poise serve` is then started again and its worker must finish the job; it gets SIGTERM again, idle.

Workers run with `--heartbeat-seconds 1 --stale-after S` (`--stale-after`, default 5 s): the time to
take over a dead worker's job scales with it (`poise serve` starts its workers with the defaults,
5 s / 30 s). For each scenario the suite records:
- final job state (as the job database says);
- versions registered under the job's model name, in MLflow's registry and in Poise's model_versions
  table: both must be exactly ["1"], READY, tagged with the job, one MLflow run for the job, and the
  `champion` alias where Poise says it promoted (anything else is listed as a registry problem);
- data lost: ids of jobs, job_steps and model_versions rows present just before the fault and missing
  at the end (steps may change status, never vanish); SQLite files of the home are integrity-checked;
- duplicate steps: nodes of the job recorded as succeeded more than once (work done twice);
- recover s: seconds from the end of the fault (worker killed, server or database back, space freed,
  LLM call started) to the job moving again, as the recovery column says (see RECOVERY);
- left behind: processes started by Poise (found by an environment marker every Poise process
  inherits, and by polling their process trees) still alive once the Poise processes have exited or
  been stopped as a user would; they are listed, then killed.
A scenario survives when the job succeeded with one version everywhere, nothing was lost or done
twice, nothing was left behind, and its own checks hold (listed as problems otherwise). A harness
failure is reported as such, never as a pass.

Run from the repository root (as root for disk_full's mount and postgres_restart's initdb):
    .venv/bin/python benchmarks/faults.py [--scenarios kill_worker,llm] [--time-limit 10]
        [--stale-after 5] [--outage 20] [--pg-outage 15] [--disk-mb 512] [--keep]
        [--out benchmarks/results/faults.json]
"""

import os
import sys
from pathlib import Path

# Before any library import (see benchmarks/imbalance.py): Poise's OpenMP policy, and the repository root on sys.path.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse
import contextlib
import errno
import importlib.util
import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import psutil

# This process reads and creates jobs through Poise's own modules with explicit settings: no POISE_* of the caller's
# environment may leak into them (nor into the subprocesses, which get their own).
for _name in [name for name in os.environ if name.startswith("POISE_")]:
    del os.environ[_name]

from mlflow import MlflowClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

from benchmarks.imbalance import machine_info  # noqa: E402
from poise.pipelines import runner  # noqa: E402
from poise.pipelines.settings import Settings  # noqa: E402
from poise.pipelines.training.graph import STEPS  # noqa: E402
from poise.registry.db import dispose_engine, session_scope  # noqa: E402
from poise.registry.models import Job, JobStep, LLMCall, ModelVersion  # noqa: E402

SCENARIOS = ("kill_worker", "kill_registering", "mlflow_fit", "mlflow_register", "postgres_restart", "llm_slow", "llm_down", "llm_garbage",
             "llm_invented", "disk_full", "worker_race", "serve_sigterm")
GROUPS = {"mlflow": ("mlflow_fit", "mlflow_register"), "llm": ("llm_slow", "llm_down", "llm_garbage", "llm_invented")}
PACKAGES = ("poise", "mlflow", "langgraph", "langgraph-checkpoint-sqlite", "sqlalchemy", "psycopg", "openai",
            "autogluon.tabular", "psutil")
POISE = str(Path(sys.executable).parent / "poise")
TARGET = "churned"
MARK = "POISE_FAULTS_MARK"  # every Poise process this suite starts (and what they start) carries it
FINAL = {"succeeded", "failed", "rejected", "cancelled", "interrupted", "awaiting_approval"}
LLM_TIMEOUT, LLM_SLOW_SECONDS = 3, 10
RECOVERY = {
    "kill_worker": "SIGKILL -> the other worker's first step of the job",
    "kill_registering": "SIGKILL -> the other worker's first step of the job",
    "mlflow_fit": "server answering again -> the job's next step event",
    "mlflow_register": "server answering again -> the job's next step event",
    "postgres_restart": "database up again -> the workers' first write for the job (heartbeat or step)",
    "llm_slow": "time lost in failing LLM calls (sum of their latency)",
    "llm_down": "time lost in failing LLM calls (sum of their latency)",
    "llm_garbage": "time lost in LLM calls that failed or were refused (sum of their latency)",
    "llm_invented": "time lost in LLM calls that failed or were refused (sum of their latency)",
    "disk_full": "space freed -> the job's next step event (after `poise resume` if it had failed)",
    "worker_race": "no fault to recover from",
    "serve_sigterm": "SIGTERM -> the last process of `poise serve` gone",
}


class NotRun(Exception):
    """The scenario cannot run on this machine; the message says exactly why."""


class HarnessStop(Exception):
    """Raised inside a polled condition to stop waiting at once (wait_until lets it through)."""


def raise_now(message: str):
    raise HarnessStop(message)


def now() -> datetime:
    return datetime.now(UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, what: str, every: float = 0.2):
    """Poll `condition` until it returns something truthy (returned); TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except HarnessStop:
            raise
        except Exception:  # noqa: BLE001 - a database or server that is down answers with errors while we wait
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)


def write_table(path: Path, rows: int = 600, seed: int = 0) -> Path:
    """A churn-like table with signal: ~10 % 'yes', numeric and categorical features."""
    rng = np.random.default_rng(seed)
    churned = rng.random(rows) < 0.1
    pd.DataFrame({
        "tenure_months": np.where(churned, rng.normal(6, 4, rows), rng.normal(36, 12, rows)).clip(0).round(1),
        "monthly_charges": np.where(churned, rng.normal(85, 15, rows), rng.normal(60, 20, rows)).round(2),
        "plan": np.where(rng.random(rows) < np.where(churned, 0.7, 0.25), "monthly", "yearly"),
        "region": rng.choice(["north", "south", "east", "west"], rows),
        TARGET: np.where(churned, "yes", "no"),
    }).to_csv(path, index=False)
    return path


# --- processes ---------------------------------------------------------------------------------------------------


class Proc:
    """A subprocess in its own session, its output in a log file of the scenario's folder."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], folder: Path):
        self.name, self.log = name, folder / f"{name}.log"
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder,
                                          start_new_session=True)
        self.pid = self.popen.pid

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float) -> str:
        def found():
            if self.popen.poll() is not None and text not in self.text():
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) before printing {text!r}: "
                                   f"{self.text()[-1500:]}")
            return next((line for line in self.text().splitlines() if text in line), None)

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = found()
            if line:
                return line
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: no line with {text!r} within {timeout:.0f}s: {self.text()[-1500:]}")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, timeout: float = 60) -> int | None:
        """SIGTERM to the process (as `kill PID` does), then wait; its group is SIGKILLed only on timeout."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            return None

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=30)


class ProcessWatch:
    """Every process started by the Poise processes of one scenario: those carrying the scenario's marker in their
    environment, and every descendant of the watched roots seen by polling (in case one dropped its environment)."""

    def __init__(self, mark: str):
        self.mark = mark
        self.roots: list[int] = []
        self.seen: dict[tuple[int, float], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-watch", daemon=True)
        self._thread.start()

    def add(self, proc: Proc) -> Proc:
        self.roots.append(proc.pid)
        return proc

    def _remember(self, process: psutil.Process) -> None:
        with contextlib.suppress(psutil.Error):
            key = (process.pid, process.create_time())
            if key not in self.seen:
                self.seen[key] = " ".join(process.cmdline())[:200] or process.name()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            for pid in list(self.roots):
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(pid)
                    self._remember(root)
                    for child in root.children(recursive=True):
                        self._remember(child)

    def marked(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.pid != os.getpid() and process.environ().get(MARK) == self.mark:
                    self._remember(process)
                    found.append(process)
        return found

    def alive(self) -> list[dict]:
        """The processes seen or marked that still run (zombies count as gone)."""
        self.marked()
        left = []
        for (pid, created), command in self.seen.items():
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                    left.append({"pid": pid, "command": command})
        return left

    def wait_all_gone(self, timeout: float) -> float | None:
        """Seconds until no watched process is left, or None when some are still there after `timeout`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self.alive():
                return time.monotonic() - start
            time.sleep(0.2)
        return None

    def left_behind(self, grace: float = 5.0) -> list[dict]:
        """After the Poise processes are gone: what still runs `grace` seconds later (then killed, by pid)."""
        self.wait_all_gone(grace)
        left = self.alive()
        for item in left:
            with contextlib.suppress(psutil.Error):
                psutil.Process(item["pid"]).kill()
        return left

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- the job database and the registry ---------------------------------------------------------------------------


def job_row(db_url: str, job_id: str) -> Job:
    with session_scope(db_url) as session:
        return session.get(Job, job_id)


def job_status(db_url: str, job_id: str) -> str | None:
    return job_row(db_url, job_id).status


def steps(db_url: str, job_id: str) -> list[JobStep]:
    with session_scope(db_url) as session:
        return list(session.scalars(select(JobStep).where(JobStep.job_id == job_id).order_by(JobStep.id)))


def first_step_event_after(db_url: str, job_id: str, moment: datetime) -> datetime | None:
    events = [t for step in steps(db_url, job_id) for t in (step.started_at, step.finished_at) if t and t > moment]
    return min(events) if events else None


def row_ids(db_url: str) -> dict[str, set]:
    with session_scope(db_url) as session:
        return {"jobs": set(session.scalars(select(Job.id))), "job_steps": set(session.scalars(select(JobStep.id))),
                "model_versions": set(session.scalars(select(ModelVersion.id)))}


def lost_rows(before: dict[str, set], after: dict[str, set]) -> dict[str, int]:
    return {table: len(ids - after[table]) for table, ids in before.items()}


def wait_final(db_url: str, job_id: str, timeout: float, on_poll=None) -> str:
    """Wait until the job leaves queued/running; its status. `on_poll` runs at every poll (errors ignored)."""
    def done():
        if on_poll is not None:
            with contextlib.suppress(Exception):
                on_poll()
        status = job_status(db_url, job_id)
        return status if status in FINAL else None

    return wait_until(done, timeout, f"job {job_id[:12]} finished", every=0.5)


def wait_fitting(settings: Settings, job_id: str, timeout: float) -> None:
    """Until AutoGluon has started writing models for the job's first fit (the fault then lands mid-fit)."""
    folder = settings.job_dir(job_id) / "autogluon" / "models"

    def fitting() -> bool:
        if folder.is_dir():
            return True
        status = job_status(settings.db_url, job_id)
        if status in FINAL:
            raise_now(f"the job ended {status} before AutoGluon fitted: {job_row(settings.db_url, job_id).error}")
        return False

    wait_until(fitting, timeout, "AutoGluon started fitting")


def registry_check(settings: Settings, name: str, job_id: str) -> dict:
    """The versions of `name` in MLflow's registry and in Poise's table, and every way they disagree."""
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    problems = []
    versions = client.search_model_versions(f"name = '{name}'")
    with session_scope(settings.db_url) as session:
        rows = list(session.scalars(select(ModelVersion).where(ModelVersion.registered_name == name)))
    mlflow_versions = sorted((str(v.version) for v in versions), key=int)
    poise_versions = sorted((row.version for row in rows), key=int)
    if mlflow_versions != poise_versions:
        problems.append(f"registry disagrees: MLflow {mlflow_versions}, Poise {poise_versions}")
    for version in versions:
        if version.status != "READY":
            problems.append(f"MLflow v{version.version} is {version.status}")
        if version.tags.get("poise.job_id") != job_id:
            problems.append(f"MLflow v{version.version} lacks the job's tag (tags: {sorted(version.tags)})")
    try:
        champion = str(client.get_model_version_by_alias(name, "champion").version)
    except Exception:  # noqa: BLE001 - no alias (or no model): MLflow raises
        champion = None
    promoted = [row.version for row in rows if row.promoted]
    if sorted(promoted) != ([champion] if champion else []):
        problems.append(f"champion alias {champion} but Poise promoted {promoted}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`poise.job_id` = '{job_id}'") if experiments else []
    if len(runs) != 1:
        problems.append(f"{len(runs)} MLflow runs for the job")
    return {"mlflow": mlflow_versions, "poise": poise_versions, "champion": champion, "runs": len(runs),
            "problems": problems}


def integrity(home: Path) -> dict[str, str]:
    checked = {}
    for name in ("poise.db", "checkpoints.sqlite", "mlflow.db"):
        path = home / name
        if path.exists():
            try:
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
                    checked[name] = connection.execute("PRAGMA integrity_check").fetchone()[0]
            except sqlite3.Error as error:
                checked[name] = f"error: {error}"
    return checked


# --- infrastructure the faults are injected into ------------------------------------------------------------------


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with one worker and no job runner, in its own process group, SQLite store."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.store = folder / "mlflow-server.db"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: Proc | None = None

    def start(self, timeout: float = 180) -> float:
        """Start it and wait until it answers /health; the seconds that took."""
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != MARK} | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = Proc("mlflow-server", [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.store}", "--default-artifact-root",
            (self.folder / "mlflow-server-artifacts").as_uri()], env, self.folder)
        def up() -> bool:
            if not self.proc.alive():
                raise_now(f"mlflow server exited ({self.proc.popen.returncode}): {self.proc.text()[-1500:]}")
            return self.healthy()

        wait_until(up, timeout, "mlflow server answering")
        return time.monotonic() - started

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            self.proc.kill_group()  # anything of its group still there
            self.proc = None

    def first_request_after_restart(self) -> str | None:
        """The first request the last started server answered (from its access log), e.g. a retried registration."""
        text = (self.folder / "mlflow-server.log").read_text(encoding="utf-8", errors="replace")
        last_start = text.rsplit("Uvicorn running", 1)[-1]
        line = next((line for line in last_start.splitlines() if '"POST ' in line or '"PATCH ' in line
                     or '"GET /api' in line), None)
        return None if line is None else line.split(" - ", 1)[-1].strip()

    def logged_models(self) -> int:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.store}?mode=ro", uri=True)) as connection:
                return connection.execute("SELECT count(*) FROM logged_models").fetchone()[0]
        except sqlite3.Error:
            return 0


class CuttingProxy:
    """An HTTP proxy on 127.0.0.1 in front of the MLflow server that stops answering (drops every connection
    unanswered) right after it forwarded a request whose path ends with `cut_after`, until `restore()`: a fault
    placed exactly between two registry calls, where polling for it would lose the race."""

    def __init__(self, upstream: str, cut_after: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.upstream, self.cut_after = upstream, cut_after
        self.cut = threading.Event()
        self.dropped = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.cut.is_set():
                    proxy.dropped += 1
                    self.close_connection = True
                    return  # closed without an answer: the client sees the server gone
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                request = urllib.request.Request(proxy.upstream + self.path, data=body or None, headers=headers,
                                                 method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=120) as answer:
                        status, answer_headers, payload = answer.status, answer.headers, answer.read()
                except urllib.error.HTTPError as error:
                    status, answer_headers, payload = error.code, error.headers, error.read()
                if self.command == "POST" and self.path.split("?")[0].endswith(proxy.cut_after):
                    proxy.cut.set()  # before answering: the client's next call finds the server gone
                self.send_response(status)
                for name, value in answer_headers.items():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mlflow-cutting-proxy", daemon=True)
        self._thread.start()

    def restore(self) -> None:
        self.cut_after = "\0never"
        self.cut.clear()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class PrivateCluster:
    """A PostgreSQL cluster of this suite's own (initdb on a free port, trust auth, 127.0.0.1 only)."""

    def __init__(self, folder: Path):
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not candidates:
            raise NotRun("no initdb under /usr/lib/postgresql/*/bin")
        self.bin = candidates[-1].parent
        self.folder, self.port = folder / "pg", free_port()
        self.data, self.logfile = self.folder / "data", self.folder / "server.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/poise"
        self.user = None
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
            try:
                import pwd

                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise NotRun("running as root and there is no `postgres` user to run initdb as") from None
            self.user = entry
        self.folder.mkdir(parents=True)
        if self.user is not None:
            for path in (folder, self.folder):  # the postgres user must reach its folder
                os.chmod(path, 0o755)
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self.user is not None else []
        env = {k: v for k, v in os.environ.items() if k != MARK}
        return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=self.folder)

    def init(self) -> None:
        done = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        if done.returncode != 0:
            raise NotRun(f"initdb failed: {(done.stderr or done.stdout).strip()[-500:]}")
        self.start()
        created = self._run(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                            "-c", "CREATE DATABASE poise")
        if created.returncode != 0:
            raise NotRun(f"CREATE DATABASE failed: {created.stderr.strip()[-500:]}")

    def start(self) -> float:
        started = time.monotonic()
        done = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-o",
                         f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder}",
                         "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stdout}{done.stderr}")
        return time.monotonic() - started

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


def llm_server_module():
    """tests/llm_server.py, loaded by path as tests/conftest.py does."""
    name = "poise_tests_llm_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "llm_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


INVENTED = "The model reached a macro-F1 of 0.991 with minority recall 0.987; it is registered and serving."
GARBAGE = {  # what each call gets, by purpose, in turn: protocol garbage, and replies that make things up
    "garbage": {"plan": ("not JSON", "unknown tool"), "review": ("no choices", "broken tool arguments"),
                "summary": ("not JSON", "invented numbers")},
    "invented": {"plan": ("invented results", "unknown tool"), "review": ("broken tool arguments", "no choices"),
                 "summary": ("invented numbers", "not JSON")},
}


def faulty_llm_server(mode: str):
    """The scripted server of tests/llm_server.py answering every request the faulty way `mode` says."""
    module = llm_server_module()

    def purpose(request: dict) -> str:
        names = {tool.get("function", {}).get("name") for tool in request.get("tools") or []}
        return "summary" if not names else "plan" if {"propose_plan", "start_job"} & names else "review"

    class FaultyServer(module.ScriptedLLMServer):
        def __init__(self) -> None:
            super().__init__()
            self.served: list[tuple[str, str]] = []
            self._counts: Counter = Counter()

        def _next_step(self, request: dict):
            with self._lock:
                self.requests.append(request)
                kind_of = purpose(request)
                if mode == "slow":
                    kind = f"reply after {LLM_SLOW_SECONDS}s"
                    step = module._Step(LLM_SLOW_SECONDS, lambda r: self._completion(r, {"content": "no change"}))
                else:
                    kinds = GARBAGE[mode][kind_of]
                    kind = kinds[self._counts[kind_of] % len(kinds)]
                    step = module._Step(0.0, self._garbage(kind))
                self._counts[kind_of] += 1
                self.served.append((kind_of, kind))
                return step

        def _garbage(self, kind: str):
            if kind == "not JSON":
                return lambda r: (200, {"Content-Type": "application/json"}, b"<html>502 bad gateway</html>")
            if kind == "no choices":
                return lambda r: module._json_answer({"id": "x", "object": "chat.completion", "choices": []})
            if kind == "broken tool arguments":
                return lambda r: self._completion(r, {"tool_calls": [module.tool_call("amend_plan", '{"drop_col')]})
            if kind == "unknown tool":
                return lambda r: self._completion(r, {"tool_calls": [module.tool_call("delete_model", {"name": "*"})]})
            return lambda r: self._completion(r, {"content": INVENTED})

    return FaultyServer()


# --- one scenario --------------------------------------------------------------------------------------------------


class Scenario:
    """What every scenario shares: a folder, a Poise home, a marker for its processes, and the figures."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name, self.args = name, args
        self.folder = Path(tempfile.mkdtemp(prefix=f"poise-faults-{name}-"))
        self.home = self.folder / "home"
        self.mark = f"{name}-{uuid.uuid4().hex[:12]}"
        self.watch = ProcessWatch(self.mark)
        self.procs: list[Proc] = []
        self.cleanups: list = []
        self.data = write_table(self.folder / "customers.csv")
        self.model = f"faults-{name.replace('_', '-')}"
        self.row: dict = {"scenario": name, "recovery_measured": RECOVERY[name], "problems": [], "notes": []}
        self.settings = Settings(home=self.home)

    def configure(self, **values) -> Settings:
        self.settings = Settings(home=self.home, **values)
        return self.settings

    def env(self, **extra) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POISE_")}
        env |= {"POISE_HOME": str(self.home), "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                "OMP_WAIT_POLICY": "PASSIVE", MARK: self.mark}
        if self.settings.database_url:
            env["POISE_DATABASE_URL"] = self.settings.database_url
        if self.settings.mlflow_tracking_uri:
            env["POISE_MLFLOW_TRACKING_URI"] = self.settings.mlflow_tracking_uri
        return env | {k: str(v) for k, v in extra.items()}

    def start(self, name: str, *command: str, env: dict[str, str] | None = None) -> Proc:
        proc = self.watch.add(Proc(name, [POISE, *command], env or self.env(), self.folder))
        self.procs.append(proc)
        return proc

    def worker(self, name: str) -> Proc:
        return self.start(name, "worker", "--poll-seconds", "0.5", "--heartbeat-seconds", "1",
                          "--stale-after", str(self.args.stale_after))

    def create_job(self) -> str:
        spec = runner.make_spec(self.data, TARGET, self.settings, name=self.model, time_limit=self.args.time_limit)
        job_id = runner.create_job(spec, self.settings)
        self.row["job_id"] = job_id
        self.t_created = time.monotonic()
        return job_id

    def snapshot(self) -> None:
        self.before = row_ids(self.settings.db_url)

    def finish(self, job_id: str | None, status: str | None) -> dict:
        """Stop what is still running as a user would, then record the figures every scenario reports."""
        for proc in self.procs:
            if proc.alive():
                proc.terminate(timeout=90)
        left = self.watch.left_behind()
        row = self.row
        row["processes_watched"], row["left_behind"] = len(self.watch.seen), len(left)
        if left:
            row["left_behind_processes"] = left
            row["problems"].append(f"{len(left)} process(es) left behind")
        row["final_state"] = status
        if status != "succeeded":
            row["problems"].append(f"job ended {status}")
        if job_id is None:
            return row
        job = job_row(self.settings.db_url, job_id)
        row["model_name"], row["attempts"], row["error"] = job.name, job.attempts, job.error
        ran = Counter(step.node for step in steps(self.settings.db_url, job_id) if step.status == "succeeded")
        row["duplicate_steps"] = {node: count for node, count in ran.items() if count > 1}
        if row["duplicate_steps"]:
            row["problems"].append(f"steps done twice: {row['duplicate_steps']}")
        if status == "succeeded":  # every node of a finished job ran: each must be on record as done
            unrecorded = [step.name for step in STEPS if step.name not in ran]
            if unrecorded:
                row["problems"].append(f"no succeeded record of step(s) {unrecorded} in the finished job")
        row["steps"] = [f"{step.node}:{step.status}" for step in steps(self.settings.db_url, job_id)]
        row["steps_detail"] = [
            {"node": step.node, "status": step.status, "message": (step.message or "")[:200],
             "start_s": seconds_between(job.created_at, step.started_at),
             "end_s": seconds_between(job.created_at, step.finished_at)}
            for step in steps(self.settings.db_url, job_id)]
        registry = registry_check(self.settings, job.name, job_id)
        row["versions"] = {"mlflow": registry["mlflow"], "poise": registry["poise"], "champion": registry["champion"],
                           "mlflow_runs": registry["runs"]}
        row["problems"] += registry["problems"]
        if status == "succeeded" and registry["mlflow"] != ["1"]:
            row["problems"].append(f"versions registered: {registry['mlflow']} (want exactly ['1'])")
        if status != "succeeded" and registry["mlflow"] not in ([], ["1"]):
            row["problems"].append(f"versions registered: {registry['mlflow']}")
        if hasattr(self, "before"):
            row["lost_rows"] = lost_rows(self.before, row_ids(self.settings.db_url))
            if any(row["lost_rows"].values()):
                row["problems"].append(f"rows lost: {row['lost_rows']}")
        row["sqlite_integrity"] = integrity(self.home)
        bad = {name: value for name, value in row["sqlite_integrity"].items() if value != "ok"}
        if bad:
            row["problems"].append(f"SQLite integrity: {bad}")
        return row

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.kill_group()
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        self.watch.close()
        dispose_engine(self.settings.db_url)
        if not self.args.keep:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            self.row["folder"] = str(self.folder)


def pid_of(worker_id: str) -> int:
    """The pid inside a worker id `host:pid:random`."""
    return int(worker_id.rsplit(":", 2)[1])


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 1)


def run_kill_worker(s: Scenario) -> dict:
    s.row["fault"] = "SIGKILL of the worker running the job, mid-fit; a second worker is running"
    workers = [s.worker("worker-a"), s.worker("worker-b")]
    for proc in workers:
        proc.wait_for(" serving ", 120)
    job_id = s.create_job()
    wait_fitting(s.settings, job_id, s.args.timeout)
    time.sleep(1.0)
    first = job_row(s.settings.db_url, job_id).worker_id
    victim = next(proc for proc in workers if proc.pid == pid_of(first))
    s.snapshot()
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = now()
    victim.popen.wait(timeout=30)
    status = wait_final(s.settings.db_url, job_id, s.args.timeout)
    job = job_row(s.settings.db_url, job_id)
    resumed = first_step_event_after(s.settings.db_url, job_id, killed_at)
    s.row["recover_s"] = seconds_between(killed_at, resumed)
    s.row["notes"].append(f"the killed worker's job was finished by {'the other' if job.worker_id != first else 'the same'} "
                          f"worker on attempt {job.attempts}")
    if job.worker_id == first:
        s.row["problems"].append("the killed worker still owns the job")
    return s.finish(job_id, status)


def run_mlflow(s: Scenario, during: str) -> dict:
    s.row["fault"] = (f"MLflow tracking server stopped {'while AutoGluon fits' if during == 'fit' else 'while the model is logged and registered'}, "
                      f"down {s.args.outage}s, started again")
    server = MlflowServer(s.folder)
    s.cleanups.append(server.stop)
    first_start = server.start()
    s.configure(mlflow_tracking_uri=server.uri)
    s.worker("worker").wait_for(" serving ", 120)
    job_id = s.create_job()
    if during == "fit":
        wait_fitting(s.settings, job_id, s.args.timeout)
        time.sleep(1.0)
    else:
        wait_until(lambda: server.logged_models() > 0, s.args.timeout, "the job's model being logged", every=0.05)
    s.snapshot()
    s.row["fault_at_step"] = next((f"{st.node}:{st.status}" for st in reversed(steps(s.settings.db_url, job_id))), None)
    server.stop()
    time.sleep(s.args.outage)
    restart = server.start()
    back_at = now()
    s.row["notes"].append(f"server start {first_start:.1f}s, restart {restart:.1f}s (down {s.args.outage}s + restart)")
    status = wait_final(s.settings.db_url, job_id, s.args.timeout)
    s.row["recover_s"] = seconds_between(back_at, first_step_event_after(s.settings.db_url, job_id, back_at))
    s.row["notes"].append(f"first request the restarted server answered: {server.first_request_after_restart()} "
                          "(the MLflow client retries with exponential backoff: 7 retries, factor 2)")
    return s.finish(job_id, status)


def run_kill_registering(s: Scenario) -> dict:
    s.row["fault"] = ("SIGKILL of the worker right after MLflow created the model version (MLflow unreachable from "
                      "that moment, through a proxy); a second worker is running")
    server = MlflowServer(s.folder)
    s.cleanups.append(server.stop)
    server.start()
    proxy = CuttingProxy(server.uri, "/model-versions/create")
    s.cleanups.append(proxy.close)
    s.configure(mlflow_tracking_uri=proxy.uri)
    workers = [s.worker("worker-a"), s.worker("worker-b")]
    for proc in workers:
        proc.wait_for(" serving ", 120)
    job_id = s.create_job()
    wait_until(proxy.cut.is_set, s.args.timeout, "MLflow created the model version", every=0.05)
    time.sleep(1.0)  # the worker is now retrying its next registry call against a server it cannot reach
    s.snapshot()
    upstream = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    created = upstream.search_model_versions(f"name = '{s.model}'")
    s.row["at_kill"] = [{"version": str(v.version), "job_tag": v.tags.get("poise.job_id")} for v in created]
    first = job_row(s.settings.db_url, job_id).worker_id
    victim = next(proc for proc in workers if proc.pid == pid_of(first))
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = now()
    victim.popen.wait(timeout=30)
    proxy.restore()
    s.row["notes"].append(f"at the kill MLflow had {s.row['at_kill']}; the proxy dropped {proxy.dropped} call(s)")
    status = wait_final(s.settings.db_url, job_id, s.args.timeout)
    s.row["recover_s"] = seconds_between(killed_at, first_step_event_after(s.settings.db_url, job_id, killed_at))
    return s.finish(job_id, status)


def run_postgres_restart(s: Scenario) -> dict:
    s.row["fault"] = f"private PostgreSQL (job database) stopped -m fast mid-fit, down {s.args.pg_outage}s, started"
    cluster = PrivateCluster(s.folder)
    s.cleanups.append(lambda: cluster.stop("immediate"))
    cluster.init()
    s.configure(database_url=cluster.url)
    s.row["notes"].append(f"PostgreSQL {cluster.bin.parent.name} cluster on 127.0.0.1:{cluster.port}, "
                          f"run as {'postgres' if cluster.user else 'this user'}; two workers")
    for name in ("worker-a", "worker-b"):
        s.worker(name).wait_for(" serving ", 120)
    job_id = s.create_job()
    wait_fitting(s.settings, job_id, s.args.timeout)
    time.sleep(1.0)
    s.snapshot()
    first = job_row(s.settings.db_url, job_id).worker_id
    cluster.stop("fast")
    time.sleep(s.args.pg_outage)
    cluster.start()
    back_at = now()
    first_beat: list[datetime] = []

    def heartbeat_seen() -> None:
        beat = job_row(s.settings.db_url, job_id).heartbeat_at
        if not first_beat and beat is not None and beat > back_at:
            first_beat.append(beat)

    status = wait_final(s.settings.db_url, job_id, s.args.timeout, on_poll=heartbeat_seen)
    writes = [t for t in (*first_beat, first_step_event_after(s.settings.db_url, job_id, back_at)) if t]
    s.row["recover_s"] = seconds_between(back_at, min(writes) if writes else None)
    job = job_row(s.settings.db_url, job_id)
    s.row["notes"].append(f"claimed by {'the same' if job.worker_id == first else 'another'} worker at the end, "
                          f"attempt {job.attempts}")
    return s.finish(job_id, status)


def run_llm(s: Scenario, mode: str) -> dict:
    faults = {"slow": f"every call answered after {LLM_SLOW_SECONDS}s (client timeout {LLM_TIMEOUT}s, 1 retry)",
              "down": "nothing listening at the endpoint",
              **{name: "per call, in turn: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in kinds.items())
                 for name, kinds in GARBAGE.items()}}
    s.row["fault"] = f"LLM endpoint {mode}: {faults[mode]}"
    server = None
    if mode == "down":
        base_url = f"http://127.0.0.1:{free_port()}/v1"
    else:
        server = faulty_llm_server(mode)
        s.cleanups.append(server.close)
        base_url = server.base_url
    s.settings.ensure_home()
    s.snapshot()
    message = f"train a model on {s.data} to predict {TARGET} with a time budget of {s.args.time_limit} seconds"
    chat = s.start("chat", "chat", "-m", message, "--yes", env=s.env(
        POISE_LLM_MODEL="scripted", POISE_LLM_BASE_URL=base_url, POISE_LLM_TIMEOUT=LLM_TIMEOUT,
        POISE_LLM_MAX_RETRIES=1, POISE_LLM_API_KEY="not-a-key"))
    try:
        code = chat.popen.wait(timeout=s.args.timeout)
    except subprocess.TimeoutExpired:
        code = None
        s.row["problems"].append(f"`poise chat` still running after {s.args.timeout}s")
    output = chat.text()
    s.row["chat_exit_code"] = code
    s.row["chat_output_tail"] = output[-1500:]
    with session_scope(s.settings.db_url) as session:
        job_ids = list(session.scalars(select(Job.id).order_by(Job.created_at)))
        calls = [(c.purpose, c.outcome, c.latency_ms) for c in session.scalars(select(LLMCall).order_by(LLMCall.id))]
    s.row["llm_calls"] = [f"{purpose}:{outcome}:{latency / 1000:.1f}s" for purpose, outcome, latency in calls]
    if server is not None:
        s.row["llm_served"] = [f"{purpose}: {kind}" for purpose, kind in server.served]
    s.row["recover_s"] = round(sum(latency for _, outcome, latency in calls if outcome != "ok") / 1000, 1)
    if "fell back" not in output:
        s.row["problems"].append("the chat did not say the LLM planner fell back")
    if "0.991" in output or "0.987" in output:
        s.row["problems"].append("the invented numbers reached the user")
    unused = [purpose for purpose, outcome, _ in calls if outcome == "ok"]
    if unused:  # the trace is not what survival is judged on; said as a note
        s.row["notes"].append(f"trace: {len(unused)} call(s) answered by the faulty endpoint recorded with outcome ok, "
                              f"not fault ({', '.join(unused)})")
    if len(job_ids) != 1:
        s.row["problems"].append(f"{len(job_ids)} jobs created (want 1)")
        return s.finish(None, f"{len(job_ids)} jobs")
    return s.finish(job_ids[0], job_status(s.settings.db_url, job_ids[0]))


def fill(path: Path) -> int:
    """Write `path` until the file system is full (ENOSPC); the bytes written."""
    written = 0
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            chunk = b"\0" * size
            while True:
                try:
                    written += os.write(descriptor, chunk)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(descriptor)
    return written


def run_disk_full(s: Scenario) -> dict:
    s.row["fault"] = f"POISE_HOME on a {s.args.disk_mb} MB tmpfs filled to 0 bytes free mid-fit, then freed"
    s.home.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={s.args.disk_mb}m,mode=0755", "tmpfs", str(s.home)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        raise NotRun(f"cannot mount a tmpfs ({mounted.stderr.strip() or mounted.returncode}); no other way to fill "
                     "only POISE_HOME's file system was tried")
    s.cleanups.append(lambda: subprocess.run(["umount", "-l", str(s.home)], capture_output=True))
    s.row["notes"].append("disk: tmpfs mounted as POISE_HOME (job database, checkpoints, MLflow store, job files)")
    s.worker("worker").wait_for(" serving ", 120)
    job_id = s.create_job()
    wait_fitting(s.settings, job_id, s.args.timeout)
    time.sleep(0.5)
    s.snapshot()
    ballast = s.home / "ballast"
    size = fill(ballast)
    s.row["fault_at_step"] = next((f"{st.node}:{st.status}" for st in reversed(steps(s.settings.db_url, job_id))), None)
    s.row["notes"].append(f"ballast {size / 2**20:.0f} MB; free after filling: {shutil.disk_usage(s.home).free} bytes")

    def settled() -> bool:  # the job ended, or nothing about it changed for 30 s
        state = (job_status(s.settings.db_url, job_id), len(steps(s.settings.db_url, job_id)),
                 [st.status for st in steps(s.settings.db_url, job_id)])
        if state[0] in FINAL:
            return True
        if state != getattr(settled, "last", None):
            settled.last, settled.since = state, time.monotonic()
        return time.monotonic() - settled.since > 30

    with contextlib.suppress(TimeoutError):
        wait_until(settled, 300, "the job ended or stalled on the full disk", every=1.0)
    held_status = job_status(s.settings.db_url, job_id)
    s.row["status_while_full"] = held_status
    ballast.unlink()
    freed_at = now()
    if held_status == "failed":
        s.row["notes"].append("the job failed on the full disk; ran `poise resume` after freeing space")
        resume = s.start("resume", "resume", job_id)
        resume.popen.wait(timeout=s.args.timeout)
        s.row["resume_exit_code"] = resume.popen.returncode
    status = wait_final(s.settings.db_url, job_id, s.args.timeout)
    s.row["recover_s"] = seconds_between(freed_at, first_step_event_after(s.settings.db_url, job_id, freed_at))
    return s.finish(job_id, status)


def run_worker_race(s: Scenario) -> dict:
    s.row["fault"] = "two idle workers polling every 0.5 s; one job queued"
    workers = [s.worker("worker-a"), s.worker("worker-b")]
    for proc in workers:
        proc.wait_for(" serving ", 120)
    s.settings.ensure_home()
    s.snapshot()
    job_id = s.create_job()
    status = wait_final(s.settings.db_url, job_id, s.args.timeout)
    reporters = [proc.name for proc in workers if f"job {job_id}" in proc.text()]
    loads = sum(1 for step in steps(s.settings.db_url, job_id) if step.node == "load")
    job = job_row(s.settings.db_url, job_id)
    s.row["recover_s"] = None
    s.row["notes"].append(f"ran by {reporters}, attempts {job.attempts}, load steps {loads}")
    if len(reporters) != 1 or job.attempts != 1 or loads != 1:
        s.row["problems"].append(f"not exactly one run: workers {reporters}, attempts {job.attempts}, loads {loads}")
    return s.finish(job_id, status)


def run_serve_sigterm(s: Scenario) -> dict:
    s.row["fault"] = ("SIGTERM to `poise serve --workers 1 --mlflow-ui` while its worker fits, the worker paused "
                      "(SIGSTOP) so that its job outlasts serve's 15 s grace; serve started again")
    s.settings.ensure_home()
    port, mlflow_port = free_port(), free_port()

    def answering(url: str, proc: Proc):
        def check() -> bool:
            if not proc.alive():
                raise_now(f"{proc.name} exited ({proc.popen.returncode}): {proc.text()[-1500:]}")
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.status == 200
        return check

    def serve(name: str, *extra: str) -> Proc:
        proc = s.start(name, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *extra)
        wait_until(answering(f"http://127.0.0.1:{port}/healthz", proc), 240, f"{name} answering /healthz", every=0.5)
        return proc

    first = serve("serve-1", "--mlflow-ui", "--mlflow-port", str(mlflow_port))
    wait_until(answering(f"http://127.0.0.1:{mlflow_port}/health", first), 240, "the MLflow UI answering", every=0.5)
    job_id = s.create_job()
    wait_fitting(s.settings, job_id, s.args.timeout)
    s.snapshot()
    tree = [p.pid for p in psutil.Process(first.pid).children(recursive=True)]
    s.row["notes"].append(f"serve had {len(tree)} descendant process(es) at SIGTERM")
    os.kill(pid_of(job_row(s.settings.db_url, job_id).worker_id), signal.SIGSTOP)  # as a fit too long to wait for
    os.kill(first.pid, signal.SIGTERM)
    sent = time.monotonic()
    try:
        first.popen.wait(timeout=120)
        s.row["notes"].append(f"serve exited {first.popen.returncode} after {time.monotonic() - sent:.1f}s")
    except subprocess.TimeoutExpired:
        s.row["problems"].append("`poise serve` did not exit within 120 s of SIGTERM")
    gone = s.watch.wait_all_gone(60)
    s.row["recover_s"] = None if gone is None else round(time.monotonic() - sent, 1)
    left = s.watch.left_behind(grace=0)
    if left:
        s.row["problems"].append(f"{len(left)} process(es) left after the first SIGTERM")
        s.row["left_after_first_sigterm"] = left
    after = s.row["status_after_sigterm"] = job_status(s.settings.db_url, job_id)
    if after in FINAL:
        s.row["notes"].append(f"the job was {after} when serve stopped: its worker finished it within serve's grace "
                              "period (a worker's first SIGTERM lets the current job end)")
    restarted_at = time.monotonic()
    second = serve("serve-2")
    status = wait_final(s.settings.db_url, job_id, s.args.timeout)
    if after not in FINAL:
        s.row["notes"].append(f"the job was {after} when serve stopped; the restarted serve's worker finished it "
                              f"{time.monotonic() - restarted_at:.0f}s after the restart (a dead worker's job is "
                              "queued again after the default --stale-after 30 s)")
    os.kill(second.pid, signal.SIGTERM)
    sent = time.monotonic()
    with contextlib.suppress(subprocess.TimeoutExpired):
        second.popen.wait(timeout=120)
    idle_gone = s.watch.wait_all_gone(60)
    s.row["notes"].append(f"idle serve: all gone {idle_gone and round(time.monotonic() - sent, 1)}s after SIGTERM")
    return s.finish(job_id, status)


RUNNERS = {
    "kill_worker": run_kill_worker,
    "kill_registering": run_kill_registering,
    "mlflow_fit": lambda s: run_mlflow(s, "fit"),
    "mlflow_register": lambda s: run_mlflow(s, "register"),
    "postgres_restart": run_postgres_restart,
    "llm_slow": lambda s: run_llm(s, "slow"),
    "llm_down": lambda s: run_llm(s, "down"),
    "llm_garbage": lambda s: run_llm(s, "garbage"),
    "llm_invented": lambda s: run_llm(s, "invented"),
    "disk_full": run_disk_full,
    "worker_race": run_worker_race,
    "serve_sigterm": run_serve_sigterm,
}


def run_scenario(name: str, args: argparse.Namespace) -> dict:
    scenario = Scenario(name, args)
    started = time.monotonic()
    try:
        row = RUNNERS[name](scenario)
        row["outcome"] = "survived" if not row["problems"] else "FAILED"
    except NotRun as reason:
        row = scenario.row | {"outcome": "not run", "not_run_reason": str(reason)}
    except Exception as error:  # noqa: BLE001 - a harness failure is a result too, never a pass
        row = scenario.row | {"outcome": "harness error", "error": f"{type(error).__name__}: {error}"[:3000]}
        row["problems"].append(f"harness error: {type(error).__name__}: {error}"[:500])
        with contextlib.suppress(Exception):
            row["left_behind"] = len(scenario.watch.left_behind())
    finally:
        scenario.close()
    row["seconds"] = round(time.monotonic() - started, 1)
    return row


# --- report --------------------------------------------------------------------------------------------------------


def versions_text(row: dict) -> str:
    versions = row.get("versions")
    if not versions:
        return "—"
    same = versions["mlflow"] == versions["poise"]
    return f"{','.join(versions['mlflow']) or 'none'}" + (" both" if same else f" / Poise {','.join(versions['poise']) or 'none'}")


def table(rows: list[dict]) -> str:
    header = ("scenario", "final state", "versions (MLflow=Poise)", "lost rows", "dup steps", "recover s", "left behind",
              "outcome")
    lines = []
    for row in rows:
        lost = row.get("lost_rows")
        lines.append((
            row["scenario"],
            str(row.get("final_state", "—")),
            versions_text(row),
            "—" if lost is None else str(sum(lost.values())),
            "—" if "duplicate_steps" not in row else str(sum(c - 1 for c in row["duplicate_steps"].values())),
            "—" if row.get("recover_s") is None else f"{row['recover_s']:.1f}",
            str(row.get("left_behind", "—")),
            row["outcome"],
        ))
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    render = ["| " + " | ".join(str(x).ljust(w) for x, w in zip(line, widths)) + " |" for line in [header, *lines]]
    render.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(render)


def print_report(rows: list[dict]) -> None:
    print("\n" + table(rows))
    print("\nrecover s, per scenario:")
    for row in rows:
        print(f"  {row['scenario']}: {row['recovery_measured']}")
    for row in rows:
        print(f"\n{row['scenario']} ({row['outcome']}, {row['seconds']}s): {row.get('fault', '')}")
        if row.get("not_run_reason"):
            print(f"  not run: {row['not_run_reason']}")
        for note in row["notes"]:
            print(f"  note: {note}")
        for problem in row["problems"]:
            print(f"  PROBLEM: {problem}")
        if row.get("steps"):
            print(f"  steps: {' '.join(row['steps'])}")
        if row.get("llm_calls"):
            print(f"  LLM calls (purpose:outcome:latency): {' '.join(row['llm_calls'])}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma list of {', '.join(SCENARIOS)} or the groups {', '.join(GROUPS)}")
    parser.add_argument("--time-limit", type=int, default=10, help="AutoGluon time budget of each job, seconds")
    parser.add_argument("--stale-after", type=float, default=5.0, help="workers' --stale-after, seconds")
    parser.add_argument("--outage", type=int, default=20, help="seconds the MLflow server stays down")
    parser.add_argument("--pg-outage", type=int, default=15, help="seconds PostgreSQL stays down")
    parser.add_argument("--disk-mb", type=int, default=512, help="size of the tmpfs POISE_HOME for disk_full")
    parser.add_argument("--timeout", type=float, default=900, help="longest wait for one job, seconds")
    parser.add_argument("--keep", action="store_true", help="keep each scenario's folder (logs, home)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults.json")
    args = parser.parse_args()
    requested = [name for item in args.scenarios.split(",") if item for name in GROUPS.get(item, (item,))]
    unknown = sorted(set(requested) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios: {unknown}")
    args.scenarios = [name for name in SCENARIOS if name in requested]
    return args


def main() -> None:
    args = parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {"scenarios": args.scenarios, "time_limit_seconds": args.time_limit,
                   "worker_stale_after_seconds": args.stale_after, "worker_heartbeat_seconds": 1.0,
                   "mlflow_outage_seconds": args.outage, "postgres_outage_seconds": args.pg_outage,
                   "disk_mb": args.disk_mb, "llm_timeout_seconds": LLM_TIMEOUT, "llm_slow_seconds": LLM_SLOW_SECONDS,
                   "table": "600 generated rows, ~10 % minority", "recovery_measured": RECOVERY},
        "machine": machine_info(PACKAGES),
        "scenarios": [],
    }
    for name in args.scenarios:
        print(f"== {name}", flush=True)
        row = run_scenario(name, args)
        report["scenarios"].append(row)
        args.out.write_text(json.dumps(report, indent=2, default=str))  # partial results survive a crash
        print(f"   {row['outcome']} in {row['seconds']}s: final {row.get('final_state')}, "
              f"recover {row.get('recover_s')}s, left behind {row.get('left_behind')}; "
              f"{'; '.join(row['problems']) or 'no problems'}", flush=True)
    report["summary"] = {
        "survived": [r["scenario"] for r in report["scenarios"] if r["outcome"] == "survived"],
        "failed": [r["scenario"] for r in report["scenarios"] if r["outcome"] in ("FAILED", "harness error")],
        "not_run": {r["scenario"]: r.get("not_run_reason") for r in report["scenarios"] if r["outcome"] == "not run"},
    }
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print_report(report["scenarios"])
    print(f"\nJSON written to {args.out}")


if __name__ == "__main__":
    main()
