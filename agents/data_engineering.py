"""Data engineering agent: turn a user's file into a clean, documented training table.

Users hand Poise whatever their tools export: Latin-1 CSVs with `;`, Excel TSVs,
Parquet. Before AutoGluon sees the data, this module reads it robustly, profiles
every column, drops the ones that would silently poison a model (constants, row
ids, target leaks), makes a stratified holdout split and writes a data card, so
every decision about the data is visible and reproducible. Every problem a user
can fix is raised as `DataError` naming the file or column.
"""

import codecs
import csv
import difflib
import hashlib
import html
import io
import json
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import charset_normalizer
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.tree import DecisionTreeClassifier

from agents.errors import DataError, TooLargeError

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
DELIMITERS = (",", ";", "\t", "|")
# Only pandas' own missing-value tokens ('', 'NA', 'N/A', 'NULL', 'NaN', 'None', 'n/a', 'null', ...) are missing unless
# the user names more (`na_values`). Real tables use words such as 'none' and '?' as values: `airbag`/`none` and
# `belted`/`none` are strong predictors of a crash table, and reading them as missing made each column "one value plus
# missing", which was then dropped as constant.
TRUE_TOKENS = {"true", "yes", "y", "t", "1"}
FALSE_TOKENS = {"false", "no", "n", "f", "0"}
ID_NAME = re.compile(r"^(id|uuid|guid|key|index|idx)$|[_\-\s.](id|uuid|guid|key|index|idx)$", re.IGNORECASE)
CAMEL_ID_NAME = re.compile(r"[a-z0-9](Id|ID|Uuid|UUID|Key)$")
MISSING_CATEGORY = "\x00missing"
PRESENT_OR_MISSING = "one value plus missing: kept as a binary feature (whether a value is there is information)"

READ_CHUNK_BYTES = 1 << 20
SNIFF_SAMPLE_BYTES = 64 * 1024
DETECT_SAMPLE_BYTES = 1 << 20
INFERENCE_SAMPLE_ROWS = 2000
TYPE_SHARE = 0.95
ID_UNIQUE_SHARE = 0.99
MAX_INTEGER_CLASSES = 20
# A mostly-unique string column is free text (a title, a comment), featurised as words, when at least this share of its
# values hold whitespace; identifiers ('C-10293', UUIDs, hashes) hold none. Movie titles average two or three words,
# under AutoGluon's own three-word bar for text, so without this they were dropped as high-cardinality categories.
TEXT_SPACE_SHARE = 0.5
MIN_ROWS_PER_CLASS = 4
LEAK_SAMPLE_ROWS = 20_000
LEAK_FOLDS = 3
# A column whose out-of-fold single-column ROC-AUC reaches this is a leak suspect. A re-encoded target
# scores 1.0; genuine strong features of the shipped tables score up to 0.9985 (shuttle_2_vs_5 `A1`:
# 0.9887, 0.9887, 0.9985 by fold seed; segment0 `Hue_mean` 0.986-0.990), so a 0.99 bar dropped a real
# feature on one seed out of three and cost that model 0.024 macro-F1.
LEAK_AUC = 0.999


# --- loading ------------------------------------------------------------------


def load_table(source: str | Path, *, max_bytes: int = 2_000_000_000,
               na_values: Sequence[str] = ()) -> tuple[pd.DataFrame, dict]:
    """Read a CSV/TSV/TXT or Parquet file; return the table and how it was read.

    Cells equal to one of `na_values` are missing, beside pandas' default missing-value tokens."""
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | PARQUET_SUFFIXES:
        supported = ", ".join(sorted(CSV_SUFFIXES | PARQUET_SUFFIXES))
        raise DataError(f"{path}: unsupported file type {suffix or '(no suffix)'!r}; supported: {supported}")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"{path}: file is {size:,} bytes, larger than the limit of {max_bytes:,} bytes")
    if size == 0:
        raise DataError(f"{path}: file is empty")

    content_hash, is_utf8 = _hash_and_check_utf8(path)
    na_values = [str(token) for token in na_values]
    info = {"source": str(path), "format": "csv", "delimiter": None, "encoding": None,
            "bytes": size, "content_hash": content_hash, "na_values": na_values}
    if suffix in PARQUET_SUFFIXES:
        info["format"] = "parquet"
        df = _read_parquet(path, na_values)
    else:
        df, info["delimiter"], info["encoding"] = _read_delimited(path, is_utf8, na_values)
    if df.shape[1] == 0:
        raise DataError(f"{path}: no columns found")
    if df.shape[0] == 0:
        raise DataError(f"{path}: no data rows (only a header)")
    return _uniform_objects(df), info


def _uniform_objects(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding values of several Python types (numbers beside text, as SQL drivers and hand-built
    Parquet files can give) as text, so the column has one type from profiling to the job's own Parquet files."""
    for name in df.columns:
        if df[name].dtype == object:
            kinds = {type(value) for value in df[name].dropna().head(100_000)}
            if len(kinds) > 1:
                missing = df[name].isna()
                df[name] = df[name].astype(str).mask(missing)
    return df


SQL_TIMEOUT_SECONDS = 300.0  # Settings.sql_timeout's default
_SQLITE_READ_ACTIONS = {20, 21, 22, 31, 33}  # SQLITE_READ, _SELECT, _TRANSACTION, _FUNCTION, _RECURSIVE (sqlite3.h)
_SQLITE_CONNECT_OPTIONS = {"uri", "mode", "check_same_thread", "timeout", "isolation_level", "detect_types",
                           "cached_statements", "autocommit"}


def read_sql(url: str, query: str, *, max_rows: int, timeout: float = SQL_TIMEOUT_SECONDS) -> pd.DataFrame:
    """Rows of one SQL query against a SQLAlchemy URL, refused past `max_rows`; any database error is the
    query's problem and is reported as such.

    The query can only read: PostgreSQL runs it in a `READ ONLY` transaction (also the session's default) with
    `statement_timeout`, prepared, so a text holding several statements (`SELECT 1; COMMIT; DROP ...`) is
    refused; SQLite opens the file read-only (`mode=ro`, `PRAGMA query_only`) and interrupts a query still
    running after `timeout` seconds. Other databases are refused: neither can be enforced on them here."""
    import time

    from sqlalchemy import text
    from sqlalchemy.exc import ArgumentError

    try:
        engine, dialect = _read_only_engine(url, timeout)
    except ArgumentError as error:
        raise DataError(f"SQL source URL cannot be used: {str(error).splitlines()[0][:200]}") from None
    try:
        with engine.connect() as connection:
            if dialect == "postgresql":
                millis = max(1, round(timeout * 1000))
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")  # the first statement of the transaction
                connection.exec_driver_sql(f"SET LOCAL statement_timeout = {millis}")
                connection.exec_driver_sql("SELECT 1")  # takes the first snapshot: READ WRITE can no longer be set
            else:
                sqlite = connection.connection.driver_connection
                deadline = time.monotonic() + timeout
                sqlite.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
                # only reading is authorised: no PRAGMA (query_only=OFF), no ATTACH (which creates a missing file)
                sqlite.set_authorizer(lambda action, *_: 0 if action in _SQLITE_READ_ACTIONS else 1)  # OK, DENY
            chunks, rows = [], 0
            for chunk in pd.read_sql_query(text(query), connection, chunksize=50_000):
                rows += len(chunk)
                if rows > max_rows:
                    raise TooLargeError(f"query returns more than {max_rows} rows")
                chunks.append(chunk)
    except DataError:
        raise
    except Exception as error:
        raise _query_problem(error, timeout) from None
    finally:
        engine.dispose()
    if not chunks:
        raise DataError("query returned no rows")
    return pd.concat(chunks, ignore_index=True)


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


def _query_problem(error: Exception, timeout: float) -> DataError:
    """A failed SQL source query as the user should read it: refused writes and timeouts said plainly."""
    cause = getattr(error, "orig", None) or error
    message = str(cause).splitlines()[0][:300] if str(cause) else type(cause).__name__
    state = getattr(cause, "sqlstate", None)
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


def _hash_and_check_utf8(path: Path) -> tuple[str, bool]:
    """One pass over the file: SHA-256 of the bytes and whether they are valid UTF-8."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    is_utf8 = True
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK_BYTES):
            digest.update(chunk)
            if is_utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    is_utf8 = False
    if is_utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            is_utf8 = False
    return digest.hexdigest(), is_utf8


def _read_parquet(path: Path, na_values: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises many types (ArrowInvalid, OSError...) for a bad file
        raise DataError(f"{path}: cannot read as Parquet ({_first_line(error)})") from None
    df.columns = _clean_column_names([str(name) for name in df.columns], path)
    return _mask_missing(df, na_values)


def _mask_missing(df: pd.DataFrame, na_values: Sequence[str]) -> pd.DataFrame:
    """`df` with cells equal to a user's missing-value token set missing: text cells equal to a token, number
    cells equal to a token that is a number (what `read_csv(na_values=...)` does to a CSV)."""
    if not na_values:
        return df
    numbers = pd.to_numeric(pd.Series(list(na_values), dtype=object), errors="coerce").dropna().unique()
    df = df.copy()
    for name in df.columns:
        column = df[name]
        if column.dtype == object or isinstance(column.dtype, (pd.CategoricalDtype, pd.StringDtype)):
            text = column.astype(object)
            df[name] = text.mask(text.map(lambda value: isinstance(value, str) and value in na_values))
        elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) and len(numbers):
            df[name] = column.mask(column.isin(numbers))
    return df


def _read_delimited(path: Path, is_utf8: bool, na_values: list[str]) -> tuple[pd.DataFrame, str, str]:
    with path.open("rb") as handle:
        head = handle.read(DETECT_SAMPLE_BYTES)
    encodings = _candidate_encodings(head, is_utf8, path)
    for encoding in encodings:
        try:
            df, delimiter = _parse_delimited(path, head, encoding, na_values)
            return df, delimiter, encoding
        except UnicodeDecodeError as error:  # a guess from the first megabyte can fail further on
            failure = error
    raise DataError(f"{path}: cannot decode the text as {' or '.join(encodings)} ({_first_line(failure)})")


def _parse_delimited(path: Path, head: bytes, encoding: str, na_values: list[str]) -> tuple[pd.DataFrame, str]:
    sample_text = head[:SNIFF_SAMPLE_BYTES].decode(encoding, errors="replace")
    delimiter = _sniff_delimiter(sample_text, truncated=len(head) > SNIFF_SAMPLE_BYTES, suffix=path.suffix.lower())
    read_options = {"sep": delimiter, "encoding": encoding}
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, na_filter=False, **read_options)
        df = pd.read_csv(path, na_values=na_values, keep_default_na=True, low_memory=False, **read_options)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no columns found") from None
    except (pd.errors.ParserError, csv.Error) as error:
        raise DataError(f"{path}: cannot parse as {delimiter!r}-delimited text ({_first_line(error)})") from None
    raw_names = header.iloc[0].tolist()
    if len(raw_names) != df.shape[1] or not isinstance(df.index, pd.RangeIndex):
        raise DataError(f"{path}: rows have more fields than the header ({len(raw_names)} columns)")
    df.columns = _clean_column_names(raw_names, path)
    return df, delimiter


def _candidate_encodings(head: bytes, is_utf8: bool, path: Path) -> list[str]:
    """UTF-8 (BOM-aware) if valid, else charset_normalizer's confident guess, then Latin-1."""
    if head.startswith(codecs.BOM_UTF8):
        return ["utf-8-sig"]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return ["utf-16"]
    if b"\x00" in head:
        raise DataError(f"{path}: looks like a binary file, not delimited text")
    if is_utf8:
        return ["utf-8"]
    matches = list(charset_normalizer.from_bytes(head))
    if matches:
        least_chaos = min(match.percent_chaos for match in matches)
        calm = [match for match in matches if match.percent_chaos == least_chaos]
        best_coherence = max(match.percent_coherence for match in calm)
        best = [match.encoding for match in calm if match.percent_coherence == best_coherence]
        # Ties are common between Western code pages; cp1252 is what spreadsheets write.
        if "cp1252" in best:
            return ["cp1252", "latin-1"]
        if best_coherence > 0:  # zero coherence means no language evidence: not a real guess
            return [best[0], "latin-1"]
    return ["latin-1"]


def _sniff_delimiter(sample_text: str, *, truncated: bool, suffix: str) -> str:
    """The delimiter giving the most rows with the same number (>1) of fields."""
    lines = sample_text.splitlines()
    if truncated and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut in the middle
    text = "\n".join(lines[:200])
    best_delimiter, best_score = None, (0.0, 0)
    for delimiter in DELIMITERS:
        widths = [len(row) for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
        if not widths:
            continue
        width, count = Counter(widths).most_common(1)[0]
        score = (count / len(widths), width)
        if width > 1 and score > best_score:
            best_delimiter, best_score = delimiter, score
    return best_delimiter or ("\t" if suffix == ".tsv" else ",")


def _clean_column_names(raw_names: list[str], path: Path) -> list[str]:
    names = [str(name).strip() for name in raw_names]
    names = [name or f"column_{position}" for position, name in enumerate(names)]
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DataError(f"{path}: duplicate column names: {', '.join(map(repr, duplicates))}")
    return names


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- profiling ----------------------------------------------------------------


def profile_table(
    df: pd.DataFrame,
    target: str,
    *,
    drop_columns: Sequence[str] = (),
    keep_columns: Sequence[str] = (),
    weight_column: str | None = None,
    seed: int = 0,
) -> dict:
    """Describe the table and decide which columns are usable features (JSON-serialisable).

    `weight_column` holds per-row training weights (drift retraining sets it): never a feature."""
    if target not in df.columns:
        raise DataError(_target_not_found(target, [str(name) for name in df.columns]))
    _check_column_options(df, target, drop_columns, keep_columns)
    if weight_column is not None:
        _check_weight_column(df, target, weight_column)
    target_profile = _profile_target(df[target], target)
    is_classification = target_profile["problem_type"] != "regression"
    leak_rows, class_codes = _leak_sample(df, target, seed) if is_classification else (None, None)

    columns, dropped, features = [], [], []
    for name in df.columns:
        if name == weight_column:
            continue
        entry = _describe_column(df[name], name, seed)
        if name == target:
            columns.append(entry | {"role": "target", "flags": [], "leak_auc": None, "action": "keep", "reason": None})
            continue
        flags = _automatic_flags(df[name], entry)
        auc = None
        if leak_rows is not None and name not in drop_columns:
            auc = _single_column_auc(leak_rows[name], entry["inferred_type"], class_codes, seed)
            if auc is not None and auc >= LEAK_AUC:
                flags["leak_suspect"] = f"leak_suspect: alone separates the target (ROC-AUC {auc:.3f})"
        entry |= {"role": "feature", "flags": list(flags), "leak_auc": auc}
        reasons = list(flags.values())
        if name in drop_columns:
            entry["action"], entry["reason"] = "drop", "dropped by user"
        elif reasons and name not in keep_columns:
            entry["action"], entry["reason"] = "drop", reasons[0]
        else:
            entry["action"] = "keep"
            entry["reason"] = (f"kept by user despite: {'; '.join(reasons)}" if reasons else
                               PRESENT_OR_MISSING if entry["n_unique"] == 1 else None)
        if entry["action"] == "drop":
            dropped.append({"column": name, "reason": entry["reason"]})
        else:
            features.append(name)
        columns.append(entry)

    if not features:
        why = ", ".join(f"{item['column']!r} ({item['reason']})" for item in dropped) or "the table has only the target"
        raise DataError(f"no usable feature columns: {why}")
    return {
        "n_rows": int(df.shape[0]),
        "n_columns": int(df.shape[1]),
        "n_duplicate_rows": int(df.duplicated().sum()),
        "target": target_profile,
        "columns": columns,
        "dropped": dropped,
        "features": features,
        "weight_column": weight_column,
    }


def _target_not_found(target: str, available: list[str]) -> str:
    by_lower = {name.lower(): name for name in available}
    close = difflib.get_close_matches(target.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"target column {target!r} not found; did you mean {by_lower[close[0]]!r}?"
    shown = ", ".join(map(repr, available[:10])) + (", ..." if len(available) > 10 else "")
    return f"target column {target!r} not found; available columns ({len(available)}): {shown}"


def _check_column_options(
    df: pd.DataFrame, target: str, drop_columns: Sequence[str], keep_columns: Sequence[str]
) -> None:
    for option, names in (("drop_columns", drop_columns), ("keep_columns", keep_columns)):
        unknown = [name for name in names if name not in df.columns]
        if unknown:
            raise DataError(f"unknown column(s) in {option}: {', '.join(map(repr, unknown))}")
        if target in names:
            raise DataError(f"{option} cannot include the target column {target!r}")
    both = sorted(set(drop_columns) & set(keep_columns))
    if both:
        raise DataError(f"column(s) in both drop_columns and keep_columns: {', '.join(map(repr, both))}")


def _check_weight_column(df: pd.DataFrame, target: str, weight_column: str) -> None:
    if weight_column not in df.columns or weight_column == target:
        raise DataError(f"weight column {weight_column!r} is not a non-target column of the table")
    weights = pd.to_numeric(df[weight_column], errors="coerce")
    if weights.isna().any() or (weights < 0).any() or not (weights > 0).any():
        raise DataError(f"weight column {weight_column!r} must hold non-negative numbers, not all zero")


def _profile_target(series: pd.Series, name: str) -> dict:
    values = series.dropna()
    n_missing = int(series.isna().sum())
    distinct = values.unique()
    if len(distinct) == 0:
        raise DataError(f"target {name!r} has no values: every row is missing")
    if len(distinct) == 1:
        raise DataError(f"target {name!r} has only one class ({_plain(distinct[0])!r}); "
                        "a model needs at least two different target values to learn from")
    numbers = pd.to_numeric(values, errors="coerce")
    if len(distinct) == 2:
        problem_type = "binary"
    elif numbers.notna().all() and (not _is_integer_valued(numbers) or len(distinct) > MAX_INTEGER_CLASSES):
        problem_type = "regression"
    else:
        problem_type = "multiclass"
    summary = {"name": name, "problem_type": problem_type, "class_counts": None, "minority_class": None,
               "majority_class": None, "imbalance_ratio": None, "n_missing": n_missing}
    if problem_type == "regression":
        return summary
    counts = _class_counts(_label_strings(values))
    too_small = {label: count for label, count in counts.items() if count < MIN_ROWS_PER_CLASS}
    if too_small:
        listed = ", ".join(f"{label!r} ({count} rows)" for label, count in too_small.items())
        raise DataError(f"target {name!r}: too few rows for class(es) {listed}; every class needs at least "
                        f"{MIN_ROWS_PER_CLASS} rows so both training and holdout contain it")
    labels = list(counts)
    summary.update(class_counts=counts, majority_class=labels[0], minority_class=labels[-1],
                   imbalance_ratio=round(counts[labels[0]] / counts[labels[-1]], 4))
    return summary


def _class_counts(labels: pd.Series) -> dict[str, int]:
    counts = labels.value_counts()
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {str(label): int(count) for label, count in ordered}


def _label_strings(values: pd.Series) -> pd.Series:
    """Class labels (non-null) as strings: 1, 1.0 and '1' all become '1'."""
    return _whole_floats_as_ints(values).astype(str)


def _whole_floats_as_ints(values: pd.Series) -> pd.Series:
    """Integers that pandas read as floats (a column with NaN elsewhere) back to int64, for labels."""
    if pd.api.types.is_float_dtype(values) and values.notna().all() and _is_integer_valued(values):
        return values.astype("int64")
    return values


def _is_integer_valued(numbers: pd.Series) -> bool:
    finite = numbers.dropna().to_numpy(dtype=float)
    return bool(np.all(np.isfinite(finite)) and np.all(np.mod(finite, 1) == 0))


def _describe_column(series: pd.Series, name: str, seed: int) -> dict:
    n_missing = int(series.isna().sum())
    return {
        "name": name,
        "inferred_type": _infer_type(series, seed),
        "n_missing": n_missing,
        "missing_share": round(n_missing / len(series), 4) if len(series) else 0.0,
        "n_unique": int(series.nunique(dropna=True)),
    }


def _infer_type(series: pd.Series, seed: int) -> str:
    values = series.dropna()
    if series.dtype == bool or _is_boolean_like(values):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if values.empty:
        return "categorical"
    if len(values) > INFERENCE_SAMPLE_ROWS:
        values = values.sample(INFERENCE_SAMPLE_ROWS, random_state=seed)
    texts = values.astype(str).str.strip()
    if pd.to_numeric(texts, errors="coerce").notna().mean() >= TYPE_SHARE:
        return "numeric"
    dates = to_utc_naive(texts.where(texts.str.contains(r"\d")))
    if dates.notna().mean() >= TYPE_SHARE:
        return "datetime"
    mostly_unique = series.nunique(dropna=True) > 0.5 * series.notna().sum()
    if mostly_unique and (texts.str.len().mean() > 30 or texts.str.split().str.len().mean() >= 4
                          or texts.str.contains(r"\s").mean() >= TEXT_SPACE_SHARE):
        return "text"
    return "categorical"


def _is_boolean_like(values: pd.Series) -> bool:
    distinct = pd.Series(values.unique())
    if len(distinct) > 10:  # two values, a few spellings at most (Yes/yes/YES); skip the string conversion
        return False
    tokens = set(_boolean_tokens(distinct))
    return len(tokens) == 2 and tokens <= TRUE_TOKENS | FALSE_TOKENS


def _boolean_tokens(values: pd.Series) -> pd.Series:
    """Non-null values as lower-case strings, whole-number floats without '.0'."""
    return _whole_floats_as_ints(values.dropna()).astype(str).str.strip().str.lower()


def _automatic_flags(series: pd.Series, entry: dict) -> dict[str, str]:
    """Flags that need no target, each with the reason shown to the user."""
    n_present = len(series) - entry["n_missing"]
    if n_present == 0:
        return {"all_null": f"all_null: all {len(series)} values are missing"}
    if entry["n_unique"] <= 1 and entry["n_missing"] == 0:
        return {"constant": f"constant: single value {_plain(series.dropna().iloc[0])!r}"}
    if _is_id_like(series, entry):
        return {"id_like": f"id_like: {entry['n_unique']} unique values in {n_present} rows"}
    return {}


def _is_id_like(series: pd.Series, entry: dict) -> bool:
    values = series.dropna()
    if entry["n_unique"] < ID_UNIQUE_SHARE * len(values):
        return False
    if entry["inferred_type"] == "categorical":
        return True
    if entry["inferred_type"] != "numeric":
        return False
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if not _is_integer_valued(numbers):
        return False  # continuous measurements are unique without being identifiers
    name = str(entry["name"])
    if ID_NAME.search(name) or CAMEL_ID_NAME.search(name):
        return True
    consecutive = numbers.max() - numbers.min() + 1 == entry["n_unique"]
    return bool(consecutive or numbers.is_monotonic_increasing or numbers.is_monotonic_decreasing)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


# --- leak detection -----------------------------------------------------------


def _leak_sample(df: pd.DataFrame, target: str, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A stratified sample (about LEAK_SAMPLE_ROWS rows) and integer class codes for it."""
    labeled = df[df[target].notna()].reset_index(drop=True)
    labels = _label_strings(labeled[target])
    if len(labeled) > LEAK_SAMPLE_ROWS:
        labels = labels.groupby(labels).sample(frac=LEAK_SAMPLE_ROWS / len(labeled), random_state=seed)
    counts = labels.value_counts()
    labels = labels[labels.isin(counts.index[counts >= LEAK_FOLDS])]  # stratified folds need 3 per class
    sample = labeled.loc[labels.index].reset_index(drop=True)
    _, class_codes = np.unique(labels.to_numpy(), return_inverse=True)
    return sample, class_codes


def _single_column_auc(series: pd.Series, inferred_type: str, class_codes: np.ndarray, seed: int) -> float | None:
    """Out-of-fold ROC-AUC of predicting the target from this one column (None for text/dates)."""
    n_classes = int(class_codes.max()) + 1 if len(class_codes) else 0
    if n_classes < 2 or inferred_type not in ("numeric", "boolean", "categorical"):
        return None
    splitter = StratifiedKFold(LEAK_FOLDS, shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros(len(class_codes)), class_codes))
    if inferred_type == "categorical":
        categories = series.where(series.notna(), MISSING_CATEGORY).astype(str).to_numpy()
        proba = _out_of_fold_class_rates(categories, class_codes, n_classes, folds)
    else:
        if inferred_type == "boolean":
            numbers = _boolean_tokens(series).isin(TRUE_TOKENS).astype(float).reindex(series.index)
        else:
            numbers = pd.to_numeric(series, errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)
        present = numbers.dropna()
        sentinel = present.min() - (present.max() - present.min()) - 1 if len(present) else 0.0
        feature = numbers.fillna(sentinel).to_numpy().reshape(-1, 1)
        proba = _out_of_fold_tree_proba(feature, class_codes, n_classes, folds, seed)
    if n_classes == 2:
        auc = roc_auc_score(class_codes, proba[:, 1])
    else:
        auc = roc_auc_score(class_codes, proba, multi_class="ovr", average="macro", labels=list(range(n_classes)))
    return round(float(auc), 4)


def _out_of_fold_tree_proba(
    feature: np.ndarray, class_codes: np.ndarray, n_classes: int, folds: list, seed: int
) -> np.ndarray:
    """Class probabilities of a depth-3 tree on one column, each row predicted by the folds it is not in.

    What `cross_val_predict` computes, without its per-call setup (a third of a wide table's profiling time)."""
    proba = np.zeros((len(class_codes), n_classes))
    for train_rows, test_rows in folds:
        tree = DecisionTreeClassifier(max_depth=3, random_state=seed).fit(feature[train_rows], class_codes[train_rows])
        proba[np.ix_(test_rows, tree.classes_)] = tree.predict_proba(feature[test_rows])
    return proba


def _out_of_fold_class_rates(
    categories: np.ndarray, class_codes: np.ndarray, n_classes: int, folds: list
) -> np.ndarray:
    """Target-mean encoding per class, each row encoded by the folds it is not in."""
    one_hot = np.eye(n_classes)[class_codes]
    proba = np.zeros((len(class_codes), n_classes))
    for train_rows, test_rows in folds:
        prior = one_hot[train_rows].mean(axis=0)
        rates = pd.DataFrame(one_hot[train_rows]).groupby(categories[train_rows]).mean()
        encoded = rates.reindex(categories[test_rows]).to_numpy()
        unseen = np.isnan(encoded).any(axis=1)
        encoded[unseen] = prior
        proba[test_rows] = encoded
    return proba


# --- split --------------------------------------------------------------------


def feature_types(profile: dict) -> dict[str, str]:
    """Each feature's inferred type, in feature order."""
    types = {entry["name"]: entry["inferred_type"] for entry in profile["columns"]}
    return {name: types[name] for name in profile["features"]}


def features_of_type(profile: dict, inferred_type: str) -> list[str]:
    """The features of one inferred type, in feature order."""
    return [name for name, kind in feature_types(profile).items() if kind == inferred_type]


def boolean_tokens() -> dict[str, list[str]]:
    """The spellings training reads as true and as false, for the served model to read its rows the same way."""
    return {"true": sorted(TRUE_TOKENS), "false": sorted(FALSE_TOKENS)}


def prepare_split(
    df: pd.DataFrame, profile: dict, *, holdout_fraction: float = 0.2, seed: int = 0,
    holdout: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Typed train and holdout tables: a stratified split of `df`, or — when a `holdout` table is given —
    all of `df` to train on and that table, typed the same way, to score.

    Exact duplicate rows are kept: in tables like network logs they are real repeated
    observations, and dropping them would change the class prior. They are counted in
    the summary because identical rows can sit on both sides of the split."""
    target = profile["target"]["name"]
    weight_column = profile.get("weight_column")
    is_classification = profile["target"]["problem_type"] != "regression"
    table, labeled = _typed_rows(df, profile, "the table", weight_column)
    n_missing_target = len(df) - len(table)

    given = holdout is not None
    if given:
        train, holdout = table, _typed_rows(holdout, profile, "the holdout table", None)[0]
        if holdout.empty:
            raise DataError("the holdout table has no rows with a target")
        unknown = sorted(set(holdout[target]) - set(train[target])) if is_classification else []
        if unknown:
            raise DataError(f"the holdout table has classes the training table lacks: "
                            f"{', '.join(map(repr, unknown[:5]))}")
        holdout_fraction = len(holdout) / (len(train) + len(holdout))
    else:
        try:
            train, holdout = train_test_split(table, test_size=holdout_fraction, random_state=seed,
                                              stratify=table[target] if is_classification else None)
        except ValueError as error:
            raise DataError(f"cannot split {len(table)} rows into train and holdout: {_first_line(error)}") from None
        if is_classification:
            train, holdout = _ensure_every_class_in_holdout(train, holdout, target, seed)
        if weight_column:  # training rows carry their weight; the holdout is scored unweighted
            holdout = holdout.drop(columns=[weight_column])
    train, holdout = train.reset_index(drop=True), holdout.reset_index(drop=True)
    summary = {
        "n_rows_used": len(table),
        "n_duplicate_rows": int(labeled.duplicated().sum()),
        "n_missing_target_dropped": int(n_missing_target),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "train_class_counts": _class_counts(train[target]) if is_classification else None,
        "holdout_class_counts": _class_counts(holdout[target]) if is_classification else None,
        "holdout_fraction": round(float(holdout_fraction), 4),
        "holdout_source": "given" if given else "split",
        "seed": int(seed),
    }
    return train, holdout, summary


def _typed_rows(df: pd.DataFrame, profile: dict, what: str,
                weight_column: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of `df` with a target, in the profile's columns and types, and the same rows as read."""
    target = profile["target"]["name"]
    wanted = [*profile["features"], target, *([weight_column] if weight_column else [])]
    missing = [name for name in wanted if name not in df.columns]
    if missing:
        raise DataError(f"columns in the profile but not in {what}: {', '.join(map(repr, missing))}")
    labeled = df.loc[df[target].notna(), wanted].reset_index(drop=True)
    table = cast_columns(labeled, feature_types(profile))
    labels = labeled[target]
    table[target] = _label_strings(labels) if profile["target"]["problem_type"] != "regression" \
        else pd.to_numeric(labels)
    if weight_column:
        table[weight_column] = pd.to_numeric(labeled[weight_column]).astype("float64")
    return table, labeled


def cast_columns(frame: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """Columns cast as training cast them (`types`: column → inferred type), so live rows compare with
    training rows value for value."""
    return pd.DataFrame({name: _cast_column(frame[name], kind) for name, kind in types.items()}, index=frame.index)


def _cast_column(series: pd.Series, inferred_type: str) -> pd.Series:
    if inferred_type == "numeric":
        numbers = pd.to_numeric(series, errors="coerce")
        # narrow types (float32, int8: what Polars, Spark and numpy write) widen, so the served signature accepts the
        # float64 and int64 that a CSV of the same table reads as
        if pd.api.types.is_float_dtype(numbers):
            return numbers.astype("float64")
        if pd.api.types.is_integer_dtype(numbers):
            return numbers.astype("int64")
        return numbers
    if inferred_type == "boolean":
        tokens = _boolean_tokens(series)
        words = tokens.map(lambda token: "true" if token in TRUE_TOKENS else "false" if token in FALSE_TOKENS else None)
        return pd.Series(pd.Categorical(words.reindex(series.index), categories=["false", "true"]), index=series.index)
    if inferred_type == "datetime":
        return to_utc_naive(series)
    as_strings = series.where(series.isna(), series.astype(str))
    return as_strings.astype("category") if inferred_type == "categorical" else as_strings.astype(object)


def to_utc_naive(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC: offsets (`+00:00`, `Z`, `-05:00`) applied, naive values taken as UTC, unreadable values
    missing. A time-zone-aware column breaks MLflow's signature, and two offsets in one column break pandas."""
    if pd.api.types.is_datetime64_any_dtype(values) and getattr(values.dtype, "tz", None) is None:
        return values.astype("datetime64[ns]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(values, format="mixed", errors="coerce", utc=True)
    return parsed.dt.tz_localize(None).astype("datetime64[ns]")


def _ensure_every_class_in_holdout(train: pd.DataFrame, holdout: pd.DataFrame, target: str, seed: int):
    """Stratified rounding can leave a rare class out of the holdout; move one row of it over."""
    rng = np.random.default_rng(seed)
    train_counts = train[target].value_counts()
    for label in sorted(set(train_counts.index) - set(holdout[target])):
        if train_counts[label] < 2:
            continue
        moved = rng.choice(train.index[train[target] == label].to_numpy())
        holdout = pd.concat([holdout, train.loc[[moved]]])
        train = train.drop(index=moved)
    return train, holdout


# --- data card ----------------------------------------------------------------


def write_data_card(profile: dict, split_summary: dict, load_info: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write data_card.json and data_card.md into out_dir (atomically); return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    card = {"source": load_info, "profile": profile, "split": split_summary}
    json_path = _write_atomically(out_dir / "data_card.json", json.dumps(card, indent=2) + "\n")
    md_path = _write_atomically(out_dir / "data_card.md", _render_markdown(profile, split_summary, load_info))
    return json_path, md_path


def _write_atomically(path: Path, text: str) -> Path:
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def _md(value) -> str:
    """Text safe inside a Markdown table cell: no pipes, newlines, HTML or inline markup."""
    text = html.escape(str(value), quote=False)
    text = re.sub(r"([\\`*_\[\]|])", r"\\\1", text)
    return re.sub(r"\r\n|\r|\n", " ", text)


def _render_markdown(profile: dict, split: dict, load_info: dict) -> str:
    target = profile["target"]
    source = load_info["source"]
    lines = [f"# Data card: {_md(Path(source).name)}", "",
             f"- **Source:** {_md(source)}",
             f"- **SHA-256:** {_md(load_info['content_hash'])}",
             f"- **Format:** {_md(load_info['format'])}"
             + (f" (delimiter {_md(repr(load_info['delimiter']))}, encoding {_md(load_info['encoding'])})"
                if load_info["format"] == "csv" else ""),
             f"- **Shape:** {profile['n_rows']} rows × {profile['n_columns']} columns, "
             f"{profile['n_duplicate_rows']} duplicate rows",
             "- **Missing values:** pandas' default tokens (empty, NA, N/A, NULL, NaN, None, n/a, null, ...)"
             + (f" and {', '.join(_md(repr(token)) for token in load_info['na_values'])}"
                if load_info.get("na_values") else ""), "",
             "## Target", "",
             f"- **Column:** {_md(target['name'])}",
             f"- **Problem type:** {target['problem_type']}",
             f"- **Rows with missing target:** {target['n_missing']}"]
    if target["class_counts"]:
        total = sum(target["class_counts"].values())
        lines += [f"- **Imbalance ratio:** {target['imbalance_ratio']:.2f} (majority {_md(target['majority_class'])}"
                  f" / minority {_md(target['minority_class'])})", "", "| Class | Rows | Share |", "|---|---:|---:|"]
        lines += [f"| {_md(label)} | {count} | {count / total:.1%} |"
                  for label, count in target["class_counts"].items()]
    lines += ["", "## Columns", "",
              "| Column | Type | Missing | Unique | Flags | Action |", "|---|---|---:|---:|---|---|"]
    for column in profile["columns"]:
        action = "target" if column.get("role") == "target" else column["action"]
        if action == "keep" and column.get("reason"):
            action = f"keep ({_md(column['reason'].split(':')[0])})"
        lines.append(f"| {_md(column['name'])} | {column['inferred_type']} | {column['missing_share']:.1%} | "
                     f"{column['n_unique']} | {_md(', '.join(column['flags']))} | {action} |")
    lines += ["", "## Dropped columns", ""]
    lines += [f"- {_md(item['column'])}: {_md(item['reason'])}" for item in profile["dropped"]] or ["None."]
    lines += ["", "## Split", "",
              f"- **Rows used:** {split['n_rows_used']} ({split['n_missing_target_dropped']} rows without target "
              f"dropped; {split['n_duplicate_rows']} exact duplicate rows kept)",
              f"- **Train:** {split['train_rows']} rows; **holdout:** {split['holdout_rows']} rows "
              + ("(a separate table)" if split.get("holdout_source") == "given" else
                 f"(fraction {split['holdout_fraction']}, seed {split['seed']})")]
    if split["train_class_counts"]:
        lines += ["", "| Class | Train | Holdout |", "|---|---:|---:|"]
        lines += [f"| {_md(label)} | {count} | {split['holdout_class_counts'].get(label, 0)} |"
                  for label, count in split["train_class_counts"].items()]
    return "\n".join(lines) + "\n"
