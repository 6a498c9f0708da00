"""Tables on an S3-compatible store (moto in server mode on 127.0.0.1): copied whole, read as local files, and
refused with the store's own reason."""

import pandas as pd
import pytest

from poise.agents.data_engineering import loading, object_store
from poise.agents.deployment.batch import batch_predict
from poise.agents.errors import DataError
from poise.pipelines import runner
from poise.pipelines.access import DataAccess, PathRefused
from poise.pipelines.settings import Settings


def _upload_folder(s3, folder, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), "poise", f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_a_prefix_a_glob_and_a_key_are_copied_as_local_parts(tmp_path, bucket, parquet_parts):
    table = parquet_parts(tmp_path / "parts", parts=3, rows=500)
    _upload_folder(bucket, tmp_path / "parts", "tables/events")
    bucket.put_object(Bucket="poise", Key="tables/events/_SUCCESS", Body=b"")  # what Spark leaves beside its parts

    folder = object_store.local_copy("s3://poise/tables/events/", tmp_path / "a")
    assert sorted(p.name for p in folder.iterdir()) == [f"part-{i:05d}.parquet" for i in range(3)]
    read, _ = loading.load_table(folder)
    pd.testing.assert_frame_equal(read[table.columns.tolist()], table, check_dtype=False)

    globbed = object_store.local_copy("s3://poise/tables/events/part-0000[12].parquet", tmp_path / "b")
    assert sorted(p.name for p in globbed.iterdir()) == ["part-00001.parquet", "part-00002.parquet"]
    one = object_store.local_copy("s3://poise/tables/events/part-00000.parquet", tmp_path / "c")
    assert one.is_file() and len(pd.read_parquet(one)) == 500


def test_what_the_store_cannot_give_is_named(tmp_path, bucket):
    with pytest.raises(DataError, match=r"s3://poise/nothing/here: no object there"):
        object_store.local_copy("s3://poise/nothing/here", tmp_path / "x")
    with pytest.raises(DataError, match=r"s3://no-such-bucket/t.csv: the store refused \((NoSuchBucket|404)"):
        object_store.local_copy("s3://no-such-bucket/t.csv", tmp_path / "y")
    with pytest.raises(DataError, match="no bucket named"):
        object_store.local_copy("s3:///t.csv", tmp_path / "z")
    bucket.put_object(Bucket="poise", Key="evil/../../outside.parquet", Body=b"x")
    with pytest.raises(DataError, match="leaves its folder"):
        object_store.local_copy("s3://poise/evil/", tmp_path / "w")
    assert not (tmp_path / "outside.parquet").exists()


def test_a_remote_caller_cannot_name_a_bucket(settings):
    with pytest.raises(PathRefused, match="not inside the data folder"):
        DataAccess.remote(settings).resolve("s3://poise/tables/events/")


@pytest.mark.slow
def test_a_job_trains_on_parquet_parts_in_a_bucket_and_predicts_from_it(poise_home, tmp_path, bucket, parquet_parts):
    table = parquet_parts(tmp_path / "parts", parts=2, rows=2_000)
    _upload_folder(bucket, tmp_path / "parts", "tables/events")
    settings = Settings(home=poise_home)
    result = runner.train("s3://poise/tables/events", "bad", name="from-s3", time_limit=10, settings=settings,
                          na_values=["n.a."])
    assert result.status == "succeeded", result.error
    assert abs(result.metrics["n_holdout"] - 0.2 * (len(table) - 10)) <= 2  # every labelled row was read
    job_dir = settings.home / "jobs" / result.job_id
    assert "(copied from s3://poise/tables/events)" in (job_dir / "data_card.md").read_text()

    _, rows, _ = batch_predict(settings, "from-s3", "s3://poise/tables/events/part-00001.parquet",
                               tmp_path / "scored.parquet")
    local = batch_predict(settings, "from-s3", tmp_path / "parts" / "part-00001.parquet", tmp_path / "local.parquet")
    assert rows == local[1] == 2_000
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "scored.parquet"),
                                  pd.read_parquet(tmp_path / "local.parquet"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("poise-predict-")] == []  # the copy is gone
