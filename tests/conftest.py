"""Shared fixtures: an isolated Poise home per test, and small imbalanced tables on disk."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sqlalchemy import create_engine, make_url  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from poise.pipelines.settings import Settings  # noqa: E402
from poise.registry.db import dispose_engine  # noqa: E402

PG_ADMIN_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The local PostgreSQL (trust auth); skips with the reason when it is not running."""
    errors = []
    for url in PG_ADMIN_URLS:
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
        try:
            with engine.connect():
                return url
        except OperationalError as exc:
            errors.append(f"{make_url(url).username}: {exc.orig or exc}".strip())
        finally:
            engine.dispose()
    pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {' | '.join(errors)}")


@pytest.fixture
def postgres_url(pg_admin_url):
    """A throwaway PostgreSQL database, dropped after the test."""
    name = f"poise_test_{uuid.uuid4().hex}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engine(url)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh job database URL, once on SQLite and once on PostgreSQL (skipped without a server)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("postgres_url")
        return
    url = f"sqlite:///{tmp_path / 'home' / 'poise.db'}"  # parent folder does not exist yet
    try:
        yield url
    finally:
        dispose_engine(url)


@pytest.fixture
def poise_home(tmp_path, monkeypatch):
    """A fresh home folder; subprocesses see it through POISE_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("POISE_HOME", str(home))
    for name in ("POISE_DATABASE_URL", "POISE_MLFLOW_TRACKING_URI", "POISE_MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def settings(poise_home):
    return Settings(home=poise_home)


def make_imbalanced_table(n_rows: int = 800, minority_share: float = 0.08, seed: int = 0) -> pd.DataFrame:
    """A churn-like table with signal, an ID column, a constant and a leak."""
    rng = np.random.default_rng(seed)
    churned = rng.random(n_rows) < minority_share
    tenure = np.where(churned, rng.normal(5, 3, n_rows), rng.normal(36, 12, n_rows)).clip(0)
    charges = np.where(churned, rng.normal(85, 15, n_rows), rng.normal(60, 20, n_rows))
    plan = np.where(rng.random(n_rows) < np.where(churned, 0.7, 0.25), "monthly", "yearly")
    return pd.DataFrame({
        "customer_id": [f"C{100000 + i}" for i in range(n_rows)],
        "tenure_months": tenure.round(1),
        "monthly_charges": charges.round(2),
        "plan": plan,
        "region": rng.choice(["north", "south", "east", "west"], n_rows),
        "country": "NL",
        "churned": np.where(churned, "yes", "no"),
    })


@pytest.fixture
def make_table():
    return make_imbalanced_table


def make_noise_table(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """A table whose features carry no signal about `outcome` (15 % 'yes'). Trained for expected cost with a false
    alarm costing 50 misses, the model flags nobody: its cost ties the majority baseline's, and the gate, which wants
    strictly better, refuses it. Tests check that it did."""
    rng = np.random.default_rng(seed)
    positive = rng.random(rows) < 0.15
    return pd.DataFrame({"a": rng.normal(size=rows).round(3), "b": rng.normal(size=rows).round(3),
                         "c": rng.choice(["x", "y", "z"], rows), "outcome": np.where(positive, "yes", "no")})


def write_parquet_parts(folder, parts: int = 3, rows: int = 4_000, seed: int = 0):
    """A table written as Parquet parts, as Spark or Polars jobs write it: ~2 % positives (a boolean target), a
    text column with a user's missing-value token, a few unlabelled rows, and a row id to follow rows by."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for part in range(parts):
        x = rng.normal(size=rows)
        frame = pd.DataFrame({
            "row_id": np.arange(part * rows, (part + 1) * rows),
            "x": x,
            "z": rng.normal(size=rows).astype("float32"),
            "colour": rng.choice(["red", "blue", "n.a."], rows),
            "bad": pd.array(x + rng.normal(scale=0.4, size=rows) > 2.3, dtype="boolean"),
        })
        frame.loc[frame.index[:5], "bad"] = pd.NA
        frame.to_parquet(folder / f"part-{part:05d}.parquet", index=False)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def parquet_parts():
    return write_parquet_parts


@pytest.fixture
def noise_table():
    return make_noise_table


@pytest.fixture
def churn_csv(tmp_path):
    path = tmp_path / "customers.csv"
    make_imbalanced_table().to_csv(path, index=False)
    return path


@contextmanager
def running_app(app) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def serve_app():
    return running_app


def _load_test_module(name: str, filename: str):
    """Load a helper module of tests/ by path (with --import-mode=importlib, tests/ is not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(filename))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


llm_server = _load_test_module("poise_tests_llm_server", "llm_server.py").llm_server


MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A TCP port nobody listens on now, on 127.0.0.1."""
    return _free_port()


@pytest.fixture
def bucket(monkeypatch):
    """An S3-compatible server (moto in server mode) on 127.0.0.1 with an empty bucket `poise`, reached through the
    standard AWS variables (Ray nodes started after this inherit them)."""
    port = _free_port()
    server = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    # MLFLOW_S3_ENDPOINT_URL too: MLflow caches its S3 client by that variable, not by AWS_ENDPOINT_URL, so a
    # server of an earlier test would otherwise still be asked
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    import boto3

    try:
        s3 = boto3.client("s3")
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_bucket(Bucket="poise")
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield s3
    finally:
        server.terminate()
        server.wait(10)
