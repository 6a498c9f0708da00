"""The Poise home's folders mirrored in the artifact store: a real S3-compatible server (moto in server mode)."""

from pathlib import Path

import pytest

from poise.pipelines.settings import Settings
from poise.registry.file_store import CLUSTER_SYNC, MANIFEST


def _keys(s3) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket="poise").get("Contents", []))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_the_store_is_the_bucket_then_a_remote_artifact_root_then_nowhere(tmp_path):
    home = tmp_path / "home"
    assert Settings(home=home, s3_uri="s3://poise/team-a/").file_store.root == "s3://poise/team-a"
    assert Settings(home=home, mlflow_artifact_root="mlflow-artifacts:/poise").file_store.root == \
        "mlflow-artifacts:/poise/poise-home"
    local = Settings(home=home)
    assert local.file_store.root is None and not local.file_store.enabled
    job = _write(home / "jobs" / "j1" / "raw.parquet", b"rows")
    assert local.file_store.push(job.parent) == 0 and local.file_store.pull(job.parent) == 0
    assert not (job.parent / MANIFEST).exists()  # nothing mirrored, nothing recorded


def test_a_folder_pushed_on_one_machine_is_pulled_whole_on_another(tmp_path, bucket):
    first = Settings(home=tmp_path / "first", s3_uri="s3://poise/team-a")
    job = first.job_dir("j1")
    _write(job / "raw.parquet", b"rows" * 1000)
    _write(job / "autogluon" / "models" / "LightGBM" / "model.pkl", b"model")
    assert first.file_store.push(job) == 2
    assert _keys(bucket) == ["team-a/jobs/j1/autogluon/models/LightGBM/model.pkl", "team-a/jobs/j1/raw.parquet"]
    assert first.file_store.push(job) == 0  # nothing changed since
    _write(job / "plots" / "pr_curve.png", b"png")
    assert first.file_store.push(job) == 1  # only what the next step wrote

    # the fold models of a cluster fit sit beside the mirror, and are not part of the folder
    bucket.put_object(Bucket="poise", Key=f"team-a/jobs/j1/{CLUSTER_SYNC}/fold.pkl", Body=b"fold")
    second = Settings(home=tmp_path / "second", s3_uri="s3://poise/team-a")
    restored = second.job_dir("j1")
    assert second.file_store.pull(restored) == 3 and not (restored / CLUSTER_SYNC).exists()
    for name in ("raw.parquet", "autogluon/models/LightGBM/model.pkl", "plots/pr_curve.png"):
        assert (restored / name).read_bytes() == (job / name).read_bytes()
    assert second.file_store.pull(restored) == 0  # already here
    assert second.file_store.push(restored) == 0  # pulled files are not sent back


def test_one_file_is_fetched_when_missing_and_nothing_outside_the_home_is(tmp_path, bucket):
    first = Settings(home=tmp_path / "first", s3_uri="s3://poise/team-a")
    upload = _write(first.uploads_folder / "u1" / "churn.csv", b"a,b\n1,2\n")
    first.file_store.push(upload.parent)
    second = Settings(home=tmp_path / "second", s3_uri="s3://poise/team-a")
    copy = second.uploads_folder / "u1" / "churn.csv"
    assert second.file_store.fetch(copy) and copy.read_bytes() == b"a,b\n1,2\n"
    assert not second.file_store.fetch(second.uploads_folder / "u1" / "other.csv")  # not stored: no file
    assert not second.file_store.fetch(tmp_path / "elsewhere.csv")


def test_a_stored_name_that_leaves_its_folder_is_refused(tmp_path, bucket):
    settings = Settings(home=tmp_path / "home", s3_uri="s3://poise/team-a")
    bucket.put_object(Bucket="poise", Key="team-a/jobs/j1/../../../evil.txt", Body=b"x")
    with pytest.raises(ValueError, match="leaves its folder"):
        settings.file_store.pull(settings.job_dir("j1"))
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "home" / "evil.txt").exists()


def test_deleting_a_folder_removes_its_mirror_only(tmp_path, bucket):
    settings = Settings(home=tmp_path / "home", s3_uri="s3://poise/team-a")
    for job_id in ("j1", "j2"):
        _write(settings.job_dir(job_id) / "raw.parquet", b"rows")
        settings.file_store.push(settings.job_dir(job_id))
    settings.file_store.delete(settings.job_dir("j1"))
    assert _keys(bucket) == ["team-a/jobs/j2/raw.parquet"]
