"""Engine and session handling for the Poise job database.

Why this module exists: every part of Poise (CLI, orchestration graph, agents)
reaches the job database through a URL (`Settings.db_url`: SQLite file in the Poise
home by default, PostgreSQL when configured). This module turns that URL into one
shared, correctly configured `Engine` per process and brings the schema up to date
(`alembic upgrade head`) the first time it is used, so there is no separate "init
the database" step to forget.

SQLite is run with foreign keys enforced, WAL journaling and a 30 s busy timeout.
Schema upgrades hold the database's write lock (SQLite `BEGIN IMMEDIATE`,
PostgreSQL advisory lock) for the whole transaction, so several processes starting
at once on a fresh database migrate it exactly once; the others wait, then find it
at head.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Arbitrary but fixed key for the PostgreSQL advisory lock taken while migrating.
_PG_MIGRATION_LOCK_KEY = zlib.crc32(b"poise.registry.migrations")

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def alembic_config() -> Config:
    """Alembic configuration pointing at `registry/migrations`, built without an alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


def run_migrations(engine: Engine) -> None:
    """Apply all pending migrations (`alembic upgrade head`) in one transaction.

    Safe to call repeatedly and from several processes at once.
    """
    config = alembic_config()
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Take the write lock before alembic reads the current revision, so a
            # concurrent migrator waits (busy_timeout) instead of racing us.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


def _is_sqlite_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or (database.startswith("file:") and "mode=memory" in database)


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)

    kwargs: dict = {"pool_pre_ping": True}
    if _is_sqlite_memory(parsed):
        # One shared connection, otherwise each pooled connection is its own empty database.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif not (parsed.database or "").startswith("file:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **kwargs)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _connection_record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")  # first: the others may wait on locks
            cursor.execute("PRAGMA foreign_keys=ON")
            _switch_to_wal(cursor)
        finally:
            cursor.close()

    return engine


def _switch_to_wal(cursor) -> None:
    """`PRAGMA journal_mode=WAL`, retried while another process holds the lock: SQLite answers "database
    is locked" at once there, without its busy handler (seen when several processes open a new database)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def get_engine(url: str) -> Engine:
    """The process-wide engine for `url`, created (and the schema migrated to head) on first use."""
    engine = _engines.get(url)
    if engine is not None:
        return engine
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            try:
                run_migrations(engine)
            except BaseException:
                engine.dispose()
                raise
            _engines[url] = engine
    return engine


def dispose_engine(url: str) -> None:
    """Close the pooled connections of the cached engine for `url` and forget it (no-op if none)."""
    with _engines_lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A `Session` on the database at `url`: committed on success, rolled back on any exception."""
    session = Session(get_engine(url), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
