"""Reading a user's file into a table: the one place that knows file formats, encodings and delimiters.

Users hand Poise whatever their tools export: Latin-1 CSVs with `;`, Excel TSVs, Parquet. This module reads
them robustly (encoding guessed, delimiter sniffed, column names checked) and records how each file was read,
for the data card. Every problem a user can fix is raised as `DataError` naming the file.
"""

import codecs
import csv
import glob
import hashlib
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import charset_normalizer
import pandas as pd

from poise.agents.errors import DataError

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
DELIMITERS = (",", ";", "\t", "|")
READ_CHUNK_BYTES = 1 << 20
SNIFF_SAMPLE_BYTES = 64 * 1024
DETECT_SAMPLE_BYTES = 1 << 20


# Only pandas' own missing-value tokens ('', 'NA', 'N/A', 'NULL', 'NaN', 'None', 'n/a', 'null', ...) are missing unless
# the user names more (`na_values`). Real tables use words such as 'none' and '?' as values: `airbag`/`none` and
# `belted`/`none` are strong predictors of a crash table, and reading them as missing made each column "one value plus
# missing", which was then dropped as constant.
def load_table(source: str | Path, *, max_bytes: int = 2_000_000_000,
               na_values: Sequence[str] = ()) -> tuple[pd.DataFrame, dict]:
    """Read a CSV/TSV/TXT or Parquet file; return the table and how it was read.

    Cells equal to one of `na_values` are missing, beside pandas' default missing-value tokens."""
    path = Path(source).expanduser().resolve()
    if is_parquet_set(source):
        return _read_parquet_set(source, max_bytes, [str(token) for token in na_values])
    if not path.exists():
        raise DataError(f"{path}: file not found")
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


GLOB_CHARS = "*?["  # a source holding one of these is a glob


def _is_glob(text: str) -> bool:
    return any(char in text for char in GLOB_CHARS)


def parquet_files(source: str | Path) -> list[Path]:
    """The Parquet files a source names (a file, a folder of .parquet files, or a glob), or [] for other sources."""
    text = str(source)
    if _is_glob(text):
        matches = (Path(match) for match in glob.glob(str(Path(text).expanduser()), recursive=True))
    else:
        path = Path(text).expanduser()
        matches = path.rglob("*") if path.is_dir() else iter([path])
    return sorted(match.resolve() for match in matches if match.suffix.lower() in PARQUET_SUFFIXES and match.is_file())


def is_parquet_set(source: str | Path) -> bool:
    """Whether a source names a folder or glob of Parquet files, read as one table, rather than one file."""
    text = str(source)
    return _is_glob(text) or Path(text).expanduser().is_dir()


def _read_parquet_set(source: str | Path, max_bytes: int, na_values: list[str]) -> tuple[pd.DataFrame, dict]:
    """A folder or glob of Parquet files (the parts a Spark or Polars job writes) read as one table."""
    import pyarrow.parquet as pq

    files = parquet_files(source)
    if not files:
        raise DataError(f"{source}: " + ("is a directory with no Parquet files in it" if Path(source).is_dir()
                                         else "no Parquet files match this pattern"))
    check_same_columns(files)
    size = sum(path.stat().st_size for path in files)
    if size > max_bytes:
        raise DataError(f"{source}: files total {size:,} bytes, larger than the limit of {max_bytes:,} bytes")
    try:
        df = pq.read_table([str(path) for path in files]).to_pandas()
    except Exception as error:  # pyarrow raises many types (ArrowInvalid, OSError...) for bad or unlike files
        raise DataError(f"{source}: cannot read its {len(files)} files as one Parquet table "
                        f"({first_line(error)})") from None
    df.columns = clean_column_names([str(name) for name in df.columns], Path(str(source)))
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise DataError(f"{source}: no {'columns' if df.shape[1] == 0 else 'data rows'} found")
    return _uniform_objects(mask_missing(df, na_values)), parquet_set_info(source, files, na_values)


def parquet_set_info(source: str | Path, files: list[Path], na_values: Sequence[str]) -> dict:
    """How a Parquet source of one or more files was read, for the data card (what `load_table` records of a CSV)."""
    return {"source": str(source), "format": "parquet", "delimiter": None, "encoding": None,
            "bytes": sum(path.stat().st_size for path in files), "files": len(files),
            "content_hash": files_hash(files), "na_values": [str(token) for token in na_values]}


def parquet_chunks(files: list[Path], na_values: Sequence[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """A Parquet source (file, folder or glob) as tables of at most `chunk_rows` rows, read as `load_table` reads
    the whole: the same column names, missing-value tokens and pandas types (each file's pandas metadata applied)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_same_columns(files)
    rows = 0
    for path in files:
        try:
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                rows += batch.num_rows
                yield parquet_frame(pa.Table.from_batches([batch]), parquet.schema_arrow.metadata, path, na_values)
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"{path}: cannot read as Parquet ({first_line(error)})") from None
    if rows == 0:
        raise DataError(f"{files[0] if len(files) == 1 else files[0].parent}: no data rows")


def parquet_frame(batch, metadata: dict | None, path: Path, na_values: Sequence[str]) -> pd.DataFrame:
    """One Arrow batch of a Parquet file as `load_table` reads the whole: the file's pandas metadata (`metadata`, its
    schema's) applied, the column names cleaned, the missing-value tokens masked. Batch prediction's chunks and its
    Ray Data batches both go through here, so the two paths read every row alike."""
    table = batch.replace_schema_metadata(metadata).to_pandas()
    table.columns = clean_column_names([str(name) for name in table.columns], path)
    return mask_missing(table, na_values)


def check_same_columns(files: list[Path]) -> None:
    """Refuse parts whose columns differ: read as one table, a part's missing columns would become empty cells."""
    import pyarrow.parquet as pq

    try:
        names = [pq.read_schema(path).names for path in files]
    except Exception as error:  # pyarrow raises many types (ArrowInvalid, OSError...) for a bad file
        raise DataError(f"{files[0].parent}: cannot read as Parquet ({first_line(error)})") from None
    for path, columns in zip(files[1:], names[1:]):
        if set(columns) != set(names[0]):
            differ = sorted(set(columns) ^ set(names[0]))
            raise DataError(f"{path}: its columns differ from {files[0].name}'s ({', '.join(map(repr, differ[:5]))}); "
                            "the parts of one table must have the same columns")


def files_hash(files: list[Path]) -> str:
    """SHA-256 over the files' names and bytes, in order, a megabyte at a time."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(READ_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


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
        raise DataError(f"{path}: cannot read as Parquet ({first_line(error)})") from None
    df.columns = clean_column_names([str(name) for name in df.columns], path)
    return mask_missing(df, na_values)


def mask_missing(df: pd.DataFrame, na_values: Sequence[str]) -> pd.DataFrame:
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
    raise DataError(f"{path}: cannot decode the text as {' or '.join(encodings)} ({first_line(failure)})")


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
        raise DataError(f"{path}: cannot parse as {delimiter!r}-delimited text ({first_line(error)})") from None
    raw_names = header.iloc[0].tolist()
    if len(raw_names) != df.shape[1] or not isinstance(df.index, pd.RangeIndex):
        raise DataError(f"{path}: rows have more fields than the header ({len(raw_names)} columns)")
    df.columns = clean_column_names(raw_names, path)
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


def clean_column_names(raw_names: list[str], path: Path) -> list[str]:
    names = [str(name).strip() for name in raw_names]
    names = [name or f"column_{position}" for position, name in enumerate(names)]
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DataError(f"{path}: duplicate column names: {', '.join(map(repr, duplicates))}")
    return names


def first_line(error: Exception) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
