"""Tables on an S3-compatible store: `s3://bucket/key`, a prefix holding Parquet parts, or a glob of keys.

A job or a batch prediction copies the objects into a local folder first (boto3 streams each download a part at a
time: bounded memory whatever their size), then reads them as local files. Every reader Poise has (Polars streaming
for tables beyond the memory budget, content hashing, chunked batch scoring) then works unchanged, and a resumed job
reads the same bytes; the cost is the table's size on the worker's disk and the time of one copy. The store is
reached with the standard AWS variables (`AWS_ENDPOINT_URL` for an S3-compatible server, the keys, the region).

Only the local CLI names S3 sources: a remote caller (API, web UI, chat) reads only the data folder and its uploads
(pipelines/access.py refuses any `scheme://`).
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

from poise.agents.data_engineering.loading import GLOB_CHARS, PARQUET_SUFFIXES
from poise.agents.errors import DataError

S3_SCHEME = "s3://"


def is_s3(source: str | Path) -> bool:
    return str(source).startswith(S3_SCHEME)


def local_copy(uri: str, into: Path) -> Path:
    """Copy the object(s) `uri` names into the folder `into` (emptied first); the local file, or the folder of parts
    for a prefix or a glob (its Parquet parts only, at their paths below the prefix). A key that exists is read as
    that one object."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise DataError(f"{uri}: no bucket named (s3://bucket/key)")
    client = boto3.client("s3")
    try:
        keys, base = _matching_keys(client, bucket, key)
        if base is not None:
            keys = [k for k in keys if Path(k).suffix.lower() in PARQUET_SUFFIXES]
        if not keys:
            raise DataError(f"{uri}: no object there" + ("" if base is None else " with a .parquet name"))
        names = [k.rsplit("/", 1)[-1] if base is None else k[len(base):] for k in keys]
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        folder = into.resolve()
        for name, object_key in zip(names, keys):
            local = (folder / name).resolve()
            if not local.is_relative_to(folder):  # a key with `..` in it
                raise DataError(f"{uri}: object key {object_key[:100]!r} leaves its folder")
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, object_key, str(local))
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise DataError(f"{uri}: the store refused ({code}: {error.response.get('Error', {}).get('Message', '')})"
                        [:300]) from None
    except BotoCoreError as error:  # no credentials, an unreachable endpoint, ...
        raise DataError(f"{uri}: cannot reach the store ({str(error)[:200]})") from None
    return into / names[0] if base is None else into


def upload_parts(files: list[Path], prefix: str) -> list[str]:
    """Put the files under `prefix` (`s3://bucket/key/`) as `part-00000.parquet`, ...; their URIs, in order."""
    import boto3

    bucket, _, key = prefix[len(S3_SCHEME):].partition("/")
    client, uris = boto3.client("s3"), []
    for position, path in enumerate(files):
        name = f"{key.rstrip('/')}/part-{position:05d}.parquet".lstrip("/")
        client.upload_file(str(path), bucket, name)
        uris.append(f"{S3_SCHEME}{bucket}/{name}")
    return uris


def delete_prefix(prefix: str) -> None:
    """Remove every object under `prefix` (`s3://bucket/key/`)."""
    import boto3

    bucket, _, key = prefix[len(S3_SCHEME):].partition("/")
    client = boto3.client("s3")
    keys = _list(client, bucket, key.rstrip("/") + "/")
    for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1,000 keys
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})


def _matching_keys(client, bucket: str, key: str) -> tuple[list[str], str | None]:
    """The keys `key` names, and the prefix they are copied below (None: `key` is one object). A glob matches keys
    under its literal prefix; a key that exists is itself; otherwise it is a prefix (a folder of parts)."""
    from botocore.exceptions import ClientError

    glob_at = min((key.index(char) for char in GLOB_CHARS if char in key), default=None)
    if glob_at is not None:
        base = key[:glob_at].rpartition("/")[0]
        base = base + "/" if base else ""
        return sorted(k for k in _list(client, bucket, base) if fnmatch.fnmatchcase(k, key)), base
    if key and not key.endswith("/"):
        try:
            client.head_object(Bucket=bucket, Key=key)
            return [key], None
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
    prefix = key.rstrip("/") + "/" if key else ""
    return sorted(k for k in _list(client, bucket, prefix) if not k.endswith("/")), prefix


def _list(client, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]
