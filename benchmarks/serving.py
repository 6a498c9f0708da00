"""How fast does Poise serve a champion, compared with `mlflow models serve`? And does its API hold up
to a schema-driven fuzzer?

Setup: a temporary Poise home; one model trained on the demo table (`hypothyroid`, target
`diagnosis`) with `runner.train(..., time_limit=...)`, which registers it and sets the `champion`
alias when it passes the gate. Request payloads come from that job's holdout (target dropped,
`serving_frame` applied): 1 row and 1,000 rows (sampled with replacement when the holdout is smaller).

Three ways to predict, each for 1-row and 1,000-row requests, one client, sequential, warmed first:

- `in_process`: `ModelServer(settings).predict(name, frame)` in this process;
- `poise_api`: `create_app(settings)` under uvicorn (as `poise serve` runs it: log level warning) in a
  subprocess on 127.0.0.1, `POST /api/v1/models/{name}/predict` with `{"records": [...]}`, an API key
  with the `predict` scope, `httpx.Client` with keep-alive;
- `mlflow_serve`: `mlflow models serve -m models:/NAME@champion --env-manager local --workers 1` in its
  own session, `POST /invocations` with `{"dataframe_records": [...]}`.

Per method and size: p50 and p99 latency (ms) and throughput (rows/s over the whole loop). The API's
extra work per request is measured piece by piece in this process: the API-key check (from the database,
and from the few-seconds memory of verified keys that most requests hit), the prediction log (the bulk
INSERT its writer thread does, and the enqueue the request does) and the body parsing, so the table says
what dominates the API's overhead. `ModelServer`'s serving path for the model is recorded too.

Targets: p50 single row of the API ≤ 0.5 × `mlflow models serve`; API overhead over in-process
(p50 API − p50 in-process, 1 row) ≤ 2 ms.

Then Schemathesis fuzzes the live API from its `/openapi.json` with an admin key (`not_a_server_error`
and by default a few more checks; only server errors are counted as bugs here), and every 5xx is
reported with the request that caused it and the server's traceback.

Run from the repository root:
    .venv/bin/python benchmarks/serving.py [--time-limit 20] [--n-small 200] [--n-large 30]
        [--loop-seconds 60] [--fuzz-examples 20] [--fuzz-seconds 240] [--no-fuzz]
        [--out benchmarks/results/serving.json]
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before LightGBM loads (see shared notes)
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # run as a script: the repository, not benchmarks/, comes first

import argparse
import importlib.metadata
import json
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import numpy as np
import pandas as pd

from poise.agents.deployment.serving import ModelServer
from poise.agents.deployment.signature import serving_frame
from poise.pipelines import runner
from poise.pipelines.api.prediction_log import PredictionLog, log_now
from poise.pipelines.api.routes.models import _json_records
from poise.pipelines.demo import DEMO_TARGET, write_demo_table
from poise.pipelines.settings import Settings
from poise.registry import keys

MODEL_NAME = "bench-serving"
PINNED = ["numpy", "pandas", "scikit-learn", "pyarrow", "fastapi", "starlette", "uvicorn", "pydantic", "mlflow",
          "autogluon.tabular", "httpx", "schemathesis", "hypothesis"]


# ---------------------------------------------------------------------------------------------- helpers

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def records_of(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe records: NaN becomes null, numpy scalars become Python ones."""
    return json.loads(frame.to_json(orient="records"))


def summarize(latencies: list[float], rows: int, wall: float) -> dict:
    ms = np.asarray(latencies) * 1000
    return {"requests": len(ms), "rows_per_request": rows,
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3), "min_ms": round(float(ms.min()), 3),
            "rows_per_s": round(rows * len(ms) / wall, 1), "wall_s": round(wall, 2)}


def measure(call, n: int, cap_seconds: float, warmup: int = 3) -> tuple[list[float], float]:
    """Latencies of up to `n` sequential calls (stopping after `cap_seconds`), after `warmup` calls."""
    for _ in range(warmup):
        call()
    latencies = []
    start = time.perf_counter()
    while len(latencies) < n and time.perf_counter() - start < cap_seconds:
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - start


class Service:
    """A subprocess in its own session (process group), logging to a file; stopped as a group."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path, cwd: Path):
        self.name, self.log_path = name, log_path
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, url: str, timeout: float) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.log.close()


# ---------------------------------------------------------------------------------------------- the API server

def serve_api(home: str, port: int) -> None:
    """`create_app` under uvicorn as `poise serve` runs it, plus a `server-timing` header on request.

    The header is added only when the request carries `x-bench-timing`; the timers themselves always run
    (a few `perf_counter` calls per request). Parts: `auth` (API-key check), `parse` (body to frame),
    `predict` (ModelServer.predict), `log` (queueing the rows for the prediction-log writer), `app` (whole
    app until the response starts, including middleware, thread hops and the response).
    """
    import contextvars

    import uvicorn

    from poise.pipelines.api import deps
    from poise.pipelines.api.main import create_app
    from poise.pipelines.api import prediction_log as log_module
    from poise.pipelines.api.routes import models as routes

    timings: contextvars.ContextVar = contextvars.ContextVar("bench_timings", default=None)

    def add(name: str, seconds: float) -> None:
        parts = timings.get()
        if parts is not None:  # the dict is shared by the threads and tasks of one request
            parts[name] = parts.get(name, 0.0) + seconds

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                add(name, time.perf_counter() - started)
        return wrapper

    def timed_async(name, fn):
        async def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                add(name, time.perf_counter() - started)
        return wrapper

    deps.recently_verified = timed("auth", deps.recently_verified)  # the check's fast path
    deps.authorize = timed("auth", deps.authorize)  # pipelines.access.authorize, as the API's check calls it
    routes._records = timed_async("parse", routes._records)
    log_module.PredictionLog.add = timed("log", log_module.PredictionLog.add)
    app = create_app(Settings(home=Path(home)))
    app.state.model_server.predict = timed("predict", app.state.model_server.predict)
    app.state.model_server.predict_records = timed("predict", app.state.model_server.predict_records)

    async def outer(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        parts: dict[str, float] = {}
        token = timings.set(parts)
        wanted = any(name == b"x-bench-timing" for name, _ in scope["headers"])
        started = time.perf_counter()

        async def timed_send(message):
            if wanted and message["type"] == "http.response.start":
                parts["app"] = time.perf_counter() - started
                value = ", ".join(f"{k};dur={v * 1000:.3f}" for k, v in parts.items())
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", value.encode())]}
            await send(message)

        try:
            await app(scope, receive, timed_send)
        finally:
            timings.reset(token)

    uvicorn.run(outer, host="127.0.0.1", port=port, log_level="warning")


def bench_breakdown(url: str, bodies, headers: dict, args) -> dict:
    """Median of each server-timing part, and of the client's total, over a short instrumented loop."""
    out = {}
    with httpx.Client(headers={**headers, "x-bench-timing": "1"}, timeout=120) as client:
        for rows, body in bodies.items():
            n = min(100, args.n_small) if rows == 1 else min(10, args.n_large)
            samples: dict[str, list[float]] = {}
            for i in range(n + 3):
                started = time.perf_counter()
                response = client.post(url, content=body, headers={"content-type": "application/json"})
                total = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                if i < 3:
                    continue
                parts = {}
                for item in response.headers.get("server-timing", "").split(","):
                    name, _, duration = item.strip().partition(";dur=")
                    if duration:
                        parts[name] = float(duration)
                parts["client_total"] = total
                parts["outside_app (HTTP, uvicorn, client)"] = total - parts.get("app", 0.0)
                parts["app_other (middleware, deps, threads, response)"] = parts.get("app", 0.0) - sum(
                    parts.get(k, 0.0) for k in ("auth", "parse", "predict", "log"))
                for name, value in parts.items():
                    samples.setdefault(name, []).append(value)
            out[str(rows)] = {"requests": n, **{k: round(float(np.median(v)), 3) for k, v in samples.items()}}
    return out


# ---------------------------------------------------------------------------------------------- steps

def train_model(work: Path, settings: Settings, time_limit: int):
    data = write_demo_table(work / "data")
    started = time.perf_counter()
    result = runner.train(data, DEMO_TARGET, name=MODEL_NAME, time_limit=time_limit, settings=settings)
    seconds = time.perf_counter() - started
    if result.status != "succeeded" or not result.is_champion:
        raise SystemExit(f"training did not produce a champion: {result.status} {result.error} {result.gate}")
    return result, seconds


def payloads(result, seed: int = 0) -> dict[int, pd.DataFrame]:
    path = result.holdout_path
    holdout = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    features = serving_frame(holdout.drop(columns=[DEMO_TARGET]))
    rng = np.random.default_rng(seed)
    return {1: features.iloc[[0]].reset_index(drop=True),
            1000: features.iloc[rng.integers(0, len(features), 1000)].reset_index(drop=True)}


def bench_in_process(settings: Settings, frames, args) -> dict:
    server = ModelServer(settings)
    out = {}
    for rows, frame in frames.items():
        n = args.n_small if rows == 1 else args.n_large
        latencies, wall = measure(lambda f=frame: server.predict(MODEL_NAME, f), n, args.loop_seconds)
        out[rows] = summarize(latencies, rows, wall)
    return out


def bench_api_parts(settings: Settings, frames, bodies, key: str, args) -> dict:
    """What the API does beyond ModelServer.predict, each part timed alone in this process."""
    server = ModelServer(settings)
    out = {}
    version, _ = server.predict(MODEL_NAME, frames[1])
    latencies, wall = measure(lambda: keys.verify_key(settings.db_url, key), args.n_small, args.loop_seconds)
    out["verify_key"] = {1: summarize(latencies, 1, wall)}
    latencies, wall = measure(lambda: keys.recently_verified(settings.db_url, key), args.n_small, args.loop_seconds)
    out["recently_verified"] = {1: summarize(latencies, 1, wall)}
    for name, fn in (("parse_body", lambda b: _json_records(b)[0]),):
        out[name] = {}
        for rows, body in bodies.items():
            n = args.n_small if rows == 1 else args.n_large
            latencies, wall = measure(lambda b=body, fn=fn: fn(b), n, args.loop_seconds)
            out[name][rows] = summarize(latencies, rows, wall)
    out["predict_records"] = {}  # what the API calls for a JSON body: the records, no intermediate frame
    for rows, frame in frames.items():
        n = args.n_small if rows == 1 else args.n_large
        latencies, wall = measure(lambda r=records_of(frame): server.predict_records(MODEL_NAME, r), n,
                                  args.loop_seconds)
        out["predict_records"][rows] = summarize(latencies, rows, wall)
    out["predict_in_thread"] = {}  # as the API calls big requests: asyncio.to_thread, i.e. from a pool thread
    with ThreadPoolExecutor(max_workers=4) as pool:
        for rows, frame in frames.items():
            n = args.n_small if rows == 1 else args.n_large
            latencies, wall = measure(lambda f=frame: pool.submit(server.predict, MODEL_NAME, f).result(),
                                      n, args.loop_seconds)
            out["predict_in_thread"][rows] = summarize(latencies, rows, wall)
    out["log_predictions"], out["log_enqueue"] = {}, {}
    log = PredictionLog(settings.db_url)
    for rows, frame in frames.items():
        n = args.n_small if rows == 1 else args.n_large
        table = records_of(frame)  # what the API logs for a JSON request: its records as sent
        _, output = server.predict(MODEL_NAME, pd.DataFrame(table))
        latencies, wall = measure(lambda t=table, o=output: log_now(settings, MODEL_NAME, version, t, o),
                                  n, args.loop_seconds)
        out["log_predictions"][rows] = summarize(latencies, rows, wall)
        latencies, wall = measure(lambda t=table, o=output: log.add(MODEL_NAME, version, t, o), n, args.loop_seconds)
        out["log_enqueue"][rows] = summarize(latencies, rows, wall)
        log.flush()
    log.close()
    return out


def bench_http(url: str, bodies, headers: dict, args, check) -> dict:
    out = {}
    with httpx.Client(headers=headers, timeout=120) as client:
        for rows, body in bodies.items():
            n = args.n_small if rows == 1 else args.n_large

            def call(b=body, rows=rows):
                response = client.post(url, content=b, headers={"content-type": "application/json"})
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:500]}")
                check(response.json(), rows)

            latencies, wall = measure(call, n, args.loop_seconds, warmup=5)
            out[rows] = summarize(latencies, rows, wall)
    return out


def check_poise(body: dict, rows: int) -> None:
    assert len(body["predictions"]) == rows, body


def check_mlflow(body: dict, rows: int) -> None:
    assert len(body["predictions"]) == rows, str(body)[:300]


# ---------------------------------------------------------------------------------------------- fuzzing

def run_schemathesis(base: str, admin_key: str, work: Path, api: Service, args) -> dict:
    exe = Path(sys.executable).with_name("schemathesis")
    if not exe.exists():
        return {"skipped": "schemathesis is not installed (pip install -e '.[bench]')"}
    report = work / "schemathesis"
    log_start = api.log_path.stat().st_size
    config = work / "schemathesis.toml"  # the real model name in 80 % of {name} path parameters
    config.write_text(f'''[dictionaries.models]
values = ["{MODEL_NAME}"]

[parameters]
"path.name" = {{ dictionary = "models", probability = 0.8 }}
''')
    argv = [str(exe), "--config-file", str(config), "run", f"{base}/openapi.json",
            "-H", f"Authorization: Bearer {admin_key}", "-H", f"X-API-Key: {admin_key}",
            "--checks", args.fuzz_checks, "--max-examples", str(args.fuzz_examples),
            "--max-time", str(args.fuzz_seconds), "--workers", "1", "--seed", str(args.seed),
            "--phases", "examples,coverage,fuzzing", "--request-timeout", "60",
            "--generation-database", "none", "--no-color", "--continue-on-failure",
            "--report", "ndjson", "--report-dir", str(report), "--report-ndjson-path", str(report / "events.ndjson")]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=work, capture_output=True, check=False, text=True, timeout=args.fuzz_seconds + 300,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    seconds = time.perf_counter() - started
    (work / "schemathesis.out").write_text(done.stdout + done.stderr)
    server_log = api.log_path.read_bytes()[log_start:].decode(errors="replace")
    parsed = parse_schemathesis(report / "events.ndjson", done.stdout)
    parsed.update({"exit_code": done.returncode, "seconds": round(seconds, 1),
                   "command": " ".join(a if "Bearer" not in a and "X-API-Key" not in a else a.split(":")[0] + ": ***"
                                       for a in argv[1:]),
                   "config": config.read_text(),
                   "summary_text": "\n".join(done.stdout.strip().splitlines()[-40:]),
                   "server_tracebacks": split_tracebacks(server_log)})
    return parsed


def edge_cases(url: str, record: dict, key: str, api: Service) -> list[dict]:
    """Hand-made predict requests with real column names and odd values, which the fuzzer cannot build
    (its random records never carry the model's columns, so it stops at the 422 for missing columns)."""
    column = next(k for k, v in record.items() if isinstance(v, (int, float)))
    other = [k for k in record if k != column]
    csv_header = ",".join(record)
    csv_row = ",".join("" if v is None else str(v) for v in record.values())
    cases = {
        "string in a numeric column": {"records": [{**record, column: "abc"}]},
        "null in a numeric column": {"records": [{**record, column: None}]},
        "huge number (1e400 -> inf)": b'{"records": [' + json.dumps(record).replace(
            json.dumps(column) + ": " + json.dumps(record[column]), json.dumps(column) + ": 1e400").encode() + b"]}",
        "object in a numeric column": {"records": [{**record, column: {"a": 1}}]},
        "list in a numeric column": {"records": [{**record, column: [1, 2]}]},
        "boolean in a numeric column": {"records": [{**record, column: True}]},
        "extra column": {"records": [{**record, "unexpected": 1}]},
        "missing column": {"records": [{k: record[k] for k in other}]},
        "rows with different keys": {"records": [record, {k: record[k] for k in other}]},
        "empty record": {"records": [{}]},
        "all columns null": {"records": [{k: None for k in record}]},
        "csv: header and row": ("text/csv", f"{csv_header}\n{csv_row}\n".encode()),
        "csv: header only": ("text/csv", f"{csv_header}\n".encode()),
        "csv: text in numeric column": ("text/csv", f"{csv_header}\n{csv_row.replace(str(record[column]), 'x', 1)}\n"
                                        .encode()),
        "csv: binary garbage": ("text/csv", bytes(range(256))),
        "json: not an object": ("application/json", b"[1, 2, 3]"),
    }
    found = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for name, case in cases.items():
            if isinstance(case, tuple):
                content_type, body = case
            else:
                content_type, body = "application/json", case if isinstance(case, bytes) else json.dumps(case).encode()
            before = api.log_path.stat().st_size
            response = client.post(url, content=body, headers={"content-type": content_type})
            time.sleep(0.05)
            entry = {"case": name, "content_type": content_type, "status": response.status_code,
                     "request_body": _short(body.decode(errors="replace"), 400), "response": response.text[:300]}
            if response.status_code >= 500:
                log = api.log_path.read_bytes()[before:].decode(errors="replace")
                entry["traceback"] = split_tracebacks(log)
            found.append(entry)
    return found


def parse_schemathesis(ndjson: Path, stdout: str) -> dict:
    """Operations tested, examples sent (by status class) and every server error, from the ndjson events."""
    operations, statuses, failures, errors = set(), {}, [], []
    examples = 0
    if not ndjson.exists():
        return {"operations": 0, "examples": 0, "server_errors": [], "errors": ["no ndjson report"]}
    for line in ndjson.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        for kind, payload in event.items():
            if kind == "ScenarioFinished" and isinstance(payload, dict):
                recorder = payload.get("recorder") or {}
                label = recorder.get("label")
                if label:
                    operations.add(label)
                for interaction in (recorder.get("interactions") or {}).values():
                    response = interaction.get("response") or {}
                    status = response.get("status_code")
                    if status is None:
                        continue
                    examples += 1
                    statuses[f"{status // 100}xx"] = statuses.get(f"{status // 100}xx", 0) + 1
                    if status >= 500:
                        request = interaction.get("request") or {}
                        body = request.get("body")
                        failures.append({
                            "operation": label, "status": status, "method": request.get("method"),
                            "url": request.get("uri"), "request_body": _short(body),
                            "response_body": _short(response.get("content") or response.get("body")),
                        })
            elif kind == "NonFatalError" and isinstance(payload, dict):
                errors.append(f"{payload.get('label')}: {str(payload.get('info') or payload.get('value'))[:300]}")
    unique, seen = [], set()
    for failure in failures:
        key = (failure["operation"], failure["status"], failure["request_body"], failure["url"])
        if key not in seen:
            seen.add(key)
            unique.append(failure)
    return {"operations": len(operations), "operation_labels": sorted(operations), "examples": examples,
            "responses_by_status": dict(sorted(statuses.items())), "server_errors": unique,
            "schemathesis_errors": errors[:20]}


def _short(value, limit: int = 600):
    if value is None:
        return None
    if isinstance(value, dict) and "base64" in value:  # bytes as schemathesis stores them
        import base64
        try:
            value = base64.b64decode(value["base64"]).decode(errors="replace")
        except ValueError:
            value = str(value)
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def split_tracebacks(log: str) -> list[str]:
    """Distinct tracebacks the API server logged (its last lines), in order of first appearance."""
    found, seen = [], set()
    for chunk in log.split("Traceback (most recent call last):")[1:]:
        lines = [ln for ln in chunk.splitlines() if ln.strip()]
        tail = []
        for ln in lines:  # stop at the next log record
            if ln.startswith(("ERROR:", "INFO:", "WARNING:")) and tail:
                break
            tail.append(ln)
        frames = [ln.strip() for ln in tail if ln.strip().startswith("File ") and "/work/main/" in ln
                  and "/.venv/" not in ln]
        last = next((ln for ln in reversed(tail) if not ln.startswith(" ")), tail[-1] if tail else "")
        key = (tuple(frames[-2:]), last.split(":")[0])
        if key not in seen:
            seen.add(key)
            found.append("\n".join(frames[-4:] + [last[:400]]))
    return found


# ---------------------------------------------------------------------------------------------- report

def print_report(out: dict) -> None:
    m = out["latency"]
    model = out.get("model", {})
    print(f"\nModel {model.get('name')} v{model.get('version')}, ModelServer path: {model.get('serving_path')}"
          + (f" ({model['serving_fallback']}: {model['serving_reason']})" if model.get("serving_reason") else ""))
    print("\nServing latency (sequential, one client, warmed)")
    print(f"{'method':<14}{'rows':>6}{'requests':>10}{'p50 ms':>10}{'p99 ms':>10}{'rows/s':>12}")
    for method in ("in_process", "poise_api", "mlflow_serve"):
        for rows in ("1", "1000"):
            r = m.get(method, {}).get(rows)
            if r:
                print(f"{method:<14}{rows:>6}{r['requests']:>10}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
                      f"{r['rows_per_s']:>12.1f}")
    print("\nParts of an API request, timed alone in-process (p50 ms)")
    print(f"{'part':<42}{'1 row':>10}{'1000 rows':>12}")
    for name, label in (("predict", "ModelServer.predict"),
                        ("predict_records", "ModelServer.predict_records (JSON)"),
                        ("predict_in_thread", "ModelServer.predict in a pool thread"),
                        ("verify_key", "API key check (SELECT + UPDATE)"),
                        ("recently_verified", "API key check, verified < 5 s ago"),
                        ("parse_body", "parse JSON body (to records)"),
                        ("log_predictions", "prediction-log insert (writer thread)"),
                        ("log_enqueue", "prediction-log enqueue (request)")):
        r = out["api_parts"].get(name) if name != "predict" else m["in_process"]
        one = r.get("1", {}).get("p50_ms")
        big = r.get("1000", {}).get("p50_ms")
        print(f"{label:<42}{one if one is not None else '-':>10}{big if big is not None else '-':>12}")
    b = out.get("api_server_timing_p50_ms", {})
    if b:
        names = [k for k in b["1"] if k != "requests"]
        print("\nAn API request from inside the server (server-timing, medians of each part, ms)")
        print(f"{'part':<50}{'1 row':>10}{'1000 rows':>12}")
        for name in names:
            print(f"{name:<50}{b['1'].get(name, float('nan')):>10.2f}{b.get('1000', {}).get(name, float('nan')):>12.2f}")
    t = out["targets"]
    print("\nTargets")
    print(f"  API overhead over in-process (1 row, p50): {t['api_overhead_ms']:.2f} ms (target ≤ 2 ms) "
          f"-> {'PASS' if t['overhead_pass'] else 'FAIL'}"
          + ("" if t["overhead_pass"] else f", {t['api_overhead_ms'] - 2:.2f} ms over"))
    print(f"  p50 1 row API / mlflow models serve: {t['api_over_mlflow_ratio']:.3f} (target ≤ 0.5) "
          f"-> {'PASS' if t['ratio_pass'] else 'FAIL'}"
          + ("" if t["ratio_pass"] else f", needs {t['api_1row_p50_ms'] - 0.5 * t['mlflow_1row_p50_ms']:.2f} ms less"))
    print("  the overhead by part (server-timing medians, 1 row, ms):")
    for name, value in t["overhead_breakdown_ms"].items():
        print(f"    {name:<52}{value:>8.2f}")
    print(f"  dominant part: {t['dominant_part']}")
    f = out.get("schemathesis", {})
    print("\nSchemathesis")
    if "skipped" in f:
        print(f"  skipped: {f['skipped']}")
        f = {"operations": 0, "examples": 0, "seconds": 0, "exit_code": None, "server_errors": [],
             "server_tracebacks": []}
    print(f"  {f['operations']} operations, {f['examples']} requests {f.get('responses_by_status')}, "
          f"{f['seconds']} s, exit {f['exit_code']}")
    print(f"  server errors (5xx, distinct requests): {len(f['server_errors'])}")
    for e in f["server_errors"]:
        print(f"   - {e['status']} {e['method']} {e['url']}  body={e['request_body']!s:.200}")
    for tb in f["server_tracebacks"]:
        print(textwrap.indent(tb, "     | "))
    for e in f.get("schemathesis_errors", []):
        print(f"  schemathesis error: {e}")
    cases = out.get("predict_edge_cases", [])
    if cases:
        print("\nPredict edge cases (real columns, odd values)")
        for c in cases:
            print(f"  {c['status']:>4}  {c['case']:<34} {c['response'][:90]}")
            for tb in c.get("traceback", []):
                print(textwrap.indent(tb, "     | "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-limit", type=int, default=20)
    parser.add_argument("--n-small", type=int, default=200, help="requests of 1 row per method")
    parser.add_argument("--n-large", type=int, default=30, help="requests of 1000 rows per method")
    parser.add_argument("--loop-seconds", type=float, default=60, help="cap on each measured loop")
    parser.add_argument("--fuzz-examples", type=int, default=20)
    parser.add_argument("--fuzz-seconds", type=int, default=240)
    parser.add_argument("--fuzz-checks", default="not_a_server_error",
                        help="schemathesis --checks (only 5xx are reported as bugs here)")
    parser.add_argument("--no-fuzz", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (for debugging)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json")
    parser.add_argument("--serve-api", nargs=2, metavar=("HOME", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_api:
        serve_api(args.serve_api[0], int(args.serve_api[1]))
        return

    work = Path(tempfile.mkdtemp(prefix="poise-serving-"))
    settings = Settings(home=work / "home")
    settings.ensure_home()
    services: list[Service] = []
    out: dict = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                             "platform": platform.platform()},
                 "versions": {}, "config": {k: str(v) for k, v in vars(args).items()}}
    for package in PINNED:
        try:
            out["versions"][package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out["versions"][package] = None
    try:
        print(f"training {MODEL_NAME} on the demo table ({args.time_limit} s budget) ...", flush=True)
        result, train_seconds = train_model(work, settings, args.time_limit)
        out["model"] = {"name": MODEL_NAME, "version": result.model_version, "train_seconds": round(train_seconds, 1),
                        "gate": result.gate.get("reason"), "macro_f1": result.metrics.get("macro_f1")}
        frames = payloads(result, args.seed)
        bodies = {rows: json.dumps({"records": records_of(f)}).encode() for rows, f in frames.items()}
        ml_bodies = {rows: json.dumps({"dataframe_records": records_of(f)}).encode() for rows, f in frames.items()}
        out["payload_bytes"] = {str(r): len(b) for r, b in bodies.items()}
        _, predict_key = keys.create_key(settings.db_url, "bench", ["predict"])
        _, admin_key = keys.create_key(settings.db_url, "bench-admin", ["admin"])

        served = ModelServer(settings).model(MODEL_NAME)
        out["model"].update(serving_path=served.scoring.path, serving_fallback=served.scoring.cause,
                            serving_reason=served.scoring.reason)
        print("in-process ...", flush=True)
        latency = {"in_process": bench_in_process(settings, frames, args)}
        print("API parts in-process ...", flush=True)
        parts = bench_api_parts(settings, frames, bodies, predict_key, args)

        bin_dir = str(Path(sys.executable).parent)  # mlflow serve execs `uvicorn` from PATH
        env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE",
               "MLFLOW_TRACKING_URI": settings.tracking_uri, "MLFLOW_REGISTRY_URI": settings.registry_uri}
        api_port, ml_port = free_port(), free_port()
        api = Service("poise api", [sys.executable, str(Path(__file__).resolve()), "--serve-api",
                                    str(settings.home), str(api_port)], env, work / "api.log", ROOT)
        services.append(api)
        mlflow_exe = str(Path(sys.executable).with_name("mlflow"))
        ml = Service("mlflow models serve",
                     [mlflow_exe, "models", "serve", "-m", f"models:/{MODEL_NAME}@champion", "--env-manager", "local",
                      "--host", "127.0.0.1", "-p", str(ml_port), "--workers", "1"],
                     env, work / "mlflow.log", work)
        services.append(ml)
        base = f"http://127.0.0.1:{api_port}"
        out["startup_seconds"] = {"poise_api": round(api.wait_ready(f"{base}/healthz", 120), 1),
                                  "mlflow_serve": round(ml.wait_ready(f"http://127.0.0.1:{ml_port}/ping", 240), 1)}

        print("Poise API ...", flush=True)
        predict_url = f"{base}/api/v1/models/{MODEL_NAME}/predict"
        latency["poise_api"] = bench_http(predict_url, bodies, {"Authorization": f"Bearer {predict_key}"}, args,
                                          check_poise)
        print("Poise API, server-timing breakdown ...", flush=True)
        out["api_server_timing_p50_ms"] = bench_breakdown(predict_url, bodies,
                                                          {"Authorization": f"Bearer {predict_key}"}, args)
        print("mlflow models serve ...", flush=True)
        latency["mlflow_serve"] = bench_http(f"http://127.0.0.1:{ml_port}/invocations", ml_bodies, {}, args,
                                             check_mlflow)
        ml.stop()  # not needed for fuzzing; frees a core

        out["latency"] = {m: {str(r): v for r, v in d.items()} for m, d in latency.items()}
        out["api_parts"] = {p: {str(r): v for r, v in d.items()} for p, d in parts.items()}
        api1, inp1, ml1 = (latency[m][1]["p50_ms"] for m in ("poise_api", "in_process", "mlflow_serve"))
        overhead = api1 - inp1
        inside = out["api_server_timing_p50_ms"]["1"]  # medians of the instrumented loop, 1 row
        breakdown = {k: inside.get(k, 0.0) for k in ("auth", "parse", "log", "app_other (middleware, deps, threads, response)",
                                                      "outside_app (HTTP, uvicorn, client)")}
        breakdown["predict in server - predict in-process"] = round(inside.get("predict", 0.0) - inp1, 3)
        out["targets"] = {
            "api_1row_p50_ms": api1, "in_process_1row_p50_ms": inp1, "mlflow_1row_p50_ms": ml1,
            "api_overhead_ms": round(overhead, 3), "overhead_target_ms": 2.0, "overhead_pass": overhead <= 2.0,
            "api_over_mlflow_ratio": round(api1 / ml1, 3), "ratio_target": 0.5, "ratio_pass": api1 / ml1 <= 0.5,
            "overhead_breakdown_ms": breakdown, "dominant_part": max(breakdown, key=breakdown.get),
            "share_of_api_1row_p50": {"model predict": round(inp1 / api1, 3),
                                      **{k: round(v / api1, 3) for k, v in breakdown.items()}},
        }

        if args.no_fuzz:
            out["schemathesis"] = {"skipped": "--no-fuzz"}
        else:
            print("schemathesis ...", flush=True)
            out["schemathesis"] = run_schemathesis(base, admin_key, work, api, args)
        print("predict edge cases ...", flush=True)
        out["predict_edge_cases"] = edge_cases(predict_url, records_of(frames[1])[0], predict_key, api)
    finally:
        for service in services:
            service.stop()
        if "api" in locals() and not args.keep:
            out.setdefault("logs", {})["api_tail"] = api.tail(2000)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print_report(out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
