"""End-to-end training jobs: real AutoGluon fits, the real MLflow store, the real job database."""

import json

import mlflow
import pandas as pd
import pytest
from autogluon.tabular import TabularPredictor
from mlflow import MlflowClient
from sqlalchemy import select

from poise.agents.deployment.signature import serving_frame
from poise.pipelines import runner
from poise.pipelines.settings import Settings
from poise.pipelines.training import nodes
from poise.registry import tracking
from poise.registry.db import session_scope
from poise.registry.models import Dataset, Job, JobStep, ModelVersion

pytestmark = pytest.mark.slow


def _client(settings) -> MlflowClient:
    return tracking.configure(settings.tracking_uri, settings.registry_uri)


def test_train_registers_gated_champion_that_serves_like_the_predictor(settings, churn_csv):
    result = runner.train(churn_csv, "churned", name="churn", time_limit=15, settings=settings)

    assert result.status == "succeeded", result.error
    assert result.model_version == "1" and result.is_champion
    # the leak-free signal is strong: the model must clearly beat the dummy baselines
    assert result.metrics["f1"] > 0.5 and result.metrics["minority_recall"] > 0.5
    assert result.metrics["positive_class"] == "yes"  # the minority, not AutoGluon's sorted-last label
    assert set(result.metrics["per_class"]) == {"yes", "no"}

    client = _client(settings)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["positive_class"] == "yes"
    assert run.data.params["sample_weight"] == "None"  # 64 churners: bagging and out-of-fold calibration instead
    assert "customer_id" in run.data.params["dropped_columns"] and "country" in run.data.params["dropped_columns"]
    assert run.data.tags["poise.job_id"] == result.job_id
    assert float(run.data.tags["poise.imbalance_ratio"]) > 5
    assert run.data.metrics["holdout_macro_f1"] == pytest.approx(result.metrics["macro_f1"])
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/pr_curve.png", "plots/roc_curve.png",
            "plots/feature_importance.png"} <= artifacts
    top = {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    assert {"data", "report.md", "policy.json", "gate.json", "summary.md"} <= top
    assert "llm_trace.jsonl" not in top  # no LLM configured: the built-in planner and summary were used
    assert f"{result.metrics['macro_f1']:.3f}" in result.summary
    assert f"refitted on all 800 labelled rows (its threshold {result.threshold:.3f}" in result.summary
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "churn" and experiment.artifact_location.startswith(settings.home.as_uri())

    version = client.get_model_version("churn", "1")
    assert version.tags["poise.job_id"] == result.job_id
    assert tracking.champion_version(client, "churn") == "1"

    # the registered pyfunc, loaded by alias, predicts exactly what the predictor does at its threshold
    holdout = pd.read_parquet(result.holdout_path)
    features = holdout.drop(columns=["churned"])
    # the registered model is refitted on every labelled row once the holdout has scored the first fit; its threshold
    # comes from its own out-of-fold predictions (64 churners: bagged), never from rows it was fitted on
    first = TabularPredictor.load(str(settings.job_dir(result.job_id) / "autogluon"), verbosity=0)
    predictor = TabularPredictor.load(str(settings.job_dir(result.job_id) / "autogluon_full"), verbosity=0)
    assert len(first.predict_proba_oof()) == 800 - len(holdout) and len(predictor.predict_proba_oof()) == 800
    assert predictor.decision_threshold == pytest.approx(result.threshold)
    assert first.decision_threshold == pytest.approx(result.metrics["decision_threshold"])
    refit = mlflow.artifacts.load_dict(f"runs:/{result.mlflow_run_id}/refit_summary.json")
    assert refit["rows"] == 800 and refit["holdout_rows_added"] == len(holdout) and refit["best_model"]
    assert run.data.params["refit_rows"] == "800" and run.data.metrics["refit_decision_threshold"] == pytest.approx(
        result.threshold)
    # the first fit has half the fitting budget (80 % of the job's); the refit has what the first left of it
    assert int(run.data.params["fit_time_limit"]) == 6
    assert int(run.data.params["refit_time_limit"]) == round(12 - run.data.metrics["fit_seconds"])
    champion = mlflow.pyfunc.load_model("models:/churn@champion")
    in_memory = champion.unwrap_python_model()._predictor  # serving never reads a model from disk per request
    assert in_memory.model_names(persisted=False) == [] and in_memory.model_best in in_memory.model_names(persisted=True)
    served = champion.predict(serving_frame(features))
    expected_labels = predictor.predict(features).astype(str)
    assert list(served["label"]) == list(expected_labels)
    expected_proba = predictor.predict_proba(features)
    for label in ("yes", "no"):
        assert served[f"proba_{label}"].to_numpy() == pytest.approx(expected_proba[label].to_numpy(), abs=1e-9)

    with session_scope(settings.db_url) as session:
        job = session.get(Job, result.job_id)
        assert job.status == "succeeded" and job.mlflow_run_id == result.mlflow_run_id
        nodes = [s.node for s in session.scalars(select(JobStep).where(JobStep.job_id == job.id).order_by(JobStep.id))]
        assert nodes == ["load", "profile", "review", "approve", "prepare", "train", "evaluate", "gate", "refit",
                         "register", "explain", "report"]
        dataset = session.get(Dataset, job.dataset_id)
        assert dataset.n_rows == 800 and len(dataset.content_hash) == 64
        stored = session.scalars(select(ModelVersion)).one()
        assert stored.champion_at_registration and stored.threshold == pytest.approx(result.threshold)

    # a second job on the same data is judged against the champion on the same holdout
    second = runner.train(churn_csv, "churned", name="churn", time_limit=15, settings=settings)
    assert second.status == "succeeded" and second.model_version == "2"
    assert second.gate["compared_with"] == "champion v1"
    assert second.gate["reference_value"] is not None
    expected_champion = "2" if second.is_champion else "1"
    assert tracking.champion_version(client, "churn") == expected_champion


HOSTILE = "plan|<script>alert(1)</script>\n'; DROP TABLE jobs;--"


def test_cost_objective_with_hostile_column_names(settings, tmp_path, make_table):
    table = make_table().rename(columns={"plan": HOSTILE})
    data = tmp_path / "hostile.csv"
    table.to_csv(data, index=False)

    result = runner.train(data, "churned", name="churn-cost", objective="cost", cost_fn=10, cost_fp=1,
                          time_limit=10, settings=settings)

    assert result.status == "succeeded", result.error
    report = result.report_path.read_text()
    assert "<script>" not in report and "DROP TABLE" not in report.split("## Holdout")[1]
    served = tracking.load_model("churn-cost", result.model_version).predict(
        serving_frame(pd.read_parquet(result.holdout_path).drop(columns=["churned"])))
    assert len(served) == result.metrics["n_holdout"]
    assert result.gate["metric"] == "expected_cost"
    policy = json.loads((settings.job_dir(result.job_id) / "data_card.json").read_text())  # data card exists
    assert policy["profile"]["target"]["minority_class"] == "yes"
    # expected cost per row, recomputed from the confusion matrix
    cm = result.metrics["confusion_matrix"]
    labels, matrix = cm["labels"], cm["matrix"]
    yes, no = labels.index("yes"), labels.index("no")
    false_negatives, false_positives = matrix[yes][no], matrix[no][yes]
    n = result.metrics["n_holdout"]
    assert result.metrics["expected_cost"] == pytest.approx((10 * false_negatives + false_positives) / n)
    assert 0.0 < result.threshold < 1.0


def test_job_records_on_postgresql(poise_home, postgres_url, churn_csv):
    settings = Settings(home=poise_home, database_url=postgres_url)
    result = runner.train(churn_csv, "churned", name="churn-pg", time_limit=5, settings=settings)
    assert result.status == "succeeded", result.error
    with session_scope(postgres_url) as session:
        job = session.get(Job, result.job_id)
        assert job.status == "succeeded" and job.dataset_id is not None
        assert len(job.steps) == 12 and all(step.status == "succeeded" for step in job.steps)
        assert session.scalars(select(ModelVersion)).one().registered_name == "churn-pg"


def test_a_table_larger_than_the_memory_budget_is_trained_on_a_weighted_sample_and_scored_in_full(
        poise_home, tmp_path, parquet_parts, monkeypatch):
    monkeypatch.setattr(nodes, "REFERENCE_HOLDOUT_ROWS", 1_000)  # the holdout has ~2,400: its reference is a sample
    monkeypatch.setattr(nodes, "HOLDOUT_CHUNK_ROWS", 1_000)  # and is typed, scored and sampled in 3 parts
    table = parquet_parts(tmp_path / "parts", parts=3, rows=4_000)
    # ~40 bytes a row in pandas: a 100 kB budget samples the 12,000 rows down to ~600 to train on
    settings = Settings(home=poise_home, memory_budget_bytes=100_000)
    result = runner.train(tmp_path / "parts", "bad", name="parts", time_limit=15, settings=settings)

    assert result.status == "succeeded", result.error
    job_dir = settings.home / "jobs" / result.job_id
    card = json.loads((job_dir / "data_card.json").read_text())
    sample = card["source"]["sample"]
    assert sample["rows"] == len(table) and sample["files"] == 3
    assert sample["class_sampling_rate"]["True"] == 1.0 and sample["class_sampling_rate"]["False"] < 0.1
    # the holdout is every row of its share, and the model was scored on all of them
    holdout = pd.read_parquet(job_dir / "holdout_every_row.parquet")
    assert result.metrics["n_holdout"] == len(holdout) > 2_000
    assert card["split"]["train_rows"] == sample["sampled_rows"] < 1_000
    assert "Sampled for training" in (job_dir / "data_card.md").read_text()
    # trained and calibrated with the prior-restoring weights; not refitted (the holdout is not part of the sample)
    run = _client(settings).get_run(result.mlflow_run_id)
    assert run.data.params["sample_weight"] == "poise_prior_weight"
    assert run.data.params["sampled_rows"] == str(sample["sampled_rows"])
    assert "poise_prior_weight" not in run.data.params["dropped_columns"]
    assert "data/sample.json" in {a.path for a in _client(settings).list_artifacts(result.mlflow_run_id, "data")}
    assert "a sample of" in result.summary and f"table's {len(table)} rows" in result.summary
    assert result.metrics["minority_recall"] > 0.3
    # the drift reference is drawn back to the table's prior, not the sample's (every minority row): else every
    # check of this model would see a prior shift
    _, frames, meta = tracking.load_reference(_client(settings), "parts", "1")
    labelled = table["bad"].dropna()
    table_share = float(labelled.mean())
    assert abs(meta["prior"]["True"] - table_share) < 0.02
    # the reference holdout: 1,000 of the holdout's rows, each with the predictions the job made of that very row
    assert len(list((job_dir / "holdout").glob("part-*.parquet"))) == 3
    holdout_rows = pd.concat(nodes.holdout_chunks(job_dir / "holdout"), ignore_index=True)
    assert len(holdout_rows) == len(holdout) and card["split"]["holdout_rows"] == len(holdout)
    scored = holdout_rows.join(pd.read_parquet(job_dir / "holdout_predictions.parquet"))
    kept = frames["holdout"].join(frames["predictions"])
    as_rows = lambda frame: [tuple(row) for row in frame.astype(str).to_numpy()]  # noqa: E731
    assert len(kept) == 1_000 < len(scored) and len(set(as_rows(kept))) == 1_000
    assert set(as_rows(kept)) <= set(as_rows(scored[kept.columns]))  # a misaligned prediction would not be there
    assert meta["prior"]["True"] < sample["sampled_class_rows"]["True"] / sample["sampled_rows"] / 2


def test_the_holdout_scored_a_chunk_at_a_time_equals_it_scored_whole(settings, churn_csv, monkeypatch):
    result = runner.train(churn_csv, "churned", name="chunks", time_limit=10, settings=settings)
    assert result.status == "succeeded", result.error
    state, _ = runner.checkpoint_state(settings, result.job_id)
    predictor = TabularPredictor.load(state["fit"]["predictor_dir"], verbosity=0)
    holdout = pd.read_parquet(result.holdout_path)
    whole_predicted, whole_proba = nodes.labels_and_proba(predictor, holdout.drop(columns=["churned"]))

    monkeypatch.setattr(nodes, "HOLDOUT_CHUNK_ROWS", 37)  # 160 holdout rows: five chunks
    labels, predicted, proba, rows = nodes.scored_holdout(predictor, str(result.holdout_path), "churned", seed=0,
                                                          keep_rows=50)
    pd.testing.assert_series_equal(labels, holdout["churned"], check_names=False)
    assert predicted.tolist() == whole_predicted.tolist()
    pd.testing.assert_frame_equal(proba, whole_proba.reset_index(drop=True))
    as_rows = lambda frame: [tuple(row) for row in frame.astype(str).to_numpy()]  # noqa: E731
    assert len(rows) == 50 and set(as_rows(rows)) <= set(as_rows(holdout))  # rows of the holdout, as they are
    again = nodes.scored_holdout(predictor, str(result.holdout_path), "churned", seed=0, keep_rows=50)[3]
    pd.testing.assert_frame_equal(again, rows)  # the same seed keeps the same rows


@pytest.mark.parametrize("mode", ["drop", "downweight"])
def test_flagged_labels_are_reported_and_left_out_or_down_weighted_only_when_asked(settings, tmp_path, make_table,
                                                                                     mode):
    """The label-noise audit of the first fit's out-of-fold predictions goes into the data card, MLflow and the
    summary; the refit on every labelled row drops or down-weights the flagged rows as the job asked, and says so.
    The class-overlap diagnostic sits beside it."""
    from poise.agents import label_noise

    table = make_table(n_rows=800, seed=3)
    stayers = table.index[(table["churned"] == "no") & (table["tenure_months"] > 40)][:20]
    table.loc[stayers, "churned"] = "yes"  # long-tenure customers marked as churners (real ones stay ~5 months)
    data = tmp_path / "noisy.csv"
    table.to_csv(data, index=False)
    result = runner.train(data, "churned", name=f"noisy-{mode}", time_limit=15, settings=settings, label_noise=mode)
    assert result.status == "succeeded", result.error

    card = json.loads((settings.job_dir(result.job_id) / "data_card.json").read_text())
    audit, overlap = card["diagnostics"]["label_noise"], card["diagnostics"]["class_overlap"]
    train = pd.read_parquet(result.train_path)
    planted = set(train.index[(train["tenure_months"] > 40) & (train["churned"] == "yes")])
    flagged_yes = {item["row_id"] for item in audit["top"] if item["given"] == "yes"}
    # measured: 7 of the 15 planted rows in the training split flagged, and every 'yes' flagged was planted
    assert audit["per_class"]["yes"]["suspects"] >= 4 and len(flagged_yes & planted) >= 0.75 * len(flagged_yes)
    assert overlap["level"] in ("low", "moderate", "high") and overlap["sentence"]
    card_text = (settings.job_dir(result.job_id) / "data_card.md").read_text()
    assert "## Label noise" in card_text and "## Class overlap" in card_text

    client = _client(settings)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.metrics["label_noise_suspects"] == audit["suspects"]
    assert run.data.metrics["class_overlap_minority_share"] == pytest.approx(overlap["minority_in_majority_regions"])
    data_files = {a.path for a in client.list_artifacts(result.mlflow_run_id, "data")}
    assert {"data/label_noise.json", "data/class_overlap.json", "data/label_noise_suspects.csv"} <= data_files
    suspects = pd.read_csv(client.download_artifacts(result.mlflow_run_id, "data/label_noise_suspects.csv"))
    assert len(suspects) == audit["suspects"] and "training_row" in suspects.columns

    refit = mlflow.artifacts.load_dict(f"runs:/{result.mlflow_run_id}/refit_summary.json")
    assert refit["label_noise"] == {"mode": mode, "rows": audit["suspects"]}
    if mode == "drop":
        assert refit["rows"] == 800 - audit["suspects"]
        assert "leaves out the" in audit["applied"] and audit["applied"][1:] in result.summary
    else:
        assert refit["rows"] == 800
        assert f"at {label_noise.DOWN_WEIGHT:g}" in audit["applied"]
        predictor = TabularPredictor.load(str(settings.job_dir(result.job_id) / "autogluon_full"), verbosity=0)
        assert predictor.sample_weight == label_noise.ROW_WEIGHT
        assert label_noise.ROW_WEIGHT not in predictor.features()
    assert "likely mislabelled" in result.summary and "classes" in result.summary


def test_asking_to_drop_flagged_rows_when_none_could_be_audited_says_so(settings, tmp_path, make_table):
    """250 minority rows and a 15 s budget: the fit is not bagged, so no row has an out-of-fold prediction; the job
    still trains, refits on every row, and says that the rows it was asked to drop were never audited."""
    data = tmp_path / "unbagged.csv"
    make_table(n_rows=2500, minority_share=0.1, seed=4).to_csv(data, index=False)
    result = runner.train(data, "churned", name="unbagged", time_limit=15, settings=settings, label_noise="drop")
    assert result.status == "succeeded", result.error
    card = json.loads((settings.job_dir(result.job_id) / "data_card.json").read_text())
    audit = card["diagnostics"]["label_noise"]
    assert audit["suspects"] is None and "the fit was not bagged" in audit["sentence"]
    assert audit["applied"] == "not applied (drop was asked): the rows were not audited"
    assert audit["applied"][1:] in result.summary
    refit = mlflow.artifacts.load_dict(f"runs:/{result.mlflow_run_id}/refit_summary.json")
    assert refit["rows"] == 2500 and refit["label_noise"] == {"mode": "drop", "rows": 0}
    assert "label_noise_suspects" not in _client(settings).get_run(result.mlflow_run_id).data.metrics
