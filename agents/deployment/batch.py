"""Batch prediction: a whole file scored by a registered version and written next to its predictions.

What `poise predict NAME DATA --out FILE` runs. Unlike the API it loads the version for one call, reads
the file with the missing-value tokens the model was trained with, and writes the result atomically
(a `.partial` file renamed into place), so a failed run never leaves half a file behind. A Parquet source
(a file, a folder or a glob of parts) is scored `CHUNK_ROWS` rows at a time, in bounded memory whatever its size:
in this process, or, on a Ray cluster (pipelines/cluster.py), as Ray Data `map_batches` tasks whose worker
processes load the version once, with the batches kept in the source's row order, so both write the same file row
for row. The cluster's nodes load the version from the MLflow store and read the parts from the bucket of
`POISE_S3_URI` (staged there for the run), or without one from the same paths as this process.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException

from poise.agents.data_engineering import object_store
from poise.agents.data_engineering.loading import (
    check_same_columns,
    load_table,
    parquet_chunks,
    parquet_files,
    parquet_frame,
)
from poise.agents.deployment.signature import predict_table
from poise.agents.errors import SpecError
from poise.registry import tracking

CHUNK_ROWS = 100_000  # rows of a Parquet source scored at a time: memory stays bounded whatever the file's size


def batch_predict(settings, name: str, data, out, version: str | None = None,
                  on_cluster: bool = False) -> tuple[Path, int, str]:
    """Predict a whole table with the champion (or `version`) and write it next to the predictions; a Parquet source
    on the connected Ray cluster when `on_cluster`."""
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
    from_store = object_store.is_s3(data)  # copied next to the output first, then read as local files
    with tempfile.TemporaryDirectory(prefix="poise-predict-", dir=out.parent) if from_store else nullcontext() as copy:
        if from_store:
            data = object_store.local_copy(str(data), Path(copy) / "source")
        rows = _predict_to(partial, out.suffix, settings, model, name, used, data, na_values, on_cluster)
    partial.replace(out)
    return out, rows, used


def _predict_to(partial: Path, suffix: str, settings, model, name: str, used: str, data, na_values,
                on_cluster: bool) -> int:
    """Score `data` into the file `partial` (removed if anything fails); the rows written."""
    files = parquet_files(data)
    try:
        if files:
            import pyarrow.parquet as pq

            if on_cluster:
                scored = _scored_on_cluster(settings, name, used, files, na_values)
            else:
                scored = (_scored(model, chunk) for chunk in parquet_chunks(files, na_values, CHUNK_ROWS))
            return _write(partial, suffix, scored, source_schema=pq.read_schema(files[0]))
        table, _ = load_table(data, max_bytes=settings.max_file_bytes, na_values=na_values)
        return _write(partial, suffix, iter([_scored(model, table)]))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _scored(model, table: pd.DataFrame) -> pd.DataFrame:
    """The table with the model's predictions beside it (`predicted_label`, `predicted_proba_<class>`)."""
    output = predict_table(model, table)
    return pd.concat([table.reset_index(drop=True), output.reset_index(drop=True).add_prefix("predicted_")], axis=1)


_loaded_on_node: dict[tuple[str, str, str, str], object] = {}  # per Ray worker process: versions loaded once


def loaded_version(tracking_uri: str, registry_uri: str, name: str, version: str):
    """A version as a Ray worker process holds it: loaded from the MLflow store on first use, then kept."""
    key = (tracking_uri, registry_uri, name, version)
    if key not in _loaded_on_node:
        tracking.configure(tracking_uri, registry_uri)
        _loaded_on_node[key] = tracking.load_model(name, version)
    return _loaded_on_node[key]


def score_batch(batch, tracking_uri: str, registry_uri: str, name: str, version: str, source: dict):
    """A Ray Data task: one Arrow batch read as `parquet_chunks` reads it, then scored by the version. Arrow out, with
    the frame's pandas metadata: Ray's own conversion of a returned pandas frame would come back with Arrow-backed
    dtypes."""
    import pyarrow as pa

    model = loaded_version(tracking_uri, registry_uri, name, version)
    return pa.Table.from_pandas(_scored(model, parquet_frame(batch, **source)), preserve_index=False)


def _scored_on_cluster(settings, name: str, version: str, files: list[Path], na_values) -> Iterator[pd.DataFrame]:
    """The scored batches of a Parquet source from Ray Data tasks on the cluster, in the source's row order."""
    for table in mapped_on_cluster(settings, files, na_values, score_batch, name=name, version=version):
        yield table.to_pandas()


def mapped_on_cluster(settings, files: list[Path], na_values, task, **task_kwargs) -> Iterator:
    """`task(batch, tracking_uri=, registry_uri=, source=, **task_kwargs)` over the `CHUNK_ROWS`-row Arrow batches of
    a Parquet source as Ray Data tasks on the cluster; their Arrow results in the source's row order. `source`
    tells `parquet_frame` how to read a batch as `parquet_chunks` would.

    Tasks, not an actor pool: Ray Data fuses each with the read of its batch, so no actor holds a CPU that the reads
    would wait for (an actor per node deadlocked a cluster of one-CPU nodes: measured)."""
    import pyarrow.parquet as pq
    import ray

    check_same_columns(files)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    source = {"metadata": pq.read_schema(files[0]).metadata, "path": files[0], "na_values": list(na_values)}
    with _where_nodes_read(settings, files) as paths:
        mapped = ray.data.read_parquet(paths, partitioning=None).map_batches(
            task, batch_size=CHUNK_ROWS, batch_format="pyarrow",
            fn_kwargs={"tracking_uri": settings.tracking_uri, "registry_uri": settings.registry_uri,
                       "source": source, **task_kwargs})
        yield from mapped.iter_batches(batch_size=None, batch_format="pyarrow")


@contextmanager
def _where_nodes_read(settings, files: list[Path]) -> Iterator[list[str]]:
    """The parts as the cluster's nodes read them. With a bucket (`POISE_S3_URI`) the nodes share no disk with this
    process: the parts are staged under `<bucket>/predictions/<id>/` for the run (an S3 source too: one more copy,
    the price of one path for both) and removed after. Without one, the local paths: a filesystem every node mounts
    at the same path."""
    if not settings.s3_uri:
        yield [str(path) for path in files]
        return
    prefix = f"{settings.s3_uri.rstrip('/')}/predictions/{uuid.uuid4().hex}/"
    try:
        yield object_store.upload_parts(files, prefix)
    finally:
        object_store.delete_prefix(prefix)


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
