"""SQL sources are read-only and time-limited, on a real SQLite file and a real PostgreSQL database:
a write (DELETE, DROP, INSERT ... RETURNING, several statements, ATTACH, a PRAGMA) is refused with a clear
error and changes nothing; a query past the statement timeout is cancelled; the rows land in Parquet parts, one
chunk at a time, with one type per column."""

import sqlite3
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from poise.agents.data_engineering.sql import query_to_parquet
from poise.agents.errors import DataError, TooLargeError


def read_sql(url: str, query: str, **options) -> pd.DataFrame:
    folder = Path(tempfile.mkdtemp()) / "query"
    rows = query_to_parquet(url, query, folder, **options)
    table = pd.read_parquet(folder)
    assert len(table) == rows
    return table

WRITES = [
    ("DELETE FROM customers RETURNING plan", "read-only"),
    ("DROP TABLE customers", "read-only"),
    ("INSERT INTO customers VALUES (99, 'x') RETURNING tenure", "read-only"),
    ("UPDATE customers SET plan = 'gone' RETURNING plan", "read-only"),
    ("SELECT 1 AS one; DELETE FROM customers", "one statement per query"),
]


@pytest.fixture
def sqlite_source(tmp_path):
    path = tmp_path / "ware house.db"  # a space: the read-only URI must escape it
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (tenure INTEGER, plan TEXT)")
        connection.executemany("INSERT INTO customers VALUES (?, ?)", [(i, f"p{i % 3}") for i in range(50)])
    return path


def _sqlite_rows(path) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT * FROM customers ORDER BY tenure").fetchall()


def test_a_sqlite_source_reads(sqlite_source):
    table = read_sql(f"sqlite:///{sqlite_source}", "SELECT * FROM customers WHERE plan = 'p1'", max_rows=100)
    assert len(table) == 17 and list(table.columns) == ["tenure", "plan"]


@pytest.mark.parametrize(("query", "said"), [*WRITES, ("PRAGMA query_only = OFF", "read-only"),
                                             ("ATTACH DATABASE 'other.db' AS other", "read-only")])
def test_a_write_through_a_sqlite_source_is_refused_and_changes_nothing(sqlite_source, query, said, tmp_path,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _sqlite_rows(sqlite_source)
    files = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DataError, match=said):
        read_sql(f"sqlite:///{sqlite_source}", query, max_rows=100)
    assert _sqlite_rows(sqlite_source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # no journal left, no attached file created


def test_a_missing_sqlite_file_is_an_error_not_a_new_database(tmp_path):
    with pytest.raises(DataError, match="query failed"):
        read_sql(f"sqlite:///{tmp_path / 'nothere.db'}", "SELECT 1", max_rows=10)
    assert not (tmp_path / "nothere.db").exists()


def test_a_sqlite_query_past_the_timeout_is_cancelled(sqlite_source):
    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
    started = time.monotonic()
    with pytest.raises(DataError, match="statement timeout of 0.5 s"):
        read_sql(f"sqlite:///{sqlite_source}", endless, max_rows=10, timeout=0.5)
    assert time.monotonic() - started < 5


def test_other_databases_are_refused():
    with pytest.raises(DataError, match="PostgreSQL or SQLite"):
        read_sql("mysql+pymysql://user@127.0.0.1/db", "SELECT 1", max_rows=10)


@pytest.fixture
def postgres_source(postgres_url):
    engine = create_engine(postgres_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE customers (tenure INTEGER, plan TEXT)")
        connection.exec_driver_sql("INSERT INTO customers SELECT g, 'p' || mod(g, 3) FROM generate_series(0, 49) g")
        connection.exec_driver_sql("CREATE SEQUENCE ids")
    engine.dispose()
    return postgres_url


def _postgres_rows(url) -> list[tuple]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql("SELECT * FROM customers ORDER BY tenure")]
    finally:
        engine.dispose()


def test_a_postgres_source_reads(postgres_source):
    table = read_sql(postgres_source, "SELECT * FROM customers WHERE plan = 'p1'", max_rows=100, chunk_rows=5)
    assert len(table) == 17 and list(table.columns) == ["tenure", "plan"]


@pytest.mark.parametrize(("query", "said"), [
    *WRITES,
    ("SELECT 1 AS one; COMMIT; DROP TABLE customers", "one statement per query"),
    ("WITH gone AS (DELETE FROM customers RETURNING plan) SELECT * FROM gone", "read-only"),
    ("DO $$ BEGIN DELETE FROM customers; END $$", "read-only"),
    ("SELECT nextval('ids')", "read-only"),
    ("SET TRANSACTION READ WRITE", "read-only"),
])
def test_a_write_through_a_postgres_source_is_refused_and_changes_nothing(postgres_source, query, said):
    before = _postgres_rows(postgres_source)
    with pytest.raises(DataError, match=said):
        read_sql(postgres_source, query, max_rows=100)
    assert _postgres_rows(postgres_source) == before


def test_a_postgres_query_past_the_timeout_is_cancelled(postgres_source):
    started = time.monotonic()
    with pytest.raises(DataError, match="statement timeout of 0.5 s"):
        read_sql(postgres_source, "SELECT pg_sleep(10)", max_rows=10, timeout=0.5)
    assert time.monotonic() - started < 5


def test_a_big_result_is_written_a_chunk_at_a_time_with_one_type_per_column(tmp_path):
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE events (id INTEGER, amount, note TEXT)")
        # the first chunk's `amount` is all NULL and its `note` too; later chunks hold integers, then decimals
        connection.executemany("INSERT INTO events VALUES (?, ?, ?)",
                               [(i, None if i < 250 else i if i < 500 else i / 4, None if i < 250 else f"n{i}")
                                for i in range(1_000)])
    folder = tmp_path / "query"
    rows = query_to_parquet(f"sqlite:///{path}", "SELECT * FROM events ORDER BY id", folder, max_rows=10_000,
                            chunk_rows=250)
    parts = sorted(folder.glob("*.parquet"))
    assert rows == 1_000 and len(parts) == 4
    assert len({pq.read_schema(part).remove_metadata().to_string() for part in parts}) == 1
    table = pd.read_parquet(folder)
    assert table["amount"].isna().sum() == 250 and table["amount"].iloc[-1] == 999 / 4
    assert table["note"].iloc[-1] == "n999" and table["id"].tolist() == list(range(1_000))


def test_a_result_past_the_row_limit_is_refused_and_leaves_no_folder(sqlite_source, tmp_path):
    with pytest.raises(TooLargeError, match="more than 20 rows"):
        query_to_parquet(f"sqlite:///{sqlite_source}", "SELECT * FROM customers", tmp_path / "query", max_rows=20,
                         chunk_rows=10)
    assert not (tmp_path / "query").exists()
