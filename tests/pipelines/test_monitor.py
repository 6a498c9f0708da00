"""Drift checks end to end on a real KEEL table: real AutoGluon fits and retrains, the real MLflow store,
the real job database, the CLI and the scheduler.

One model is trained for the module; the tests then run in order like the life of a served model:
clean traffic, a covariate shift, a rollback, a prior shift, reversed columns (with approval),
and scheduled checks.
"""

from __future__ import annotations

import json

import sqlite3
import threading
import time
import uuid

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from poise.agents.deployment.signature import predict_table
from poise.pipelines import runner
from poise.pipelines.api.main import create_app
from poise.pipelines.cli import app
from poise.pipelines.datasets import load
from poise.pipelines.monitoring import windows
from poise.pipelines.monitoring.runner import check_now, find_check
from poise.pipelines.scheduler import list_schedules, previous_fire_time, remove_schedule, run_scheduler
from poise.pipelines.settings import Settings
from poise.pipelines.worker import Worker
from poise.registry import tracking
from poise.registry.db import session_scope
from poise.registry.keys import create_key
from poise.registry.models import DriftCheck, Job, Prediction
from poise.agents.drift import estimation
from poise.agents.tools import latest_check
from poise.ui import views

pytestmark = pytest.mark.slow

NAME = "blocks"
TARGET = "target"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """page_blocks0 (5,472 rows, imbalance ratio 8.8): 40 % trains v1, the rest is live traffic."""
    home = tmp_path_factory.mktemp("monitor") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POISE_HOME", str(home))
        for name in ("POISE_DATABASE_URL", "POISE_MLFLOW_TRACKING_URI", "POISE_MLFLOW_REGISTRY_URI"):
            patch.delenv(name, raising=False)
        settings = Settings(home=home)
        table, _ = load("page_blocks0")
        table = table.sample(frac=1.0, random_state=0).reset_index(drop=True)
        cut = int(0.4 * len(table))
        data = home.parent / "train.csv"
        table.iloc[:cut].to_csv(data, index=False)
        result = runner.train(data, TARGET, name=NAME, time_limit=12, settings=settings)
        assert result.status == "succeeded" and result.is_champion, result.error
        yield settings, table.iloc[cut:].reset_index(drop=True), home.parent


def _client(settings):
    return tracking.configure(settings.tracking_uri, settings.registry_uri)


def _top_features(settings, count: int) -> list[str]:
    _, _, meta = tracking.load_reference(_client(settings), NAME, tracking.champion_version(_client(settings), NAME))
    return sorted(meta["feature_importance"], key=meta["feature_importance"].get, reverse=True)[:count]


def _serve(settings, rows: pd.DataFrame, labelled: bool = True) -> None:
    """Log predictions of the champion for `rows` as the API does, with feedback labels."""
    version = tracking.champion_version(_client(settings), NAME)
    features = rows.drop(columns=[TARGET])
    output = predict_table(tracking.load_model(NAME, version), features)
    with session_scope(settings.db_url) as session:
        for (_, row), (_, out), label in zip(features.iterrows(), output.iterrows(), rows[TARGET]):
            session.add(Prediction(id=uuid.uuid4().hex, model_name=NAME, model_version=version,
                                   inputs={k: float(v) for k, v in row.items()}, outputs=out.to_dict(),
                                   feedback_label=label if labelled else None))


def _versions(settings) -> list[str]:
    return sorted(str(v.version) for v in _client(settings).search_model_versions(f"name = '{NAME}'"))


def test_clean_traffic_from_the_prediction_log_raises_no_retrain(served):
    settings, stream, _ = served
    _serve(settings, stream.iloc[:400])
    result = check_now(NAME, settings)

    assert result.status == "succeeded", result.error
    assert result.decision == "no_drift", result.reason
    assert result.challenger_version is None and _versions(settings) == ["1"]
    check = find_check(settings, result.check_id)
    assert check.n_rows == 400 and check.window_end is not None and check.trigger == "cli"
    assert check.results["window"]["source"] == "prediction log" and check.results["window"]["n_labelled"] == 400
    analysis = check.results["analysis"]
    assert analysis["performance"]["dropped"] is False
    assert all({"method", "threshold", "value", "score", "drifted"} <= set(c) for c in analysis["columns"]["columns"].values())

    # the quality estimate without labels, beside the realised figures of the 400 labelled rows
    estimate = analysis["estimated_quality"]
    realised = estimate["realised"]
    assert realised["n_labelled"] == 400 and not estimate["dropped"]
    assert abs(estimate["estimated"]["macro_f1"] - realised["realised"]["macro_f1"]) < 0.1
    low, high = estimate["interval"]["macro_f1"]
    assert low < estimate["estimated"]["macro_f1"] < high
    assert result.estimated_quality == estimate

    run = _client(settings).get_run(check.mlflow_run_id)
    assert run.data.tags["poise.decision"] == "no_drift" and run.info.status == "FINISHED"
    assert run.data.metrics["estimated_macro_f1"] == pytest.approx(estimate["estimated"]["macro_f1"])
    assert run.data.metrics["estimated_macro_f1_low"] == pytest.approx(low)
    assert run.data.metrics["realised_macro_f1"] == pytest.approx(realised["realised"]["macro_f1"])
    drift_files = {a.path for a in _client(settings).list_artifacts(check.mlflow_run_id, "drift")}
    assert {"drift/drift_report.html", "drift/analysis.json", "drift/report.md"} <= drift_files
    report = (settings.home / "checks" / result.check_id / "report.md").read_text()
    assert "Estimated quality without labels" in report and "realised on 400 labelled rows" in report
    assert views.checks_table(settings)["estimated macro-F1"].iloc[0] == estimation.short(estimate)
    told = latest_check(check)  # what the chat's LLM tools may quote of it
    assert told["estimated_quality"]["estimated"] == estimate["estimated"] and told["decision"] == "no_drift"
    assert told["estimated_quality_text"].startswith("Estimated quality without labels")

    again = check_now(NAME, settings)  # nothing served since: the window starts where the last one ended
    assert again.status == "succeeded" and again.decision == "no_data"

    first, second = stream.iloc[:400], stream.iloc[2600:3000]
    _serve(settings, second)
    later = check_now(NAME, settings)
    assert later.decision == "no_drift", later.reason
    performance = find_check(settings, later.check_id).results["analysis"]["performance"]
    # the first clean window's labelled rows joined the baseline, but for 3 whose features repeat in the second
    in_second = set(map(tuple, second.drop(columns=[TARGET]).to_numpy()))
    repeated = sum(tuple(row) in in_second for row in first.drop(columns=[TARGET]).to_numpy())
    assert repeated == 3 and performance["n_feedback"] == 400 - repeated
    batch = settings.home.parent / "served_again.parquet"
    first.to_parquet(batch, index=False)  # the first window's rows, checked again as a batch
    overlap = check_now(NAME, settings, current=str(batch), action="none")
    performance = find_check(settings, overlap.check_id).results["analysis"]["performance"]
    assert performance["n_feedback"] == 400 - repeated  # the second window's rows only: not judged against itself


def test_covariate_shift_is_caught_in_the_first_window_and_a_retrained_version_promoted(served):
    settings, stream, _ = served
    # the units of the two most important columns changed upstream (the champion, CatBoost, spreads its trust over
    # three columns of similar importance: one of them ten times larger costs it little, 0.90 -> 0.85 macro-F1; two
    # break it, 0.37)
    columns = _top_features(settings, 2)
    shifted = stream.iloc[400:1200].copy()
    shifted[columns] = shifted[columns] * 10.0
    _serve(settings, shifted)
    result = check_now(NAME, settings)

    assert result.status == "succeeded", result.error
    assert result.decision == "covariate_drift", result.reason
    assert result.challenger_version == "2"
    assert result.promoted, result.comparison
    client = _client(settings)
    assert tracking.champion_version(client, NAME) == "2"
    assert tracking.alias_version(client, NAME, tracking.PREVIOUS_CHAMPION) == "1"
    assert result.comparison["challenger"] > result.comparison["champion"]
    assert result.comparison["interval"][0] > 0 or result.comparison["probability_better"] >= 0.9

    check = find_check(settings, result.check_id)
    with session_scope(settings.db_url) as session:
        job = session.get(Job, check.retrain_job_id)
        assert job.status == "succeeded" and job.spec["weight_column"] == "poise_weight" and not job.spec["promote"]
        # the job learned from all of its table and was scored on the rows the comparison used
        assert job.spec["holdout_data"] == check.results["action"]["evaluation_path"]
    split = json.loads((settings.job_dir(check.retrain_job_id) / "data_card.json").read_text())["split"]
    assert split["holdout_source"] == "given" and split["holdout_rows"] == check.results["action"]["evaluation_rows"]
    assert split["train_rows"] == check.results["action"]["training_rows"]
    assert check.results["action"]["evaluated_on"] == "fresh labelled holdout from the window"
    # the new champion is judged against the data it was adapted to: the same traffic is no longer drift
    later = stream.iloc[1200:1600].copy()
    later[columns] = later[columns] * 10.0
    _serve(settings, later)
    after = check_now(NAME, settings)
    assert after.status == "succeeded" and after.decision == "no_drift", after.reason


def test_rollback_restores_the_previous_champion(served):
    settings, _, _ = served
    outcome = CliRunner().invoke(app, ["rollback", NAME])
    assert outcome.exit_code == 0, outcome.output
    client = _client(settings)
    assert tracking.champion_version(client, NAME) == "1"
    assert tracking.alias_version(client, NAME, tracking.PREVIOUS_CHAMPION) == "2"
    assert CliRunner().invoke(app, ["rollback", "no-such-model"]).exit_code == 2


def test_a_pure_prior_shift_is_recalibrated_without_a_refit(served):
    settings, stream, folder = served
    rest = stream.iloc[1600:2600]
    positives, negatives = rest[rest[TARGET] == "positive"], rest[rest[TARGET] == "negative"]
    batch = pd.concat([positives, negatives.sample(len(positives) * 7 // 3, random_state=0)])  # 30 % positive
    path = folder / "prior.parquet"
    batch.drop(columns=[TARGET]).sample(frac=1.0, random_state=0).to_parquet(path)  # no labels: estimate the prior

    champion = tracking.champion_version(_client(settings), NAME)
    jobs_before = _count(settings, Job)
    result = check_now(NAME, settings, current=str(path))
    assert result.status == "succeeded", result.error
    assert result.decision == "prior_shift", result.reason
    assert _count(settings, Job) == jobs_before  # no training job: recalibration only

    client = _client(settings)
    version = client.get_model_version(NAME, result.challenger_version)
    assert version.tags["poise.derived_from"] == champion
    info = mlflow.models.get_model_info(tracking.model_uri(NAME, result.challenger_version))
    config = info.flavors["python_function"]["config"]
    assert config["prior_weights"]["positive"] > 1.5 > 1.0 > config["prior_weights"]["negative"]
    features = batch.drop(columns=[TARGET])
    old = predict_table(tracking.load_model(NAME, champion), features)
    new = predict_table(tracking.load_model(NAME, result.challenger_version), features)
    assert (new["proba_positive"] >= old["proba_positive"] - 1e-9).all()
    check = find_check(settings, result.check_id)
    assert check.results["action"]["evaluated_on"].startswith("reference holdout weighted")
    assert (tracking.champion_version(client, NAME) == result.challenger_version) == result.promoted


def test_reversed_columns_are_caught_retrained_and_promoted_after_approval(served):
    settings, stream, folder = served
    # v1 serves again: the recalibrated v3's reference is resampled to a higher positive share, and the
    # columns reversed here carry the class signal, so against it their marginals would move by the prior
    champion = "1"
    _client(settings).set_registered_model_alias(NAME, tracking.CHAMPION, champion)
    _, _, meta = tracking.load_reference(_client(settings), NAME, champion)
    # an upstream encoding reversed in the three columns the champion leans on most: each keeps every value,
    # so no marginal moves, but each now counts down where it counted up, flipping its correlation with every
    # other column. The champion spreads its trust over correlated columns, so one reversed column costs it
    # little (page_blocks0's top one: F1 0.85 to 0.83); three cost it enough that a retrained model must win
    reversed_columns = sorted(meta["feature_importance"], key=meta["feature_importance"].get, reverse=True)[:3]
    # 2,284 rows, so the half that judges the challenger holds ~110 positives (rows 1600-2600 hold a Mean_tr of
    # 4,955 against a training maximum of 537: that one row alone moves the column's Wasserstein distance)
    batch = pd.concat([stream.iloc[:1600], stream.iloc[2600:]]).reset_index(drop=True)
    for column in reversed_columns:
        ranks = batch[column].rank(method="first").to_numpy().astype(int) - 1
        batch[column] = np.sort(batch[column].to_numpy())[::-1][ranks]
    path = folder / "reversed.csv"
    batch.to_csv(path, index=False)

    outcome = CliRunner().invoke(app, ["monitor", NAME, "--current", str(path), "--approval"])
    assert outcome.exit_code == 0, outcome.output
    with session_scope(settings.db_url) as session:
        check = session.scalars(select(DriftCheck).order_by(DriftCheck.created_at.desc())).first()
        check_id, status = check.id, check.status
        analysis = check.results["analysis"]
    assert not any(analysis["columns"]["columns"][column]["drifted"] for column in reversed_columns)
    assert analysis["multivariate"]["drifted"] and set(reversed_columns) & set(analysis["multivariate"]["top_columns"])
    assert status == "awaiting_approval", outcome.output
    assert tracking.champion_version(_client(settings), NAME) == champion  # nothing moves before the answer

    # the web UI's answer queues the decision; a worker resumes the check from its checkpoint
    answer = views.answer_check(settings, check_id[:12], True)
    assert answer.startswith("Promotion of v4 approved"), answer
    assert Worker(settings, poll_seconds=0.1).run_once() == check_id
    finished = find_check(settings, check_id)
    assert finished.status == "succeeded" and finished.promoted and finished.results["approval"]["by"] == "ui"
    assert tracking.champion_version(_client(settings), NAME) == finished.challenger_version == "4"
    assert "not waiting for approval" in views.answer_check(settings, check_id, False)
    late = CliRunner().invoke(app, ["approve", check_id[:12]])
    assert late.exit_code == 2 and "not waiting for approval" in late.output
    assert views.checks_table(settings).iloc[0]["check"] == check_id[:12]


def _count(settings, model) -> int:
    with session_scope(settings.db_url) as session:
        return session.scalar(select(func.count()).select_from(model))


def test_previous_fire_time_for_interval_and_cron():
    from datetime import UTC, datetime

    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    start = datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime(2026, 1, 1, 3, 25, 7, tzinfo=UTC)
    assert previous_fire_time(IntervalTrigger(minutes=10, start_date=start, timezone=UTC), now) == \
        datetime(2026, 1, 1, 3, 20, tzinfo=UTC)
    assert previous_fire_time(CronTrigger.from_crontab("0 * * * *", timezone=UTC), now) == \
        datetime(2026, 1, 1, 3, 0, tzinfo=UTC)


def test_a_batch_from_a_named_sql_source_is_checked(served):
    settings, stream, folder = served
    warehouse = folder / "warehouse.db"
    with sqlite3.connect(warehouse) as connection:
        stream.head(300).to_sql("traffic", connection, index=False, if_exists="replace")
    with_sql = Settings(home=settings.home, sql_sources={"warehouse": f"sqlite:///{warehouse}"})
    result = check_now(NAME, with_sql, sql_source="warehouse", sql_query="SELECT * FROM traffic", action="none")
    assert result.status == "succeeded", result.error
    check = find_check(settings, result.check_id)
    assert check.n_rows == 300 and check.results["window"]["source"] == "sql"
    assert check.results["window"]["n_labelled"] == 300  # the target column came along: labels
    unknown = check_now(NAME, settings, sql_source="nowhere", sql_query="SELECT 1")
    assert unknown.status == "failed" and "unknown SQL source 'nowhere'" in unknown.error
    broken = check_now(NAME, with_sql, sql_source="warehouse", sql_query="SELEC nonsense")
    assert broken.status == "failed" and broken.error.startswith("query failed")


def test_a_parquet_batch_bigger_than_the_memory_budget_is_sampled_out_of_core(served, monkeypatch):
    settings, stream, folder = served
    parts = folder / "big-window"
    parts.mkdir()
    for position, part in enumerate(np.array_split(stream, 3)):
        part.to_parquet(parts / f"part-{position}.parquet", index=False)
    small = Settings(home=settings.home, memory_budget_bytes=50_000)  # the ~3,300-row window is "too big"
    monkeypatch.setattr(windows, "PREDICTION_ROWS", 1_000)  # and bigger than its sample
    result = check_now(NAME, small, current=str(parts), action="none")
    assert result.status == "succeeded", result.error
    check = find_check(settings, result.check_id)
    window, analysis = check.results["window"], check.results["analysis"]
    assert window["n_rows"] == window["sample"]["rows"] == len(stream)
    assert window["sample_rows"] == window["sample"]["sampled_rows"] < len(stream) and window["sample"]["files"] == 3
    assert window["sample"]["columns"][TARGET]["missing"] == 0
    whole = window["whole"]  # one pass over every row: the champion's labels, the domain classifier's scores
    assert whole["rows"] == sum(whole["predicted"].values()) == len(stream) and whole["scored_on"] == "this process"
    fitted = pd.read_parquet(window["features"])  # the sample, which the domain classifier was fitted on
    known = set(map(tuple, fitted.to_numpy(dtype=float)))  # the rows it was fitted on, and repeats of them, left out
    repeats = stream[list(fitted.columns)].apply(lambda row: tuple(row.astype(float)) in known, axis=1).sum()
    assert repeats > window["sample_rows"] and whole["domain"]["window_rows"] == len(stream) - repeats
    found = whole["stability"]  # every feature's stability over every row, against the reference
    assert set(found["psi"]) == set(stream.columns) - {TARGET}
    assert found["shifted"] == sorted((c for c, v in found["psi"].items() if v >= 0.2), key=lambda c: -found["psi"][c])
    # judged on every row: the columns by PSI, the domain classifier by its all-rows AUC; the sample's kept beside
    assert analysis["columns"]["rule"].endswith("over every row is >= 0.5")
    assert analysis["multivariate"]["auc"] == whole["domain"]["auc"]
    assert analysis["sample"]["multivariate"]["auc"] != whole["domain"]["auc"]
    assert analysis["prior"]["method"] == "feedback labels"  # the batch has its labels (in the sample)
    report = (settings.home / "checks" / result.check_id / "report.md").read_text()
    assert f"{len(stream):,} rows from" in report and "read out of core" in report
    assert "Stability over every row (a column shifted when PSI >= 0.2" in report
    assert f"domain classifier's ROC-AUC over {whole['domain']['window_rows']:,} rows" in report

    # a batch in memory bigger than its sample is passed over whole too, with the same figures; without labels its
    # prior comes from the champion's predictions on every row
    csv = folder / "big-window.csv"
    pd.read_parquet(parts).drop(columns=[TARGET]).to_csv(csv, index=False)
    in_memory = check_now(NAME, settings, current=str(csv), action="none")
    assert in_memory.status == "succeeded", in_memory.error
    check = find_check(settings, in_memory.check_id)
    again = check.results["window"]["whole"]
    assert "sample" not in check.results["window"] and check.results["window"]["n_labelled"] == 0
    assert again["predicted"] == whole["predicted"] and again["stability"]["psi"] == found["psi"]
    assert check.results["analysis"]["prior"]["method"] == "black-box shift estimation over every row"


def test_the_api_queues_lists_and_reports_checks(served, serve_app):
    settings, stream, folder = served
    settings.data_folder.mkdir(parents=True, exist_ok=True)
    stream.head(300).to_csv(settings.data_folder / "batch.csv", index=False)
    keys = {scope: create_key(settings.db_url, f"checks-{scope}", [scope])[1] for scope in ("read", "submit", "admin")}
    auth = lambda scope: {"Authorization": f"Bearer {keys[scope]}"}  # noqa: E731
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        path = f"/api/v1/models/{NAME}/checks"
        assert client.post(path, json={}, headers=auth("read")).status_code == 403
        assert client.post(path, json={"data_path": "../train.csv"}, headers=auth("submit")).status_code == 400
        assert client.post(path, json={"action": "explode"}, headers=auth("submit")).status_code == 422
        assert client.get("/api/v1/models/bad name!/checks", headers=auth("read")).status_code == 422
        queued = client.post(path, json={"data_path": "batch.csv", "action": "none"}, headers=auth("submit"))
        assert queued.status_code == 202 and queued.json()["status"] == "queued"
        check_id = queued.json()["id"]
        assert client.get(f"/api/v1/checks/{check_id}/report", headers=auth("read")).status_code == 404

        assert Worker(settings, poll_seconds=0.1).run_once() == check_id
        listed = client.get(path, headers=auth("read")).json()
        assert listed[0]["id"] == check_id and listed[0]["status"] == "succeeded" and listed[0]["results"] is None
        detail = client.get(f"/api/v1/checks/{check_id}", headers=auth("read")).json()
        assert detail["trigger"] == "api" and detail["n_rows"] == 300
        assert detail["decision"] in ("no_drift", "covariate_drift", "prior_shift", "performance_drop")
        assert detail["challenger_version"] is None  # action "none": report only
        assert "multivariate" in detail["results"]["analysis"]
        estimate = detail["results"]["analysis"]["estimated_quality"]
        assert set(estimate["estimated"]) == {"f1", "macro_f1"} and estimate["realised"]["n_labelled"] == 300
        report = client.get(f"/api/v1/checks/{check_id}/report", headers=auth("read"))
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        assert "Drift Summary" in report.text and "Blackpix" in report.text  # a column of page_blocks0
        refused = client.post(f"/api/v1/checks/{check_id}/approve", json={"approved": True}, headers=auth("admin"))
        assert refused.status_code == 409 and "not waiting for approval" in refused.json()["detail"]
        assert client.get("/api/v1/checks/nope", headers=auth("read")).status_code == 404
    # the web UI's Models tab shows the latest check per model
    assert views.drift_status(settings)[NAME].startswith(detail["decision"].replace("_", " "))


def test_two_schedulers_queue_each_scheduled_check_once_and_a_worker_runs_it(served):
    settings, _, folder = served
    outcome = CliRunner().invoke(app, ["schedule", NAME, "--every", "10s"])
    assert outcome.exit_code == 0, outcome.output
    assert [s.model_name for s in list_schedules(settings)] == [NAME]
    assert CliRunner().invoke(app, ["schedule", NAME, "--every", "soon"]).exit_code == 2

    stop = threading.Event()
    schedulers = [threading.Thread(target=run_scheduler, args=(settings, stop, 0.5)) for _ in range(2)]
    for thread in schedulers:
        thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _scheduled(settings) < 2:
        time.sleep(0.5)
    stop.set()
    for thread in schedulers:
        thread.join(timeout=30)
    assert remove_schedule(settings, NAME) and list_schedules(settings) == []

    with session_scope(settings.db_url) as session:
        slots = session.scalars(select(DriftCheck.scheduled_for).where(DriftCheck.trigger == "schedule")).all()
    assert len(slots) >= 2 and len(slots) == len(set(slots))  # two schedulers, still one check per firing
    assert all(slot.second % 10 == slots[0].second % 10 for slot in slots)

    _serve(settings, pd.read_csv(folder / "reversed.csv").head(400))  # traffic like the champion's reference
    worker = Worker(settings, poll_seconds=0.1)
    assert worker.run_once() is not None
    with session_scope(settings.db_url) as session:
        ran = session.scalars(select(DriftCheck).where(DriftCheck.trigger == "schedule",
                                                       DriftCheck.status != "queued")).all()
        assert len(ran) == 1 and ran[0].status == "succeeded", ran[0].error
        assert ran[0].attempts == 1 and ran[0].n_rows == 400


def _scheduled(settings) -> int:
    with session_scope(settings.db_url) as session:
        return session.scalar(select(func.count()).where(DriftCheck.trigger == "schedule"))
