"""Jobs and batch predictions on a real two-node Ray cluster started on 127.0.0.1, with a real S3-compatible server
(moto in server mode) as the bucket AutoGluon syncs fold models through."""

import threading
import time

import pandas as pd
import pytest
from mlflow import MlflowClient
from sqlalchemy import func, select

from poise.agents.data_engineering import object_store
from poise.agents.deployment import batch
from poise.pipelines import runner
from poise.pipelines.cluster import FOLD_TASK
from poise.pipelines.monitoring import windows
from poise.pipelines.monitoring.runner import check_now, find_check
from poise.pipelines.settings import Settings
from poise.registry.db import session_scope
from poise.registry.models import JobStep, ModelVersion

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.state import list_tasks  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_cluster(free_port):
    """A head node and one worker node, one CPU each, on this machine; the dashboard (which the state API that
    lists tasks needs) on a free port, not Ray's fixed 8265."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "dashboard_port": free_port})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


def _keys(s3) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket="poise").get("Contents", [])]


def _fold_tasks() -> list:
    return list_tasks(filters=[("func_or_class_name", "=", FOLD_TASK)], limit=10_000, raise_on_missing_output=False)


def _train_note(settings: Settings, job_id: str) -> str:
    with session_scope(settings.db_url) as session:
        return session.scalars(select(JobStep.message).where(JobStep.job_id == job_id, JobStep.node == "train")).one()


def test_an_address_nobody_answers_at_fails_the_job_at_once_and_says_so(poise_home, churn_csv, free_port):
    settings = Settings(home=poise_home, ray_address=f"127.0.0.1:{free_port}")
    started = time.monotonic()
    result = runner.train(churn_csv, "churned", name="no-cluster", time_limit=10, settings=settings)
    assert result.status == "failed" and time.monotonic() - started < 60
    assert f"cannot reach the Ray cluster at 127.0.0.1:{free_port} (POISE_RAY_ADDRESS)" in result.error
    assert not ray.is_initialized()


def test_a_job_on_the_cluster_fits_folds_on_both_nodes_and_writes_only_under_its_prefix(
        poise_home, churn_csv, bucket, ray_cluster):
    cluster, worker = ray_cluster
    ray.init(address="local", include_dashboard=False, num_cpus=1)  # this process's own Ray: not the cluster
    assert ray.get_runtime_context().gcs_address != cluster.address
    bucket.put_object(Bucket="poise", Key="other-team/keep.txt", Body=b"not Poise's")
    settings = Settings(home=poise_home, ray_address=cluster.address, s3_uri="s3://poise/team-a")
    # 800 rows with 64 churners: always bagged (five folds), whatever the budget
    result = runner.train(churn_csv, "churned", name="on-cluster", time_limit=20, settings=settings)

    assert result.status == "succeeded", result.error
    finished = {task.node_id for task in _fold_tasks() if task.state == "FINISHED"}
    assert finished == {cluster.head_node.node_id, worker.node_id}  # folds ran on both nodes
    note = _train_note(settings, result.job_id)
    assert "fitted on a Ray cluster of 2 nodes" in note and f"s3://poise/team-a/jobs/{result.job_id}/" in note
    # folds fitted on the worker node came back through the bucket, and the job's folder was mirrored there: under
    # the job's prefix and nowhere else
    keys = _keys(bucket)
    assert "other-team/keep.txt" in keys
    assert bucket.get_object(Bucket="poise", Key="other-team/keep.txt")["Body"].read() == b"not Poise's"
    written = [key for key in keys if key != "other-team/keep.txt"]
    assert all(key.startswith(f"team-a/jobs/{result.job_id}/") for key in written)
    assert any(key.startswith(f"team-a/jobs/{result.job_id}/autogluon-sync/") for key in written)
    assert f"team-a/jobs/{result.job_id}/report.md" in written
    client = MlflowClient(settings.tracking_uri, settings.registry_uri)
    assert [str(v.version) for v in client.search_model_versions("name = 'on-cluster'")] == ["1"]


def test_a_node_killed_mid_fit_loses_no_job_and_duplicates_no_version(poise_home, tmp_path, make_table, bucket,
                                                                       ray_cluster):
    cluster, worker = ray_cluster
    data = tmp_path / "churn.csv"
    make_table(2_000).to_csv(data, index=False)  # 160 churners: bagged at any budget
    settings = Settings(home=poise_home, ray_address=cluster.address, s3_uri="s3://poise/team-a")
    outcome = {}
    job = threading.Thread(target=lambda: outcome.setdefault("result", runner.train(
        data, "churned", name="node-lost", time_limit=40, settings=settings)))
    job.start()
    killed = False
    deadline = time.monotonic() + 300
    while job.is_alive() and time.monotonic() < deadline and not killed:
        if ray.is_initialized() and any(task.node_id == worker.node_id and task.state == "RUNNING"
                                        for task in _fold_tasks()):
            cluster.remove_node(worker, allow_graceful=False)  # the node dies with a fold on it
            killed = True
        time.sleep(0.1)
    job.join(600)

    assert killed, "no fold ever ran on the worker node"
    result = outcome["result"]
    assert result.status == "succeeded", result.error
    lost = [task for task in _fold_tasks() if task.node_id == worker.node_id and task.state == "FAILED"]
    assert lost  # Ray saw the fold die with its node ...
    note = _train_note(settings, result.job_id)
    assert f"fold tasks failed on node {worker.node_id[:12]}" in note or \
        f"fold task failed on node {worker.node_id[:12]}" in note  # ... and the job log says so
    assert "Ray reran them on the nodes still alive" in note
    with session_scope(settings.db_url) as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1
    client = MlflowClient(settings.tracking_uri, settings.registry_uri)
    assert [str(v.version) for v in client.search_model_versions("name = 'node-lost'")] == ["1"]


@pytest.mark.parametrize("bucketed", [False, True], ids=["shared-disk", "bucket"])
def test_ray_data_scoring_writes_the_same_file_as_in_process_scoring(poise_home, tmp_path, parquet_parts, bucket,
                                                                     ray_cluster, monkeypatch, bucketed):
    """`bucket` before `ray_cluster`: the nodes' processes inherit its AWS variables."""
    cluster, _ = ray_cluster
    table = parquet_parts(tmp_path / "parts", parts=3, rows=4_000)
    settings = Settings(home=poise_home)
    trained = runner.train(tmp_path / "parts", "bad", name="parts", time_limit=10, settings=settings,
                           na_values=["n.a."])
    assert trained.status == "succeeded", trained.error

    local = batch.batch_predict(settings, "parts", tmp_path / "parts", tmp_path / "local.parquet")
    ray.init(address=cluster.address)
    staged = []
    if bucketed:  # the nodes read the parts staged in the bucket, then removed
        settings = Settings(home=poise_home, s3_uri="s3://poise/team-a")
        delete_prefix = object_store.delete_prefix
        monkeypatch.setattr(object_store, "delete_prefix",  # what was staged, seen just before its removal
                            lambda prefix: (staged.extend(_keys(bucket)), delete_prefix(prefix)))
    distributed = batch.batch_predict(settings, "parts", tmp_path / "parts", tmp_path / "ray.parquet", on_cluster=True)
    if bucketed:
        assert len(staged) == 3 and all(key.startswith("team-a/predictions/") for key in staged)
        assert _keys(bucket) == []

    assert local[1:] == distributed[1:] == (len(table), "1")
    expected, got = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "ray.parquet")
    pd.testing.assert_frame_equal(got, expected)
    assert got["row_id"].tolist() == table["row_id"].tolist()  # row for row, in the source's order
    assert got["colour"].isna().sum() == (table["colour"] == "n.a.").sum() > 0  # the missing-value token applied
    # the scoring ran in Ray Data tasks on the cluster (fused with the reads), never loading the model here
    tasks = list_tasks(filters=[("state", "=", "FINISHED")], limit=10_000, raise_on_missing_output=False)
    assert any(task.name.startswith("ReadFilesParquet") for task in tasks)
    assert batch._loaded_on_node == {}


def test_a_drift_check_passes_over_a_big_window_on_the_cluster_as_it_does_in_process(
        poise_home, tmp_path, parquet_parts, ray_cluster, monkeypatch):
    cluster, _ = ray_cluster
    parquet_parts(tmp_path / "parts", parts=3, rows=4_000)
    parquet_parts(tmp_path / "window", parts=3, rows=4_000, seed=1)
    trained = runner.train(tmp_path / "parts", "bad", name="parts", time_limit=10, settings=Settings(home=poise_home))
    assert trained.status == "succeeded", trained.error
    monkeypatch.setattr(windows, "PREDICTION_ROWS", 2_000)  # the 12,000-row window is bigger than its sample
    for module in (batch, windows):  # and passed over in 6 parts (Ray Data blocks may hold several parts' results)
        monkeypatch.setattr(module, "CHUNK_ROWS", 2_000)
    small = {"home": poise_home, "memory_budget_bytes": 50_000}  # and read out of core

    wholes = []
    for settings in (Settings(**small), Settings(**small, ray_address=cluster.address)):
        result = check_now("parts", settings, current=str(tmp_path / "window"), action="none")
        assert result.status == "succeeded", result.error
        wholes.append(find_check(settings, result.check_id).results["window"]["whole"])
    local, distributed = wholes
    assert (local.pop("scored_on"), distributed.pop("scored_on")) == ("this process", "Ray cluster")
    local.pop("seconds"), distributed.pop("seconds")
    assert distributed == local and local["rows"] == 12_000
    tasks = list_tasks(filters=[("state", "=", "FINISHED")], limit=10_000, raise_on_missing_output=False)
    assert any("tally_batch" in task.name for task in tasks)  # tallied in Ray Data tasks
    assert batch._loaded_on_node == {}  # the champion was loaded on the nodes for that, not here
