"""Batch prediction: a whole file scored by a registered version and written next to its predictions.

What `poise predict NAME DATA --out FILE` runs. Unlike the API it loads the version for one call, reads
the file with the missing-value tokens the model was trained with, and writes the result atomically
(a `.partial` file renamed into place), so a failed run never leaves half a file behind. A Parquet source
(a file, a folder or a glob of parts) is scored `CHUNK_ROWS` rows at a time, in bounded memory whatever its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException

from poise.agents.data_engineering.loading import (
    check_same_columns,
    clean_column_names,
    first_line,
    load_table,
    mask_missing,
    parquet_files,
)
from poise.agents.deployment.signature import predict_table
from poise.agents.errors import DataError, SpecError
from poise.registry import tracking

CHUNK_ROWS = 100_000  # rows of a Parquet source scored at a time: memory stays bounded whatever the file's size


def batch_predict(settings, name: str, data, out, version: str | None = None) -> tuple[Path, int, str]:
    """Predict a whole table with the champion (or `version`) and write it next to the predictions."""
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    used = version or tracking.champion_version(client, name)
    if used is None:
        from poise.agents.summary import no_champion_error

        raise no_champion_error(settings, client, name, predict_with=(str(data), str(out)))
    try:
        model = tracking.load_model(name, used)
    except MlflowException as error:
        raise SpecError(f"cannot load model '{name}' v{used}: {str(error)[:200]}") from None
    # the file is read with the missing-value tokens the model was trained with
    na_values = model.model_config.get("na_values") or []
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    files = parquet_files(data)
    try:
        if files:
            import pyarrow.parquet as pq

            rows = _write(partial, out.suffix, (_scored(model, chunk) for chunk in parquet_chunks(files, na_values)),
                          source_schema=pq.read_schema(files[0]))
        else:
            table, _ = load_table(data, max_bytes=settings.max_file_bytes, na_values=na_values)
            rows = _write(partial, out.suffix, iter([_scored(model, table)]))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    return out, rows, used


def _scored(model, table: pd.DataFrame) -> pd.DataFrame:
    """The table with the model's predictions beside it (`predicted_label`, `predicted_proba_<class>`)."""
    output = predict_table(model, table)
    return pd.concat([table.reset_index(drop=True), output.reset_index(drop=True).add_prefix("predicted_")], axis=1)


def parquet_chunks(files: list[Path], na_values: list[str]) -> Iterator[pd.DataFrame]:
    """A Parquet source (file, folder or glob) as tables of at most `CHUNK_ROWS` rows, read as `load_table` reads
    the whole: the same column names, missing-value tokens and pandas types (each file's pandas metadata applied)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_same_columns(files)
    rows = 0
    for path in files:
        try:
            parquet = pq.ParquetFile(path)
            batches = parquet.iter_batches(batch_size=CHUNK_ROWS)
            for batch in batches:
                table = pa.Table.from_batches([batch], schema=parquet.schema_arrow).to_pandas()
                table.columns = clean_column_names([str(name) for name in table.columns], path)
                rows += len(table)
                yield mask_missing(table, na_values)
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"{path}: cannot read as Parquet ({first_line(error)})") from None
    if rows == 0:
        raise DataError(f"{files[0] if len(files) == 1 else files[0].parent}: no data rows")


def _write(path: Path, suffix: str, chunks: Iterator[pd.DataFrame], source_schema=None) -> int:
    """Write the scored chunks to one CSV or Parquet file; the rows written. A Parquet file takes its schema from the
    first chunk, except that a column empty there takes the source's type (`source_schema`), not Arrow's null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, writer = 0, None
    try:
        for chunk in chunks:
            if suffix.lower() in (".parquet", ".pq"):
                if writer is None:
                    schema = pa.Table.from_pandas(chunk, preserve_index=False).schema
                    known = {field.name: field for field in source_schema or []}
                    schema = pa.schema([known.get(field.name, field) if pa.types.is_null(field.type) else field
                                        for field in schema], metadata=schema.metadata)
                    writer = pq.ParquetWriter(path, schema)
                writer.write_table(pa.Table.from_pandas(chunk, preserve_index=False, schema=writer.schema))
            else:
                chunk.to_csv(path, index=False, mode="a" if rows else "w", header=not rows)
            rows += len(chunk)
    finally:
        if writer:
            writer.close()
    return rows
