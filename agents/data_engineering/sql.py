"""Reading a table from a SQL query, read-only, into Parquet parts: the database counterpart of uploading a file.

A training job or a drift check may read its rows from a configured SQL source instead of a file. The query
must never write and never run unbounded, so only PostgreSQL and SQLite are accepted, where both can be
enforced; every database error is reported as the query's problem (`DataError`).
"""

import re
from pathlib import Path

import pandas as pd

from poise.agents.errors import DataError, TooLargeError

SQL_TIMEOUT_SECONDS = 300.0  # Settings.sql_timeout's default
CHUNK_ROWS = 100_000  # rows per Parquet part of a query's result
_SQLITE_READ_ACTIONS = {20, 21, 22, 31, 33}  # SQLITE_READ, _SELECT, _TRANSACTION, _FUNCTION, _RECURSIVE (sqlite3.h)
_SQLITE_CONNECT_OPTIONS = {"uri", "mode", "check_same_thread", "timeout", "isolation_level", "detect_types",
                           "cached_statements", "autocommit"}


def query_to_parquet(url: str, query: str, folder: Path, *, max_rows: int, timeout: float = SQL_TIMEOUT_SECONDS,
                     chunk_rows: int = CHUNK_ROWS) -> int:
    """Write the rows of one SQL query against a SQLAlchemy URL into `folder` as Parquet parts of `chunk_rows`
    rows, never holding more than one part in memory; refused past `max_rows`. Returns the number of rows. Any
    database error is the query's problem and is reported as such; a failed query leaves no folder.

    The parts are then read like any folder of Parquet parts: whole when the table fits the memory budget, else
    out of core (`large_tables`). A column whose type differs between parts (all null in one, integers in one and
    decimals in another) is written with the type every part can take (`pa.unify_schemas`, permissive), the
    parts that differ rewritten one at a time.

    The query can only read: PostgreSQL runs it in a `READ ONLY` transaction (also the session's default) with
    `statement_timeout`, prepared, so a text holding several statements (`SELECT 1; COMMIT; DROP ...`) is
    refused; SQLite opens the file read-only (`mode=ro`, `PRAGMA query_only`) and interrupts a query still
    running after `timeout` seconds. Other databases are refused: neither can be enforced on them here."""
    import shutil
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq
    from sqlalchemy import text
    from sqlalchemy.exc import ArgumentError

    try:
        engine, dialect = _read_only_engine(url, timeout)
    except ArgumentError as error:
        raise DataError(f"SQL source URL cannot be used: {str(error).splitlines()[0][:200]}") from None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rows, parts = 0, []
    try:
        with engine.connect() as connection:
            if dialect == "postgresql":
                millis = max(1, round(timeout * 1000))
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")  # the first statement of the transaction
                connection.exec_driver_sql(f"SET LOCAL statement_timeout = {millis}")
                connection.exec_driver_sql("SELECT 1")  # takes the first snapshot: READ WRITE can no longer be set
                connection = connection.execution_options(stream_results=True)  # a server-side cursor
            else:
                sqlite = connection.connection.driver_connection
                deadline = time.monotonic() + timeout
                sqlite.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
                # only reading is authorised: no PRAGMA (query_only=OFF), no ATTACH (which creates a missing file)
                sqlite.set_authorizer(lambda action, *_: 0 if action in _SQLITE_READ_ACTIONS else 1)  # OK, DENY
            for chunk in pd.read_sql_query(text(query), connection, chunksize=chunk_rows):
                rows += len(chunk)
                if rows > max_rows:
                    raise TooLargeError(f"query returns more than {max_rows} rows")
                parts.append(folder / f"part-{len(parts):05d}.parquet")
                chunk.to_parquet(parts[-1], index=False)
        if not rows:
            raise DataError("query returned no rows")
        schemas = [pq.read_schema(part) for part in parts]
        common = pa.unify_schemas([schema.remove_metadata() for schema in schemas], promote_options="permissive")
        for part, schema in zip(parts, schemas):
            if not schema.remove_metadata().equals(common):
                pq.write_table(pq.read_table(part).cast(common), part)
    except Exception as error:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(error, DataError):
            raise
        raise _query_problem(error, timeout, query) from None
    finally:
        engine.dispose()
    return rows


def _read_only_engine(url: str, timeout: float):
    """An engine for `url` whose connections can only read (see `read_sql`), and its dialect's name."""
    import sqlite3

    from sqlalchemy import create_engine, make_url
    from sqlalchemy.pool import NullPool

    parsed = make_url(url)
    dialect = parsed.get_backend_name()
    if dialect == "postgresql":
        # psycopg 3, every statement prepared (prepare_threshold=0): a prepared statement holds exactly one command
        millis = max(1, round(timeout * 1000))
        options = " ".join(filter(None, [parsed.query.get("options"), "-c default_transaction_read_only=on",
                                         f"-c statement_timeout={millis}"]))
        return create_engine(parsed.set(drivername="postgresql+psycopg"), poolclass=NullPool,
                             connect_args={"prepare_threshold": 0, "options": options}), dialect
    if dialect == "sqlite":
        target = _sqlite_read_only_uri(parsed.database or "", parsed.query)

        def connect() -> sqlite3.Connection:  # sqlite3 runs one statement per execute
            connection = sqlite3.connect(target, uri=True, check_same_thread=False)
            connection.execute("PRAGMA query_only = ON")
            return connection

        return create_engine("sqlite://", creator=connect, poolclass=NullPool), dialect
    raise DataError(f"SQL sources must be PostgreSQL or SQLite, not {dialect}: only there does Poise enforce "
                    f"read-only queries with a statement timeout")


def _sqlite_read_only_uri(database: str, query) -> str:
    """A SQLite URI that opens `database` read-only (a missing file is an error, not a new empty database)."""
    from urllib.parse import quote

    if database in ("", ":memory:"):
        return "file::memory:"
    if database.startswith("file:"):  # already a URI (sqlite:///file:...?uri=true): keep its other parameters
        base, _, inline = database.partition("?")
        params = [part for part in inline.split("&") if part and not part.startswith("mode=")]
        params += [f"{quote(key)}={quote(str(value))}" for key, value in query.items()
                   if key not in _SQLITE_CONNECT_OPTIONS]
        return f"{base}?{'&'.join(params + ['mode=ro'])}"
    return Path(database).expanduser().resolve().as_uri() + "?mode=ro"


def _query_problem(error: Exception, timeout: float, query: str) -> DataError:
    """A failed SQL source query as the user should read it: refused writes and timeouts said plainly."""
    cause = getattr(error, "orig", None) or error
    message = str(cause).splitlines()[0][:300] if str(cause) else type(cause).__name__
    state = getattr(cause, "sqlstate", None)
    first = re.match(r"[\s(]*(\w+)", re.sub(r"--[^\n]*|/\*.*?\*/", " ", query, flags=re.S))  # comments aside
    first_word = first[1] if first else ""
    # PostgreSQL reads through a server-side cursor (`DECLARE … CURSOR FOR <query>`), which holds only a query that
    # returns rows and never a data-modifying WITH
    if ("DECLARE CURSOR must not contain data-modifying" in message
            or state == "42601" and first_word.upper() not in ("SELECT", "WITH", "VALUES", "TABLE")):
        return DataError(f"query refused: SQL sources are read-only, and a PostgreSQL source runs only queries that "
                         f"return rows (SELECT, VALUES, WITH … SELECT) ({message})")
    if state == "25006" or "readonly database" in message or "read-only transaction" in message:
        return DataError(f"query refused: SQL sources are read-only, and this query writes ({message})")
    if state == "57014" or message == "interrupted":
        return DataError(f"query cancelled: it ran longer than the SQL statement timeout of {timeout:g} s "
                         f"(POISE_SQL_TIMEOUT)")
    if message == "not authorized":  # SQLite's authoriser (see _read_only_engine)
        return DataError("query refused: SQL sources are read-only, and SQLite sources run only SELECT queries")
    if "multiple commands" in message or "one statement at a time" in message:
        return DataError(f"query refused: a SQL source runs one statement per query ({message})")
    return DataError(f"query failed: {message}")



