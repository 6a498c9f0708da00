"""The monitor graph's nodes: each calls the drift agent (or the training pipeline) and returns a partial update.

Files of a check live under `POISE_HOME/checks/<id>`; everything a reviewer needs is
logged to the check's MLflow run in the model's experiment. A problem with the input
(no champion, a batch without the model's columns) ends the check through `error`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from mlflow.exceptions import MlflowException
from sklearn.model_selection import train_test_split
from sqlalchemy import func, select

from agents import data_engineering, deployment, drift
from agents.errors import DataError, SpecError
from pipelines.monitoring.configuration import MonitorContext
from pipelines.monitoring.state import CheckSpec, MonitorState
from pipelines.training.nodes import write_parquet, user_errors
from pipelines.training.state import JobSpec
from registry import queries, tracking
from registry.db import session_scope
from registry.models import DriftCheck, Prediction

MIN_WINDOW_ROWS = 30
DERIVED_FROM_TAG = "poise.derived_from"  # a recalibrated version names the version whose predictor it reuses


def _spec(state: MonitorState) -> CheckSpec:
    return CheckSpec.model_validate(state["spec"])


def _reference(state: MonitorState) -> drift.Reference:
    folder = Path(state["reference_dir"])
    frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("train", "holdout", "predictions")}
    feedback = folder / "feedback.parquet"
    return drift.Reference(**frames, meta=json.loads((folder / "meta.json").read_text(encoding="utf-8")),
                           feedback=pd.read_parquet(feedback) if feedback.exists() else None)


def _window(state: MonitorState) -> drift.Window:
    paths = state["window"]
    return drift.Window(features=pd.read_parquet(paths["features"]), predictions=pd.read_parquet(paths["predictions"]),
                        labels=pd.read_parquet(paths["labels"])["label"], n_rows=paths["n_rows"])


@user_errors
def collect(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    """Find the champion and its reference, and gather the window (a batch, or the prediction log)."""
    ctx, spec = runtime.context, _spec(state)
    client = ctx.mlflow
    champion = tracking.champion_version(client, spec.model_name)
    if champion is None:
        raise SpecError(f"model '{spec.model_name}' has no champion to monitor")
    try:
        reference_run, frames, meta = tracking.load_reference(client, spec.model_name, champion)
    except (MlflowException, OSError):
        raise DataError(f"champion v{champion} of '{spec.model_name}' has no drift reference (it was registered "
                        "before Poise stored one); retrain it to monitor it") from None
    folder = ctx.check_dir / "reference"
    for name, frame in frames.items():
        write_parquet(frame, folder / f"{name}.parquet")
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    window = (_window_from_log(ctx, spec.model_name, meta["types"]) if spec.current is None and spec.sql_source is None
              else _window_from_batch(ctx, spec, champion, meta))
    feedback = _clean_feedback(ctx, spec.model_name, champion, reference_run, meta, pd.read_parquet(window["features"]))
    if feedback is not None:
        write_parquet(feedback, folder / "feedback.parquet")
    run_id = tracking.get_or_create_run(
        client, tracking.ensure_experiment(client, spec.model_name, ctx.settings.artifact_root), ctx.check_id,
        run_name=f"drift-check-{ctx.check_id[:8]}")
    client.set_tag(run_id, "poise.kind", "drift_check")
    client.set_tag(run_id, "poise.champion_version", champion)
    update = {"champion_version": champion, "reference_dir": str(folder), "window": window, "mlflow_run_id": run_id,
              "reference_run": reference_run}
    if window["n_rows"] < MIN_WINDOW_ROWS:
        update |= {"decision": "no_data",
                   "reason": f"the window has {window['n_rows']} rows; a check needs at least {MIN_WINDOW_ROWS}"}
    return update


def _row_keys(features: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """A hash of each row's feature values, the same whichever way the row came in (the log stores numbers
    as JSON floats; a batch file may hold them as integers)."""
    frame = features.reindex(columns=columns)
    frame = frame.apply(lambda c: c.astype("float64") if pd.api.types.is_numeric_dtype(c) and
                        not pd.api.types.is_bool_dtype(c) else c.astype(str))
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _clean_feedback(ctx: MonitorContext, name: str, champion: str, reference_run: str, meta: dict[str, Any],
                    window_features: pd.DataFrame) -> pd.DataFrame | None:
    """The labelled rows of this champion's earlier windows judged clean, against the same reference (most
    recent first, up to `drift.FEEDBACK_ROWS`): the served predictions with the true label in the target
    column. They join the holdout in `drift.labelled_baseline`: what the performance judgement compares with, what
    the prior is estimated from (most needed when the window itself has no labels), what recalibration tunes on.
    Only `no_drift` windows count, so rows the model already did worse on never lower what it is held to.
    Batches overlap (a query over the last 7 days run daily, a file checked twice): a row another window
    already gave is not counted again, and a row of the window being judged never counts (it would be
    compared with itself); repeats within one window are kept, as real tables have them."""
    columns, target = list(meta["features"]), meta["target"]
    with session_scope(ctx.settings.db_url) as session:
        checks = session.scalars(
            select(DriftCheck.id).where(
                DriftCheck.model_name == name, DriftCheck.champion_version == champion,
                DriftCheck.results["reference_run"].as_string() == reference_run,
                DriftCheck.status == "succeeded", DriftCheck.decision == "no_drift", DriftCheck.id != ctx.check_id)
            .order_by(DriftCheck.finished_at.desc())).all()
    seen = set(_row_keys(window_features, columns).tolist())
    parts, kept = [], 0
    for check_id in checks:
        folder = ctx.settings.home / "checks" / check_id / "window"
        if not (folder / "labels.parquet").exists():
            continue
        labels = pd.read_parquet(folder / "labels.parquet")["label"]
        keys = _row_keys(pd.read_parquet(folder / "features.parquet"), columns)
        fresh = labels.notna().to_numpy() & ~pd.Series(keys).isin(seen).to_numpy()
        if not fresh.any():
            continue
        seen.update(keys[fresh].tolist())
        rows = pd.read_parquet(folder / "predictions.parquet")[fresh].assign(**{target: labels[fresh]})
        parts.append(rows.head(drift.FEEDBACK_ROWS - kept))
        kept += len(parts[-1])
        if kept >= drift.FEEDBACK_ROWS:
            break
    return pd.concat(parts, ignore_index=True).astype({target: str}) if parts else None


def _save_window(ctx: MonitorContext, features: pd.DataFrame, predictions: pd.DataFrame, labels: pd.Series,
                 n_rows: int, **info: Any) -> dict[str, Any]:
    folder = ctx.check_dir / "window"
    labels = pd.DataFrame({"label": labels.astype("string").to_numpy()})
    return {"features": str(write_parquet(features.reset_index(drop=True), folder / "features.parquet")),
            "predictions": str(write_parquet(predictions.reset_index(drop=True), folder / "predictions.parquet")),
            "labels": str(write_parquet(labels, folder / "labels.parquet")),
            "n_rows": int(n_rows), "sample_rows": len(features), "n_labelled": int(labels["label"].notna().sum()),
            **info}


def _window_from_batch(ctx: MonitorContext, spec: CheckSpec, champion: str, meta: dict) -> dict[str, Any]:
    settings = ctx.settings
    if spec.sql_source is not None:
        url = settings.sql_sources.get(spec.sql_source)
        if url is None:
            raise SpecError(f"unknown SQL source '{spec.sql_source}'; configured: "
                            f"{', '.join(settings.sql_sources) or 'none'}")
        table = data_engineering.read_sql(url, spec.sql_query, max_rows=settings.table_max_rows,
                                          timeout=settings.sql_timeout)
        source = "sql"
    else:
        table, _ = data_engineering.load_table(spec.current, max_bytes=settings.max_file_bytes)
        source = spec.current
    label_column = spec.label_column or meta["target"]
    if spec.label_column and label_column not in table.columns:
        raise DataError(f"label column '{label_column}' is not in the batch")
    missing = [c for c in meta["features"] if c not in table.columns]
    if missing:
        raise DataError(f"the batch lacks the model's feature column(s): {', '.join(map(repr, missing[:10]))}")
    rows = drift.sample(table, drift.PREDICTION_ROWS, settings.seed)
    predictions = deployment.predict_table(tracking.load_model(spec.model_name, champion), rows[meta["features"]])
    features = data_engineering.cast_columns(rows, meta["types"])
    labels = rows[label_column].astype(str).where(rows[label_column].notna()) if label_column in rows else \
        pd.Series([None] * len(rows), dtype="string")
    return _save_window(ctx, features, predictions, labels, len(table), source=source)


def _window_from_log(ctx: MonitorContext, name: str, types: dict[str, str]) -> dict[str, Any]:
    """The predictions served for `name` since the end of its last finished check (the most recent ones
    when there are more than `drift.PREDICTION_ROWS`), with their feedback labels."""
    with session_scope(ctx.settings.db_url) as session:
        since = session.scalar(select(func.max(DriftCheck.window_end)).where(
            DriftCheck.model_name == name, DriftCheck.status == "succeeded", DriftCheck.id != ctx.check_id))
        where = [Prediction.model_name == name] + ([Prediction.created_at > since] if since else [])
        n_rows, end = session.execute(select(func.count(), func.max(Prediction.created_at)).where(*where)).one()
        rows = session.execute(
            select(Prediction.inputs, Prediction.outputs, Prediction.feedback_label, Prediction.created_at)
            .where(*where).order_by(Prediction.created_at.desc()).limit(drift.PREDICTION_ROWS)).all()
    rows = rows[::-1]
    features = pd.DataFrame([r.inputs for r in rows])
    predictions = pd.DataFrame([r.outputs for r in rows])
    labels = pd.Series([r.feedback_label for r in rows], dtype="string")
    features = data_engineering.cast_columns(features.reindex(columns=list(types)), types) if rows else features
    return _save_window(ctx, features, predictions, labels, n_rows, source="prediction log",
                        start=(since.isoformat() if since else (rows[0].created_at.isoformat() if rows else None)),
                        end=end.isoformat() if end else None)


@user_errors
def analyse(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    ctx = runtime.context
    analysis = drift.analyse(_reference(state), _window(state), ctx.settings.seed,
                             html_path=ctx.check_dir / "drift_report.html", cache_key=state["reference_run"])
    return {"analysis": analysis}


def decide(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    spec = _spec(state)
    decision, reason = drift.decide(state["analysis"])
    kind = drift.ACTION_OF[decision]
    if spec.action != "auto" and spec.action != kind:
        kind, reason = spec.action, f"{reason}; action '{spec.action}' requested instead of '{kind}'"
    return {"decision": decision, "reason": reason, "action": {"kind": kind}}


def _labelled_split(window: drift.Window, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Window rows with labels, split in half (stratified): one half to learn from, one fresh holdout."""
    labelled = np.flatnonzero(window.labels.notna().to_numpy())
    labels = window.labels.iloc[labelled].astype(str)
    if len(labelled) < 2 * drift.MIN_LABELLED or labels.value_counts().min() < 2:
        return None
    learn, holdout = train_test_split(labelled, test_size=0.5, random_state=seed, stratify=labels)
    return np.sort(learn), np.sort(holdout)


def _evaluation_rows(reference: drift.Reference, window: drift.Window, rows: np.ndarray | None,
                     weights: np.ndarray) -> pd.DataFrame:
    """The labelled rows challenger and champion are compared on: the window's fresh holdout when it has one,
    else the reference holdout weighted to resemble the window."""
    if rows is not None:
        table = window.features.iloc[rows][reference.features].reset_index(drop=True)
        return table.assign(**{reference.target: window.labels.iloc[rows].astype(str).to_numpy()})
    table = reference.holdout[reference.features + [reference.target]].reset_index(drop=True)
    return table.assign(**{drift.WEIGHT: weights})


@user_errors
def act(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    """Recalibrate (new version, same predictor) or retrain (new version through the training pipeline)."""
    ctx, spec = runtime.context, _spec(state)
    reference, window, seed = _reference(state), _window(state), ctx.settings.seed
    split = _labelled_split(window, seed)
    prior = state["analysis"]["prior"]["prior"]
    path = ctx.check_dir / "evaluation.parquet"
    if state["action"]["kind"] == "recalibrate":
        recalibration = drift.recalibration(reference, prior)
        version = _register_recalibrated(ctx, spec.model_name, state["champion_version"], recalibration,
                                         reference, state["mlflow_run_id"])
        weights = drift.class_weights(reference.holdout[reference.target], prior, reference.meta["prior"])
        evaluation = _evaluation_rows(reference, window, split[1] if split else None, weights)
        write_parquet(evaluation, path)
        action = {"challenger_version": version, **recalibration}
    else:
        table = drift.retraining_table(reference, window, split[0] if split else np.array([], dtype=int),
                                       state["decision"], prior, seed)
        weights = drift.importance_weights(reference.holdout, window.features, reference.features, seed)
        evaluation = _evaluation_rows(reference, window, split[1] if split else None, weights)
        write_parquet(evaluation, path)
        job = _retrain(ctx, spec, state["champion_version"], table, path if split else None)
        action = {"challenger_version": job.model_version, "retrain_job_id": job.job_id,
                  "training_rows": len(table), "window_rows_learned": 0 if split is None else len(split[0])}
    return {"action": {**state["action"], **action, "evaluation_path": str(path),
                       "evaluated_on": "fresh labelled holdout from the window" if split else
                       "reference holdout weighted to the window (too few labels in the window)",
                       "evaluation_rows": len(evaluation)}}


def _model_config(name: str, version: str) -> tuple[Path, dict[str, Any]]:
    """A version's predictor folder (downloaded) and its model_config."""
    import mlflow

    folder = Path(mlflow.artifacts.download_artifacts(tracking.model_uri(name, version)))
    config = mlflow.models.Model.load(str(folder / "MLmodel")).flavors["python_function"].get("config") or {}
    predictor_dir = next(p for p in (folder / "artifacts").iterdir() if p.is_dir())
    return predictor_dir, dict(config)


def _register_recalibrated(ctx: MonitorContext, name: str, champion: str, recalibration: dict[str, Any],
                           reference: drift.Reference, run_id: str) -> str:
    predictor_dir, config = _model_config(name, champion)
    config.update(prior_weights=recalibration["prior_weights"])
    if recalibration["decision_threshold"] is not None:
        config["decision_threshold"] = recalibration["decision_threshold"]
    example = deployment.example_rows(reference.holdout[reference.features])
    return tracking.log_and_register_model(
        ctx.mlflow, run_id, name, ctx.check_id, predictor_dir, model_config=config,
        input_example=deployment.serving_frame(example), output_example=reference.predictions.loc[example.index],
        tags={DERIVED_FROM_TAG: champion, "poise.kind": "recalibrated"})


def training_spec(settings, name: str, version: str) -> dict[str, Any]:
    """The training spec behind a version (following recalibrated versions to the one they reuse)."""
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    for _ in range(100):
        with session_scope(settings.db_url) as session:
            row = queries.model_version(session, name, version)
            if row is not None:
                return dict(row.job.spec)
        version = client.get_model_version(name, version).tags.get(DERIVED_FROM_TAG)
        if version is None:
            break
    raise SpecError(f"no training job recorded for '{name}' v{version}; cannot retrain it")


def _retrain(ctx: MonitorContext, spec: CheckSpec, champion: str, table: pd.DataFrame,
             holdout_path: Path | None):
    """The training pipeline on the weighted retraining table. With a fresh labelled holdout from the window
    the job trains on all of the table and is scored on that holdout (the rows the comparison uses), rather
    than holding out a fifth of the few new rows it has to learn from."""
    from pipelines import runner

    base = training_spec(ctx.settings, spec.model_name, champion)
    path = write_parquet(table, ctx.check_dir / "retraining.parquet")
    job_spec = JobSpec.model_validate({
        **base, "data": str(path), "weight_column": drift.WEIGHT, "promote": False, "require_approval": False,
        "holdout_data": holdout_path and str(holdout_path),
        "session_id": None, "time_limit": spec.time_limit or base["time_limit"],
        "drop_columns": [c for c in base.get("drop_columns", []) if c in table.columns],
        "keep_columns": [c for c in base.get("keep_columns", []) if c in table.columns],
    })
    result = runner.run_spec(job_spec, ctx.settings)
    if result.status != "succeeded":
        raise DataError(f"retraining job {result.job_id[:12]} ended {result.status}: {result.error}")
    return result


def compare(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    """Champion and challenger scored on the same labelled rows; the bootstrap says whether to promote."""
    ctx, spec, action = runtime.context, _spec(state), state["action"]
    reference = _reference(state)
    evaluation = pd.read_parquet(action["evaluation_path"])
    features = evaluation[reference.features]
    champion = deployment.predict_table(tracking.load_model(spec.model_name, state["champion_version"]), features)
    challenger = deployment.predict_table(tracking.load_model(spec.model_name, action["challenger_version"]), features)
    write_parquet(challenger, ctx.check_dir / "challenger_predictions.parquet")
    weights = evaluation[drift.WEIGHT].to_numpy() if drift.WEIGHT in evaluation else None
    comparison = drift.compare(reference, evaluation[reference.target], champion[drift.LABEL],
                               challenger[drift.LABEL], weights, ctx.settings.seed,
                               min_probability=drift.PROMOTION_CONFIDENCE[action["kind"]])
    return {"comparison": comparison}


def approve(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    """Pause for a person (a LangGraph interrupt) before a promotion, when the check asks for it."""
    if not (_spec(state).require_approval and state["comparison"]["promote"]):
        return {"approval": {"approved": True, "by": "auto-approve"}}
    answer = interrupt({"check_id": runtime.context.check_id, "plan": [
        f"promote v{state['action']['challenger_version']} of {state['spec']['model_name']} "
        f"over v{state['champion_version']}", state["comparison"]["reason"]]})
    approved = isinstance(answer, dict) and bool(answer.get("approved"))
    return {"approval": {"approved": approved, "by": str(answer.get("by", "user")) if approved else "user"}}


def promote(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    """Move `champion` to the challenger (the old one keeps `previous-champion`) and give it a reference
    that matches the data it was adapted to, so the next check compares like with like."""
    ctx, spec, action = runtime.context, _spec(state), state["action"]
    if not (state["comparison"]["promote"] and state["approval"]["approved"]):
        return {"promoted": False}
    reference, window = _reference(state), _window(state)
    evaluation = pd.read_parquet(action["evaluation_path"])
    predictions = pd.read_parquet(ctx.check_dir / "challenger_predictions.parquet")
    adapted = drift.adapted_reference(reference, window, evaluation, predictions, state["analysis"]["prior"]["prior"],
                                      action.get("decision_threshold"), state["comparison"]["challenger"],
                                      ctx.settings.seed)
    client, version = ctx.mlflow, action["challenger_version"]
    tracking.log_reference(client, state["mlflow_run_id"], adapted)
    client.set_model_version_tag(spec.model_name, version, tracking.REFERENCE_RUN_TAG, state["mlflow_run_id"])
    tracking.promote(client, spec.model_name, version)
    return {"promoted": True}


def report(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    """Everything to MLflow: the Evidently report, drift metrics, the decision and the comparison."""
    ctx = runtime.context
    client, run_id = ctx.mlflow, state["mlflow_run_id"]
    analysis, comparison = state.get("analysis"), state.get("comparison")
    client.set_tag(run_id, "poise.decision", state["decision"])
    client.set_tag(run_id, "poise.reason", state["reason"][:5000])
    client.log_dict(run_id, {k: state.get(k) for k in ("window", "decision", "reason", "action", "comparison",
                                                       "approval", "promoted")}, "drift/check.json")
    if analysis:
        client.log_dict(run_id, analysis, "drift/analysis.json")
        html = ctx.check_dir / "drift_report.html"
        if html.exists():
            client.log_artifact(run_id, str(html), "drift")
        tracking.log_metrics(client, run_id, {
            "drift_weighted_share": analysis["columns"]["weighted_share"],
            "drift_columns_drifted": analysis["columns"]["n_drifted"],
            "domain_auc": analysis["multivariate"]["auc"], "domain_threshold": analysis["multivariate"]["threshold"],
            "window_rows": analysis["n_rows"],
            **{f"prior_{c}": q for c, q in analysis["prior"]["prior"].items()},
            **({f"window_{judged['metric']}": judged["window_value"]
                for judged in (analysis["performance"]["primary"], analysis["performance"]["brier"])}
               if analysis["performance"] else {}),
        })
    if comparison:
        tracking.log_metrics(client, run_id, {"champion_" + comparison["metric"]: comparison["champion"],
                                              "challenger_" + comparison["metric"]: comparison["challenger"]})
    path = ctx.check_dir / "report.md"
    path.write_text(_report_text(state), encoding="utf-8")
    client.log_artifact(run_id, str(path), "drift")
    tracking.finish_run(client, run_id, "FINISHED")
    return {"report_path": str(path)}


def _report_text(state: MonitorState) -> str:
    spec, window = state["spec"], state["window"]
    lines = [f"# Drift check of {spec['model_name']} (champion v{state['champion_version']})", "",
             f"- Window: {window['n_rows']:,} rows from {window.get('source')}, {window['sample_rows']:,} sampled, "
             f"{window['n_labelled']:,} labelled",
             f"- Decision: **{state['decision']}** — {state['reason']}"]
    action = state.get("action") or {}
    if action.get("challenger_version"):
        lines.append(f"- Action: {action['kind']} → v{action['challenger_version']}, evaluated on "
                     f"{action['evaluated_on']} ({action['evaluation_rows']} rows)")
    if state.get("comparison"):
        lines.append(f"- Comparison: {state['comparison']['reason']}")
        lines.append(f"- Promoted: {'yes' if state.get('promoted') else 'no'}")
    return "\n".join(lines) + "\n"
