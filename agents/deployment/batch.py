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

from poise.agents.data_engineering.loading import load_table, parquet_chunks, parquet_files
from poise.agents.deployment.signature import predict_table
from poise.agents.errors import SpecError
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

            scored = (_scored(model, chunk) for chunk in parquet_chunks(files, na_values, CHUNK_ROWS))
            rows = _write(partial, out.suffix, scored, source_schema=pq.read_schema(files[0]))
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
