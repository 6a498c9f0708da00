"""Where LangGraph checkpoints a run: beside the job database, so any worker that reaches the database can resume
any job or check, wherever the run started.

SQLite job database (one machine): a SQLite file in the Poise home. PostgreSQL: the job database itself, in a schema
of its own (`langgraph`, created on first use) so its tables never mix with Poise's migrations, through
langgraph-checkpoint-postgres.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from sqlalchemy import make_url

from poise.pipelines.settings import Settings

SCHEMA = "langgraph"
_ready: set[str] = set()  # PostgreSQL URLs whose checkpoint tables this process has set up
_setup_lock = threading.Lock()
LOCK_POLL_SECONDS = 0.05


@contextmanager
def checkpointer(settings: Settings) -> Iterator[BaseCheckpointSaver]:
    """A checkpoint saver on the settings' job database, open for the block."""
    url = make_url(settings.db_url)
    if url.get_backend_name() != "postgresql":
        with closing(sqlite3.connect(settings.checkpoint_path, check_same_thread=False)) as connection:
            yield SqliteSaver(connection)
        return
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg import connect
    from psycopg.rows import dict_row

    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with connect(conninfo, autocommit=True, prepare_threshold=0, row_factory=dict_row,
                 options=f"-c search_path={SCHEMA}") as connection:
        saver = PostgresSaver(connection)
        _set_up(saver, connection, settings.db_url)
        yield saver


def _set_up(saver, connection, db_url: str) -> None:
    """Create the schema and run the saver's migrations once per process, under an advisory lock so that workers
    starting together on a fresh database do it once.

    The lock is polled, not awaited: a migration creates its indexes `CONCURRENTLY`, which waits for every open
    transaction to end, and a worker blocked in `pg_advisory_lock` is one, waiting for the lock the migrating worker
    holds (a deadlock PostgreSQL broke by failing one worker's job: 1 run in 2 of two workers starting together)."""
    with _setup_lock:
        if db_url in _ready:
            return
        lock_id = zlib.crc32(b"poise-langgraph-checkpoints")
        while not connection.execute("SELECT pg_try_advisory_lock(%s) AS taken", (lock_id,)).fetchone()["taken"]:
            time.sleep(LOCK_POLL_SECONDS)
        try:
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            saver.setup()
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
        _ready.add(db_url)
