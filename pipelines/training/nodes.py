"""The training graph's nodes: each calls one agent and returns a partial state update.

Nodes read and write files under the job folder and log to the job's MLflow run;
they never touch the job database (the runner records progress from the stream).
A problem with the user's input ends the job through `error`, not an exception.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from mlflow.exceptions import MlflowException

from poise.agents import automl, evaluation, imbalance_policy, label_noise, summary
from poise.agents.data_engineering import (
    column_types,
    data_card,
    large_tables,
    loading,
    object_store,
    overlap,
    profiling,
    splitting,
)
from poise.agents.deployment.gate import ChampionEvidence, quality_gate, reference_scores, schema_changes, score_champion
from poise.agents.deployment.signature import example_rows, serving_frame
from poise.agents.drift.reference import (
    REFERENCE_HOLDOUT_ROWS,
    REFERENCE_ROWS,
    Reference,
    prediction_columns,
    reference_meta,
    reweighted_sample,
    sample,
)
from poise.agents.errors import DataError, PoiseError
from poise.agents.job_spec import JobSpec
from poise.agents.plan import describe
from poise.pipelines import cluster
from poise.pipelines.training.configuration import TrainingContext
from poise.pipelines.training.report import write_report
from poise.pipelines.training.state import TrainingState, served_fit
from poise.registry import queries, tracking

Node = Callable[[TrainingState, Runtime[TrainingContext]], dict[str, Any]]
HOLDOUT_CHUNK_ROWS = 200_000  # holdout rows scored at a time: by the fit in `evaluate`, by the champion in `gate`
IMPORTANCE_ROWS = 500  # holdout rows the permutation importance shuffles


def user_errors(node: Node) -> Node:
    """Turn a user-facing problem into an `error` update that ends the job cleanly."""

    @functools.wraps(node)
    def wrapper(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
        try:
            return node(state, runtime)
        except PoiseError as problem:
            return {"error": str(problem)}

    return wrapper


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    df.to_parquet(partial, index=False)
    os.replace(partial, path)
    return path


def _spec(state: TrainingState) -> JobSpec:
    return JobSpec.model_validate(state["spec"])


@user_errors
def load(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    ctx = runtime.context
    spec = _spec(state)
    source = spec.data
    if object_store.is_s3(spec.data):  # copied into the job's folder, then read as local files
        source = object_store.local_copy(spec.data, ctx.work_dir / "source")
    elif (upload := ctx.settings.upload_of(source)) is not None:  # through an API, maybe on another machine
        ctx.settings.file_store.pull(upload)
    files = loading.parquet_files(source)
    if files:
        rows, table_bytes = large_tables.memory_estimate(files)
        if table_bytes > ctx.settings.memory_budget_bytes:
            return load_sample(spec, source, files, rows, table_bytes, ctx)
    table, info = loading.load_table(source, max_bytes=ctx.settings.max_file_bytes, na_values=spec.na_values)
    raw_path = write_parquet(table, ctx.work_dir / "raw.parquet")
    return {"load_info": info | _copied_from(spec.data), "raw_path": str(raw_path)}


def _copied_from(data: str) -> dict[str, str]:
    return {"copied_from": data} if object_store.is_s3(data) else {}


def load_sample(spec: JobSpec, source: str | Path, files: list[Path], rows: int, table_bytes: int,
                ctx: TrainingContext) -> dict[str, Any]:
    """A table larger than the memory budget: its holdout share of every class written out of core, an
    imbalance-aware sample of the rest to train on, weighted back to the table's prior (`large_tables`)."""
    if spec.weight_column or spec.holdout_data:
        given = "a weight column" if spec.weight_column else "a holdout table"
        raise DataError(f"{spec.data}: the table (~{table_bytes:,} bytes in memory) is larger than the memory budget "
                        f"({ctx.settings.memory_budget_bytes:,} bytes), so it is trained on a weighted sample with "
                        f"a holdout of its own; it cannot take {given} too")
    max_rows = int(ctx.settings.memory_budget_bytes * large_tables.SAMPLE_SHARE_OF_BUDGET / (table_bytes / rows))
    sample, record = large_tables.sample_table(
        files, spec.target, max_rows=max_rows, holdout_fraction=ctx.settings.holdout_fraction,
        seed=ctx.settings.seed, holdout_path=ctx.work_dir / "holdout_every_row.parquet", na_values=spec.na_values)
    record |= {"memory_estimate_bytes": table_bytes, "memory_budget_bytes": ctx.settings.memory_budget_bytes}
    info = loading.parquet_set_info(source, files, spec.na_values) | {"sample": record} | _copied_from(spec.data)
    spec.weight_column, spec.holdout_data = record["weight_column"], record["holdout_path"]
    raw_path = write_parquet(sample, ctx.work_dir / "raw.parquet")
    return {"load_info": info, "raw_path": str(raw_path), "spec": spec.model_dump()}


@user_errors
def profile(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    spec = _spec(state)
    table = pd.read_parquet(state["raw_path"])
    result = profiling.profile_table(
        table, spec.target, drop_columns=spec.drop_columns, keep_columns=spec.keep_columns,
        weight_column=spec.weight_column, seed=runtime.context.settings.seed,
        every_row=state["load_info"].get("sample"),
    )
    return {"profile": result}


def review(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    """With an LLM configured, let it amend drop/keep decisions; the profile is redone if it does."""
    llm = runtime.context.llm
    if llm is None:
        return {"review": {"by": "deterministic", "changes": None}}
    from poise.agents.llm_planner import PlannerFailed, review_profile

    try:
        amendment = review_profile(llm, state["profile"])
    except PlannerFailed as failure:
        llm.tracer.mark_fault(str(failure))  # a reply that came back but could not be used
        return {"review": {"by": "deterministic", "changes": None, "fallback": str(failure)}}
    if amendment is None:
        return {"review": {"by": "llm", "changes": None}}
    spec = _spec(state)
    spec.drop_columns = sorted(set(spec.drop_columns) | set(amendment["drop_columns"]))
    spec.keep_columns = sorted(set(spec.keep_columns) | set(amendment["keep_columns"]))
    try:
        amended = profiling.profile_table(
            pd.read_parquet(state["raw_path"]), spec.target, drop_columns=spec.drop_columns,
            keep_columns=spec.keep_columns, weight_column=spec.weight_column, seed=runtime.context.settings.seed,
            every_row=state["load_info"].get("sample"))
    except PoiseError as problem:
        return {"review": {"by": "deterministic", "changes": None, "fallback": f"amendment rejected: {problem}"}}
    return {"spec": spec.model_dump(), "profile": amended, "review": {"by": "llm", "changes": amendment}}


def plan_lines(state: TrainingState) -> list[str]:
    """The plan as shown for approval: the request plus what profiling found."""
    spec, target = state["spec"], state["profile"]["target"]
    lines = describe(spec)
    counts = ", ".join(f"{label}: {count}" for label, count in (target["class_counts"] or {}).items())
    lines.append(f"classes: {counts} (imbalance ratio {target['imbalance_ratio']:.1f})")
    lines += [f"drop {d['column']}: {d['reason']}" for d in state["profile"]["dropped"]]
    changes = (state.get("review") or {}).get("changes")
    if changes:
        lines.append(f"review amended the plan: {changes['reason']}")
    return lines


def approve(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    """Pause (a LangGraph interrupt, resumable from any process) until the plan is approved."""
    if not _spec(state).require_approval:
        return {"approval": {"approved": True, "by": "auto-approve"}}
    answer = interrupt({"job_id": runtime.context.job_id, "plan": plan_lines(state)})
    if isinstance(answer, dict) and answer.get("approved"):
        return {"approval": {"approved": True, "by": str(answer.get("by", "user"))}}
    return {"approval": {"approved": False, "by": "user"}, "error": "the plan was not approved"}


@user_errors
def prepare(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    ctx, spec = runtime.context, _spec(state)
    table = pd.read_parquet(state["raw_path"])
    if spec.holdout_data:  # a given table (drift retraining, a sampled big table's holdout), read part by part
        files = loading.parquet_files(spec.holdout_data)
        parts = (loading.parquet_chunks(files, spec.na_values, HOLDOUT_CHUNK_ROWS) if files else
                 [loading.load_table(spec.holdout_data, max_bytes=ctx.settings.max_file_bytes,
                                     na_values=spec.na_values)[0]])
        holdout_path = ctx.work_dir / "holdout"
        train, summary = splitting.split_with_holdout(table, state["profile"], parts, holdout_path)
    else:
        train, holdout, summary = splitting.prepare_split(
            table, state["profile"], holdout_fraction=ctx.settings.holdout_fraction, seed=ctx.settings.seed)
        holdout_path = write_parquet(holdout, ctx.work_dir / "holdout.parquet")
    diagnostics = {"class_overlap": None if state["profile"]["target"]["problem_type"] == "regression" else
                   overlap.class_overlap(train, spec.target, state["profile"], seed=ctx.settings.seed)}
    card_json, card_md = data_card.write_data_card(state["profile"], summary, state["load_info"], ctx.work_dir,
                                                   diagnostics)
    return {"split": {
        "train_path": str(write_parquet(train, ctx.work_dir / "train.parquet")),
        "holdout_path": str(holdout_path),
        "summary": summary,
        "diagnostics": diagnostics,
        "data_card": [str(card_json), str(card_md)],
    }}


@user_errors
def train(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    ctx, spec = runtime.context, _spec(state)
    policy = imbalance_policy.choose_policy(state["profile"], spec.objective, spec.cost_fn, spec.cost_fp,
                                            spec.positive_class, spec.threshold_policy, spec.excluded_model_types,
                                            spec.weight_column, time_limit=spec.time_limit)
    client = ctx.mlflow
    experiment_id = tracking.ensure_experiment(client, spec.name, ctx.settings.artifact_root)
    run_id = tracking.get_or_create_run(client, experiment_id, ctx.job_id, run_name=f"train-{ctx.job_id[:8]}")
    target = state["profile"]["target"]
    tracking.log_params(client, run_id, {
        "data": spec.data, "target": spec.target, "objective": spec.objective, "cost_fn": spec.cost_fn,
        "cost_fp": spec.cost_fp, "time_limit": spec.time_limit, "presets": spec.presets,
        "eval_metric": policy["eval_metric"], "positive_class": policy["positive_class"],
        "sample_weight": policy["sample_weight"], "features": len(state["profile"]["features"]),
        "dropped_columns": [d["column"] for d in state["profile"]["dropped"]],
        "train_rows": state["split"]["summary"]["train_rows"], "holdout_rows": state["split"]["summary"]["holdout_rows"],
    })
    client.set_tag(run_id, "poise.data_hash", state["load_info"]["content_hash"])
    client.set_tag(run_id, "poise.imbalance_ratio", f"{target['imbalance_ratio']:.3f}")
    client.log_dict(run_id, policy, "policy.json")
    if sample := state["load_info"].get("sample"):
        tracking.log_params(client, run_id, {"table_rows": sample["rows"], "sampled_rows": sample["sampled_rows"],
                                             "class_sampling_rate": sample["class_sampling_rate"]})
        client.log_dict(run_id, sample, "data/sample.json")

    predictor_dir, deploy_dir = ctx.work_dir / "autogluon", ctx.work_dir / "deploy"
    for folder in (predictor_dir, deploy_dir):
        shutil.rmtree(folder, ignore_errors=True)  # a resumed job refits from scratch
    train_rows = pd.read_parquet(state["split"]["train_path"])
    with cluster.cluster_fit(ctx.settings, ctx.job_id) as where:
        fit, predictor = automl.fit(
            train_rows, spec.target, policy, path=predictor_dir,
            deploy_path=deploy_dir, presets=spec.presets, num_cpus=ctx.settings.num_cpus,
            time_limit=automl.fit_time_limit(spec.time_limit, refit_follows=refit_skipped(state, spec) is None),
            text_columns=profiling.features_of_type(state["profile"], "text"), fold_fitting=where.fold_fitting,
        )
    fit |= where.summary(bagged=bool(policy["num_bag_folds"]))
    ctx.fitted_predictors[fit["predictor_dir"]] = predictor
    tracking.log_metrics(client, run_id, {"fit_seconds": fit["fit_seconds"], "decision_threshold": fit["threshold"]})
    client.log_dict(run_id, fit, "fit_summary.json")
    audit = _label_audit(state, spec, predictor, train_rows, policy)
    diagnostics = state["split"]["diagnostics"] | {"label_noise": audit["summary"]}
    data_card.write_data_card(state["profile"], state["split"]["summary"], state["load_info"], ctx.work_dir,
                              diagnostics)
    for card in state["split"]["data_card"]:
        client.log_artifact(run_id, card, "data")
    _log_diagnostics(client, run_id, diagnostics, audit.get("suspect_rows"), ctx.work_dir)
    return {"policy": policy, "mlflow_run_id": run_id, "fit": fit,
            "label_noise": {"summary": audit["summary"], "positions": audit["positions"]}}


def _label_audit(state: TrainingState, spec: JobSpec, predictor, train_rows: pd.DataFrame,
                 policy: dict[str, Any]) -> dict[str, Any]:
    """The label-noise audit of the first fit's out-of-fold predictions, with what the refit will do with the rows
    it flags (the job's `label_noise` option, or why it cannot apply)."""
    if policy["problem_type"] == "regression":
        return {"summary": None, "positions": []}
    try:
        found = label_noise.of_fit(predictor, train_rows, spec.target, bagged=bool(policy["num_bag_folds"]))
    except ValueError as problem:  # the audit is a report: a fit it cannot read still trains, and says why
        found = label_noise.not_audited(len(train_rows), str(problem))
    suspects = found.summary["suspects"]
    if spec.label_noise != "keep" and suspects != 0:
        skipped = "the rows were not audited" if suspects is None else refit_skipped(state, spec)
        found.summary["applied"] = (f"not applied ({spec.label_noise} was asked): {skipped}" if skipped else
                                    label_noise.refit_note(spec.label_noise, suspects))
    overlap = state["split"]["diagnostics"]["class_overlap"] or {}
    return {"summary": label_noise.with_overlap_caveat(found.summary, overlap.get("level")),
            "positions": found.positions.tolist(), "suspect_rows": label_noise.suspect_rows(train_rows, found)}


def _log_diagnostics(client, run_id: str, diagnostics: dict[str, Any], suspect_rows: pd.DataFrame | None,
                     work_dir: Path) -> None:
    """The class-overlap and label-noise figures to the run: their records, metrics and the flagged rows."""
    metrics = {}
    if found := diagnostics.get("class_overlap"):
        client.log_dict(run_id, found, "data/class_overlap.json")
        if found["minority_in_majority_regions"] is not None:
            metrics["class_overlap_minority_share"] = found["minority_in_majority_regions"]
    if found := diagnostics.get("label_noise"):
        client.log_dict(run_id, found, "data/label_noise.json")
        if found.get("suspects") is not None:
            metrics |= {"label_noise_suspects": found["suspects"],
                        "label_noise_share": found["suspects"] / max(found["rows"], 1)}
    if suspect_rows is not None and len(suspect_rows):
        path = work_dir / "label_noise_suspects.csv"
        suspect_rows.to_csv(path, index=False)
        client.log_artifact(run_id, str(path), "data")
    tracking.log_metrics(client, run_id, metrics)


def refit_skipped(state: TrainingState, spec: JobSpec) -> str | None:
    """Why this job's model is not refitted on its holdout rows too, or None when it is."""
    if state["load_info"].get("sample"):
        return "trained on a sample of a table larger than the memory budget; the holdout is scored in full"
    if state["split"]["summary"]["holdout_source"] != "split":
        return "the holdout is a separate table that the model is compared on (drift retraining)"
    if spec.weight_column:
        return "the holdout rows carry no training weights"
    return None


def refit(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    """Refit the model on every labelled row (train + holdout) once the holdout has scored it, under the same policy
    and with the rest of the budget; the version registered is the refit.

    The holdout's figures and the gate's verdict describe the model fitted without those rows: the refit is the same
    recipe on 20 % more data, which matters most where there are few minority rows. Its threshold comes from its own
    out-of-fold predictions (bagged fits) or AutoGluon's validation split of all rows, never from rows it fitted."""
    ctx, spec = runtime.context, _spec(state)
    skipped = refit_skipped(state, spec)
    if skipped:
        return {"refit": {"done": False, "reason": skipped}}
    split, first = state["split"], state["fit"]
    flagged = np.asarray(state["label_noise"]["positions"], dtype=int)
    rows, policy = label_noise.refit_table(pd.read_parquet(split["train_path"]), pd.read_parquet(split["holdout_path"]),
                                           spec.target, flagged, spec.label_noise, state["policy"])
    full_dir, deploy_dir = ctx.work_dir / "autogluon_full", ctx.work_dir / "deploy_full"
    for folder in (full_dir, deploy_dir):
        shutil.rmtree(folder, ignore_errors=True)  # a resumed job refits from scratch
    with cluster.cluster_fit(ctx.settings, ctx.job_id) as where:
        refitted, predictor = automl.fit(
            rows, spec.target, policy, path=full_dir, deploy_path=deploy_dir, presets=spec.presets,
            num_cpus=ctx.settings.num_cpus, text_columns=profiling.features_of_type(state["profile"], "text"),
            model_types=first["model_types"], fold_fitting=where.fold_fitting,
            time_limit=automl.fit_time_limit(spec.time_limit, used=first["fit_seconds"]),
        )
    refitted |= where.summary(bagged=bool(state["policy"]["num_bag_folds"]))
    ctx.fitted_predictors[refitted["predictor_dir"]] = predictor
    refitted |= {"done": True, "holdout_rows_added": int(split["summary"]["holdout_rows"]),
                 "label_noise": {"mode": spec.label_noise,
                                 "rows": 0 if spec.label_noise == "keep" else len(flagged)}}
    client, run_id = ctx.mlflow, state["mlflow_run_id"]
    tracking.log_params(client, run_id, {"refit_rows": refitted["rows"], "refit_time_limit": refitted["time_limit"],
                                         "fit_time_limit": first["time_limit"]})
    tracking.log_metrics(client, run_id, {"refit_seconds": refitted["fit_seconds"],
                                          "refit_decision_threshold": refitted["threshold"]})
    client.log_dict(run_id, refitted, "refit_summary.json")
    return {"refit": refitted}


def labels_and_proba(predictor, features: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """A fitted predictor's labels at its decision threshold and its class probabilities (columns named as strings)."""
    proba = predictor.predict_proba(features)
    proba.columns = [str(c) for c in proba.columns]
    return predictor.predict_from_proba(proba), proba


def holdout_chunks(path: str | Path) -> Iterator[pd.DataFrame]:
    """A job's holdout (a file, or a folder of typed parts) `HOLDOUT_CHUNK_ROWS` rows at a time."""
    return loading.parquet_chunks(loading.parquet_files(path), [], HOLDOUT_CHUNK_ROWS)


def holdout_rows(path: str | Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in loading.parquet_files(path))


def _positions(total: int, wanted: int, seed: int) -> np.ndarray:
    """`wanted` of `total` row positions drawn uniformly (seeded), in order; every position when there are fewer."""
    return np.sort(np.random.default_rng(seed).choice(total, size=min(total, wanted), replace=False))


def _rows_at(chunk: pd.DataFrame, positions: np.ndarray, start: int) -> pd.DataFrame:
    """The rows of `chunk`, the table's rows from `start` on, at the table's row `positions` (sorted)."""
    return chunk.iloc[positions[(positions >= start) & (positions < start + len(chunk))] - start]


def scored_holdout(predictor, path: str, target: str, seed: int,
                   keep_rows: int = IMPORTANCE_ROWS) -> tuple[pd.Series, pd.Series, pd.DataFrame, pd.DataFrame]:
    """The holdout's labels, and the predictor's labels and probabilities for every row, scored `HOLDOUT_CHUNK_ROWS`
    rows at a time (a sampled big table's holdout holds a share of every row: millions); and `keep_rows` of its rows
    drawn at random (seeded) for the permutation importance."""
    kept = _positions(holdout_rows(path), keep_rows, seed)
    labels, predicted, probas, picked, start = [], [], [], [], 0
    for chunk in holdout_chunks(path):
        chunk_predicted, chunk_proba = labels_and_proba(predictor, chunk.drop(columns=[target]))
        labels.append(chunk[target])
        predicted.append(chunk_predicted)
        probas.append(chunk_proba)
        picked.append(_rows_at(chunk, kept, start))
        start += len(chunk)
    return (pd.concat(labels, ignore_index=True), pd.concat(predicted, ignore_index=True),
            pd.concat(probas, ignore_index=True), pd.concat(picked, ignore_index=True))


def evaluate(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    ctx, spec, policy = runtime.context, _spec(state), state["policy"]
    predictor = ctx.predictor(state["fit"]["predictor_dir"])
    labels, predicted, proba, rows = scored_holdout(predictor, state["split"]["holdout_path"], spec.target,
                                                    ctx.settings.seed)
    metrics = evaluation.classification_metrics(labels, predicted, proba, policy)
    write_parquet(prediction_columns(predicted, proba), ctx.work_dir / "holdout_predictions.parquet")
    metrics["decision_threshold"] = state["fit"]["threshold"]
    train_labels = pd.read_parquet(state["split"]["train_path"], columns=[spec.target])[spec.target]
    baselines = evaluation.baseline_metrics(train_labels, labels, policy, seed=ctx.settings.seed)

    importance = predictor.feature_importance(rows, subsample_size=IMPORTANCE_ROWS, num_shuffle_sets=2, time_limit=15,
                                              silent=True)
    plots = evaluation.plot_all(labels, proba, metrics, importance["importance"], ctx.work_dir / "plots")

    client, run_id = ctx.mlflow, state["mlflow_run_id"]
    tracking.log_metrics(client, run_id, evaluation.flat_metrics(metrics))
    for name, values in baselines.items():
        tracking.log_metrics(client, run_id, evaluation.flat_metrics(
            {k: v for k, v in values.items() if k != "per_class"}, prefix=f"baseline_{name}_"))
    for plot in plots:
        client.log_artifact(run_id, str(plot), "plots")
    client.log_dict(run_id, metrics, "metrics/holdout.json")
    client.log_dict(run_id, baselines, "metrics/baselines.json")
    client.log_dict(run_id, json.loads(importance.reset_index().to_json(orient="records")), "metrics/feature_importance.json")
    (ctx.work_dir / "feature_importance.json").write_text(importance["importance"].to_json(), encoding="utf-8")
    return {"metrics": metrics, "baselines": baselines}


def gate(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    ctx, spec = runtime.context, _spec(state)
    client = ctx.mlflow
    champion = tracking.champion_version(client, spec.name)
    if champion is not None and champion == tracking.find_version(client, spec.name, ctx.job_id):
        champion = None  # this job already became champion before an interruption: judge it afresh
    evidence = None if champion is None else champion_evidence(state, ctx, spec, champion)
    verdict = quality_gate(state["metrics"], state["baselines"], state["policy"],
                           f"holdout of job {ctx.job_id[:12]}", evidence)
    client.log_dict(state["mlflow_run_id"], verdict, "gate.json")
    client.set_tag(state["mlflow_run_id"], "poise.gate", "passed" if verdict["passed"] else "failed")
    return {"gate": verdict}


def champion_evidence(state: TrainingState, ctx: TrainingContext, spec: JobSpec,
                      champion: str) -> ChampionEvidence:
    """The champion against this job's model: what changed in the data's schema or label set, and both scored on
    this job's holdout and on the champion's reference holdout (stored with it at registration). This job's model
    is its first fit, the one the holdout scored: the refit comes after the gate."""
    evidence = ChampionEvidence(spec.name, champion)
    try:
        _, frames, meta = tracking.load_reference(ctx.mlflow, spec.name, champion)
    except (MlflowException, OSError):
        evidence.reference = {"error": f"champion v{champion} has no reference holdout to judge a challenger on "
                                       "(it was registered before Poise stored one); an admin can promote this "
                                       f"version explicitly with `poise promote {spec.name} VERSION --reason ...`"}
        return evidence
    types = profiling.feature_types(state["profile"])
    evidence.changes = schema_changes(meta, spec.target, types, list(state["profile"]["target"]["class_counts"]))
    if evidence.changes:
        return evidence
    holdout = holdout_chunks(state["split"]["holdout_path"])
    evidence.on_holdout = score_champion(spec.name, champion, holdout, spec.target, state["policy"])
    reference = Reference(**frames, meta=meta)
    labels, _ = labels_and_proba(ctx.predictor(state["fit"]["predictor_dir"]),
                                 column_types.cast_columns(reference.holdout, types))
    evidence.reference = reference_scores(f"reference holdout of champion v{champion}", reference, labels,
                                          ctx.settings.seed)
    return evidence


def _reference_holdout(path: str, work_dir: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """At most `REFERENCE_HOLDOUT_ROWS` rows of the holdout, drawn uniformly (its class prior kept), read part by part,
    with the first fit's predictions of the same rows."""
    import pyarrow.parquet as pq

    kept, picked, start = _positions(holdout_rows(path), REFERENCE_HOLDOUT_ROWS, seed), [], 0
    for chunk in holdout_chunks(path):
        picked.append(_rows_at(chunk, kept, start))
        start += len(chunk)
    holdout = pd.concat(picked, ignore_index=True)
    for column, dtype in picked[0].dtypes.items():  # parts with different categories concatenate as text
        if isinstance(dtype, pd.CategoricalDtype) and not isinstance(holdout[column].dtype, pd.CategoricalDtype):
            holdout[column] = holdout[column].astype("category")
    predictions = pq.read_table(work_dir / "holdout_predictions.parquet").take(kept).to_pandas()
    return holdout, predictions


def register(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    """Register the served fit; store the version's reference (a training sample, the holdout — a uniform sample of
    `REFERENCE_HOLDOUT_ROWS` when bigger — with the first fit's predictions of it, the meta), which is the drift
    baseline and the reference holdout later challengers meet."""
    ctx, spec = runtime.context, _spec(state)
    client, fit, policy = ctx.mlflow, served_fit(state), state["policy"]
    holdout, predictions = _reference_holdout(state["split"]["holdout_path"], ctx.work_dir, ctx.settings.seed)
    example = example_rows(holdout.drop(columns=[spec.target]))
    version = tracking.log_and_register_model(
        client, state["mlflow_run_id"], spec.name, ctx.job_id, Path(fit["deploy_dir"]),
        model_config={
            "decision_threshold": fit["threshold"], "positive_class": policy["positive_class"],
            "target": spec.target, "classes": sorted(state["profile"]["target"]["class_counts"]),
            "boolean_columns": profiling.features_of_type(state["profile"], "boolean"),
            "boolean_tokens": column_types.boolean_tokens(),
            "na_values": spec.na_values,
        },
        input_example=serving_frame(example), output_example=predictions.loc[example.index],
        tags={
            "poise.data_hash": state["load_info"]["content_hash"],
            "poise.imbalance_ratio": f"{state['profile']['target']['imbalance_ratio']:.3f}",
            "poise.objective": spec.objective,
            "poise.primary_metric": state["gate"]["metric"],
            "poise.primary_value": f"{state['gate']['value']:.6f}",
            "poise.gate": state["gate"]["reason"],
        },
    )
    train = pd.read_parquet(state["split"]["train_path"])
    weights = train.pop(spec.weight_column) if spec.weight_column else None
    if state["load_info"].get("sample"):  # a sample of a bigger table: drawn back to the table's class prior
        train = reweighted_sample(train, weights, REFERENCE_ROWS, ctx.settings.seed)
    importance = json.loads((ctx.work_dir / "feature_importance.json").read_text(encoding="utf-8"))
    tracking.log_reference(client, state["mlflow_run_id"], Reference(
        train=sample(train, REFERENCE_ROWS, ctx.settings.seed), holdout=holdout, predictions=predictions,
        meta=reference_meta(policy, spec.target, profiling.feature_types(state["profile"]),
                            fit["threshold"], train[spec.target], state["gate"], importance),
    ))
    promoted = bool(state["gate"]["passed"]) and spec.promote
    if promoted:
        tracking.promote(client, spec.name, version)
    return {"model_version": version, "is_champion": promoted}


def explain(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    """A plain-words summary: the LLM's when configured and every number checks out, else the built-in one."""
    record = summary.facts(state)
    result = {"text": summary.deterministic_summary(record), "by": "deterministic", "fallback": None}
    llm = runtime.context.llm
    if llm is not None:
        from poise.agents.llm_planner import PlannerFailed, summarize

        try:
            result.update(text=summarize(llm, record), by="llm")
        except PlannerFailed as failure:
            result["fallback"] = str(failure)
    runtime.context.mlflow.log_text(state["mlflow_run_id"], result["text"] + "\n", "summary.md")
    return {"summary": result}


def report(state: TrainingState, runtime: Runtime[TrainingContext]) -> dict[str, Any]:
    ctx = runtime.context
    path = write_report(state, ctx.work_dir / "report.md")
    ctx.mlflow.log_artifact(state["mlflow_run_id"], str(path))
    trace = llm_trace(ctx, state["spec"].get("session_id"))
    if trace:
        ctx.mlflow.log_text(state["mlflow_run_id"], trace, "llm_trace.jsonl")
    tracking.finish_run(ctx.mlflow, state["mlflow_run_id"], "FINISHED")
    return {"report_path": str(path)}


def llm_trace(ctx: TrainingContext, session_id: str | None) -> str:
    """Every LLM call made for this job (planning in its chat session included), as JSON lines."""
    with ctx.session() as session:
        return "".join(json.dumps({
            "id": c.id, "session_id": c.session_id, "job_id": c.job_id, "purpose": c.purpose, "model": c.model,
            "request": c.request, "response": c.response, "tool_calls": c.tool_calls,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "latency_ms": c.latency_ms, "outcome": c.outcome, "error": c.error,
            "created_at": c.created_at.isoformat()}, default=str) + "\n"
            for c in queries.llm_calls(session, ctx.job_id, session_id))
