"""The monitor graph's nodes: each calls the drift agent (or the training pipeline) and returns a partial update.

Files of a check live under `POISE_HOME/checks/<id>`; everything a reviewer needs is
logged to the check's MLflow run in the model's experiment. A problem with the input
(no champion, a batch without the model's columns) ends the check through `error`. The window
itself is gathered by `pipelines.monitoring.windows`.
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

from poise.agents.deployment.signature import example_rows, predict_table, serving_frame
from poise.agents.drift import adaptation, decision, detection, estimation
from poise.agents.drift.reference import LABEL, WEIGHT, Reference, Window, class_weights
from poise.agents.errors import DataError, SpecError
from poise.agents.job_spec import CheckSpec, JobSpec
from poise.pipelines.monitoring import windows
from poise.pipelines.monitoring.configuration import MonitorContext
from poise.pipelines.monitoring.state import MonitorState
from poise.pipelines.training.nodes import user_errors, write_parquet
from poise.registry import queries, tracking

MIN_WINDOW_ROWS = 30
DERIVED_FROM_TAG = "poise.derived_from"  # a recalibrated version names the version whose predictor it reuses


def _spec(state: MonitorState) -> CheckSpec:
    return CheckSpec.model_validate(state["spec"])


def _reference(state: MonitorState) -> Reference:
    folder = Path(state["reference_dir"])
    frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("train", "holdout", "predictions")}
    feedback = folder / "feedback.parquet"
    return Reference(**frames, meta=json.loads((folder / "meta.json").read_text(encoding="utf-8")),
                     feedback=pd.read_parquet(feedback) if feedback.exists() else None)


def _window(state: MonitorState) -> Window:
    paths = state["window"]
    return Window(features=pd.read_parquet(paths["features"]), predictions=pd.read_parquet(paths["predictions"]),
                  labels=pd.read_parquet(paths["labels"])["label"], n_rows=paths["n_rows"], whole=paths.get("whole"))


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
    folder = ctx.work_dir / "reference"
    for name, frame in frames.items():
        write_parquet(frame, folder / f"{name}.parquet")
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    window = (windows.from_log(ctx, spec.model_name, meta["types"]) if spec.current is None and spec.sql_source is None
              else windows.from_batch(ctx, spec, champion, meta, frames["train"]))
    feedback = windows.clean_feedback(ctx, spec.model_name, champion, reference_run, meta,
                                      pd.read_parquet(window["features"]))
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


@user_errors
def analyse(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    ctx = runtime.context
    analysis = detection.analyse(_reference(state), _window(state), ctx.settings.seed,
                                 html_path=ctx.work_dir / "drift_report.html", cache_key=state["reference_run"])
    return {"analysis": analysis}


def decide(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    spec = _spec(state)
    outcome, reason = decision.decide(state["analysis"])
    kind = decision.ACTION_OF[outcome]
    if spec.action != "auto" and spec.action != kind:
        kind, reason = spec.action, f"{reason}; action '{spec.action}' requested instead of '{kind}'"
    return {"decision": outcome, "reason": reason, "action": {"kind": kind}}


@user_errors
def act(state: MonitorState, runtime: Runtime[MonitorContext]) -> dict[str, Any]:
    """Recalibrate (new version, same predictor) or retrain (new version through the training pipeline)."""
    ctx, spec = runtime.context, _spec(state)
    reference, window, seed = _reference(state), _window(state), ctx.settings.seed
    split = adaptation.labelled_split(window, seed)
    prior = state["analysis"]["prior"]["prior"]
    path = ctx.work_dir / "evaluation.parquet"
    if state["action"]["kind"] == "recalibrate":
        recalibration = adaptation.recalibration(reference, prior)
        version = _register_recalibrated(ctx, spec.model_name, state["champion_version"], recalibration,
                                         reference, state["mlflow_run_id"])
        weights = class_weights(reference.holdout[reference.target], prior, reference.meta["prior"])
        evaluation = adaptation.evaluation_rows(reference, window, split[1] if split else None, weights)
        write_parquet(evaluation, path)
        action = {"challenger_version": version, **recalibration}
    else:
        table = adaptation.retraining_table(reference, window, split[0] if split else np.array([], dtype=int),
                                            state["decision"], prior, seed)
        weights = adaptation.importance_weights(reference.holdout, window.features, reference.features, seed)
        evaluation = adaptation.evaluation_rows(reference, window, split[1] if split else None, weights)
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
                           reference: Reference, run_id: str) -> str:
    predictor_dir, config = _model_config(name, champion)
    config.update(prior_weights=recalibration["prior_weights"])
    if recalibration["decision_threshold"] is not None:
        config["decision_threshold"] = recalibration["decision_threshold"]
    example = example_rows(reference.holdout[reference.features])
    return tracking.log_and_register_model(
        ctx.mlflow, run_id, name, ctx.check_id, predictor_dir, model_config=config,
        input_example=serving_frame(example), output_example=reference.predictions.loc[example.index],
        tags={DERIVED_FROM_TAG: champion, "poise.kind": "recalibrated"})


def training_spec(ctx: MonitorContext, name: str, version: str) -> dict[str, Any]:
    """The training spec behind a version (following recalibrated versions to the one they reuse)."""
    for _ in range(100):
        with ctx.session() as session:
            row = queries.model_version(session, name, version)
            if row is not None:
                return dict(row.job.spec)
        version = ctx.mlflow.get_model_version(name, version).tags.get(DERIVED_FROM_TAG)
        if version is None:
            break
    raise SpecError(f"no training job recorded for '{name}' v{version}; cannot retrain it")


def _retrain(ctx: MonitorContext, spec: CheckSpec, champion: str, table: pd.DataFrame,
             holdout_path: Path | None):
    """The training pipeline on the weighted retraining table. With a fresh labelled holdout from the window
    the job trains on all of the table and is scored on that holdout (the rows the comparison uses), rather
    than holding out a fifth of the few new rows it has to learn from."""
    from poise.pipelines import runner

    base = training_spec(ctx, spec.model_name, champion)
    path = write_parquet(table, ctx.work_dir / "retraining.parquet")
    job_spec = JobSpec.model_validate({
        **base, "data": str(path), "weight_column": WEIGHT, "promote": False, "require_approval": False,
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
    champion = predict_table(tracking.load_model(spec.model_name, state["champion_version"]), features)
    challenger = predict_table(tracking.load_model(spec.model_name, action["challenger_version"]), features)
    write_parquet(challenger, ctx.work_dir / "challenger_predictions.parquet")
    weights = evaluation[WEIGHT].to_numpy() if WEIGHT in evaluation else None
    comparison = adaptation.compare(reference, evaluation[reference.target], champion[LABEL],
                                    challenger[LABEL], weights, ctx.settings.seed,
                                    min_probability=adaptation.PROMOTION_CONFIDENCE[action["kind"]])
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
    predictions = pd.read_parquet(ctx.work_dir / "challenger_predictions.parquet")
    adapted = adaptation.adapted_reference(reference, window, evaluation, predictions,
                                           state["analysis"]["prior"]["prior"], action.get("decision_threshold"),
                                           state["comparison"]["challenger"], ctx.settings.seed)
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
        html = ctx.work_dir / "drift_report.html"
        if html.exists():
            client.log_artifact(run_id, str(html), "drift")
        tracking.log_metrics(client, run_id, {
            "drift_weighted_share": analysis["columns"]["weighted_share"],
            "drift_columns_drifted": analysis["columns"]["n_drifted"],
            "domain_auc": analysis["multivariate"]["auc"], "domain_threshold": analysis["multivariate"]["threshold"],
            "window_rows": analysis["n_rows"],
            **({"window_columns_psi_shifted": len(state["window"]["whole"]["stability"]["shifted"]),
                "window_rows_scored": state["window"]["whole"]["rows"]} if state["window"].get("whole") else {}),
            **{f"prior_{c}": q for c, q in analysis["prior"]["prior"].items()},
            **({f"window_{judged['metric']}": judged["window_value"]
                for judged in (analysis["performance"]["primary"], analysis["performance"]["brier"])}
               if analysis["performance"] else {}),
            **_estimate_metrics(analysis["estimated_quality"]),
        })
    if comparison:
        tracking.log_metrics(client, run_id, {"champion_" + comparison["metric"]: comparison["champion"],
                                              "challenger_" + comparison["metric"]: comparison["challenger"]})
    path = ctx.work_dir / "report.md"
    path.write_text(_report_text(state), encoding="utf-8")
    client.log_artifact(run_id, str(path), "drift")
    tracking.finish_run(client, run_id, "FINISHED")
    return {"report_path": str(path)}


def _estimate_metrics(estimate: dict[str, Any] | None) -> dict[str, float]:
    if not estimate:
        return {}
    metrics = {}
    for name, value in estimate["estimated"].items():
        low, high = estimate["interval"][name]
        metrics |= {f"estimated_{name}": value, f"estimated_{name}_low": low, f"estimated_{name}_high": high}
    if estimate["realised"]:
        metrics |= {f"realised_{name}": value for name, value in estimate["realised"]["realised"].items()}
    return metrics


def _stability_lines(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    worst = sorted(found["psi"].items(), key=lambda item: -item[1])[:5]
    return [f"- Stability over every row ({found['rule']}): "
            + (f"{len(found['shifted'])} of {len(found['psi'])} columns shifted" if found["shifted"]
               else f"no column of {len(found['psi'])} shifted")
            + "; highest PSI " + ", ".join(f"{column} {value:.3f}" for column, value in worst)]


def _every_row_lines(whole: dict[str, Any] | None) -> list[str]:
    if not whole:
        return []
    domain = whole["domain"]
    return [f"- Every row ({whole['scored_on']}, {whole['seconds']:.0f} s): {whole['rows']:,} rows scored by the "
            f"champion; the domain classifier's ROC-AUC over {domain['window_rows']:,} rows it was not fitted on, "
            f"against {domain['reference_rows']:,} reference rows it never saw: {domain['auc']:.4f}",
            *_stability_lines(whole["stability"])]


def _report_text(state: MonitorState) -> str:
    spec, window = state["spec"], state["window"]
    lines = [f"# Drift check of {spec['model_name']} (champion v{state['champion_version']})", "",
             f"- Window: {window['n_rows']:,} rows from {window.get('source')}, {window['sample_rows']:,} sampled, "
             f"{window['n_labelled']:,} labelled"
             + (f" (bigger than the memory budget: read out of core, each row kept with probability "
                f"{window['sample']['sampling_rate']:.4g}; missing and distinct values counted over every row)"
                if window.get("sample") else ""),
             *_every_row_lines(window.get("whole")),
             *([f"- {estimation.described(state['analysis']['estimated_quality'])}"] if state.get("analysis") else []),
             f"- Decision: **{state['decision']}** — {state['reason']}"]
    action = state.get("action") or {}
    if action.get("challenger_version"):
        lines.append(f"- Action: {action['kind']} → v{action['challenger_version']}, evaluated on "
                     f"{action['evaluated_on']} ({action['evaluation_rows']} rows)")
    if state.get("comparison"):
        lines.append(f"- Comparison: {state['comparison']['reason']}")
        lines.append(f"- Promoted: {'yes' if state.get('promoted') else 'no'}")
    return "\n".join(lines) + "\n"
