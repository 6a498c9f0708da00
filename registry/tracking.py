"""The MLflow layer: one experiment per model name, one run per job, aliases as gates.

Everything Poise logs goes through these functions so the conventions hold in one
place: experiments carry an explicit artifact location (else artifacts land in the
working directory), runs and model versions are found again by the `poise.job_id`
tag (so a resumed job never logs a second run or registers a second version), and
`champion` moves only when the caller passes the quality gate's verdict.
`mlflow.autolog` is never enabled: it breaks AutoGluon pickling.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from poise.agents.errors import Conflict, NotFound

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
JOB_TAG = "poise.job_id"
PYFUNC_SOURCE = Path(__file__).with_name("pyfunc_model.py")


def configure(tracking_uri: str, registry_uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=f"{artifact_root.rstrip('/')}/{name}")
    except MlflowException:  # created meanwhile by another process
        return client.get_experiment_by_name(name).experiment_id


def get_or_create_run(client: MlflowClient, experiment_id: str, job_id: str, run_name: str) -> str:
    found = client.search_runs([experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'", max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, run_name=run_name, tags={JOB_TAG: job_id}).info.run_id


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Log params, skipping those already on the run (params are immutable in MLflow)."""
    existing = client.get_run(run_id).data.params
    for key, value in params.items():
        text = str(value)[:6000]
        if key not in existing:
            client.log_param(run_id, key, text)


MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one `log_batch`


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    """Log the metrics that have a value, in batches (one store write instead of one per metric)."""
    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, 0) for key, value in metrics.items() if value is not None]
    for start in range(0, len(batch), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch[start:start + MAX_METRICS_PER_BATCH])


def find_version(client: MlflowClient, name: str, job_id: str) -> str | None:
    """The registered version a job already created, if any (makes registration idempotent)."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for mv in versions:
        if mv.tags.get(JOB_TAG) == job_id:
            return str(mv.version)
    return None


def log_and_register_model(
    client: MlflowClient,
    run_id: str,
    name: str,
    job_id: str,
    predictor_dir: Path,
    model_config: dict[str, Any],
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    tags: dict[str, str],
) -> str:
    """Log the predictor as a pyfunc on the job's run and register it; returns the version.

    The signature comes from the examples given (the model's own predictions of them), so MLflow
    does not load the predictor a second time to infer it; it still loads it once to check that
    the input example serves. The version is created with its tags, the job's id among them, in one
    request: a worker that dies after it leaves a version `find_version` finds, never an untagged one
    that a resumed job would register a second time."""
    existing = find_version(client, name, job_id)
    if existing is not None:
        return existing
    requirements = [
        f"autogluon.tabular[lightgbm,catboost,xgboost]=={package_version('autogluon.tabular')}",
        f"mlflow=={mlflow.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={package_version('numpy')}",
        f"scikit-learn=={package_version('scikit-learn')}",
    ]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_SOURCE),
            artifacts={"predictor_dir": str(predictor_dir)},
            model_config=model_config,
            input_example=input_example,
            signature=infer_signature(input_example, output_example),
            pip_requirements=requirements,
        )
    registered = mlflow.register_model(info.model_uri, name,
                                       tags={key: str(value) for key, value in {**tags, JOB_TAG: job_id}.items()})
    return str(registered.version)


REFERENCE_RUN_TAG = "poise.reference_run"


def log_reference(client: MlflowClient, run_id: str, reference) -> None:
    """Store a drift reference (`agents.drift.reference.Reference`) as the run's `reference/` artifacts.

    Its holdout, with the version's predictions of it, is also the version's reference holdout: while the version
    is champion, the quality gate judges every challenger on it as well as on the challenger's own holdout."""
    with tempfile.TemporaryDirectory() as folder:
        for name, frame in reference.frames().items():
            frame.to_parquet(Path(folder) / f"{name}.parquet", index=False)
        (Path(folder) / "meta.json").write_text(json.dumps(reference.meta, indent=1), encoding="utf-8")
        client.log_artifacts(run_id, folder, "reference")


def load_reference(client: MlflowClient, name: str, version: str) -> tuple[str, dict[str, pd.DataFrame], dict]:
    """The drift reference of a registered version: (run holding it, frames by name, meta).

    A version's reference lives on its own run unless its `poise.reference_run` tag names another
    (a recalibrated or drift-retrained version is judged against the data it was adapted to)."""
    model_version = client.get_model_version(name, version)
    run_id = model_version.tags.get(REFERENCE_RUN_TAG) or model_version.run_id
    with tempfile.TemporaryDirectory() as destination:
        folder = Path(client.download_artifacts(run_id, "reference", destination))
        frames = {path.stem: pd.read_parquet(path) for path in folder.glob("*.parquet")}
        return run_id, frames, json.loads((folder / "meta.json").read_text(encoding="utf-8"))


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_version(client: MlflowClient, name: str) -> str | None:
    return alias_version(client, name, CHAMPION)


@dataclass
class RegisteredModelSummary:
    """A registered model with its versions (MLflow entities) and the versions its aliases point to."""

    name: str
    versions: list[ModelVersion]
    champion: str | None
    previous_champion: str | None


def registered_models(client: MlflowClient) -> list[RegisteredModelSummary]:
    """Every registered model, its versions in order, and where `champion` / `previous-champion` point.

    Aliases are looked up by name: `search_model_versions` does not fill `ModelVersion.aliases`."""
    return [RegisteredModelSummary(
        registered.name,
        sorted(client.search_model_versions(f"name = '{registered.name}'"), key=lambda v: int(v.version)),
        champion_version(client, registered.name),
        alias_version(client, registered.name, PREVIOUS_CHAMPION),
    ) for registered in client.search_registered_models(max_results=1000)]


PROMOTED_REASON_TAG = "poise.promoted_reason"
PROMOTED_BY_TAG = "poise.promoted_by"
PROMOTED_AT_TAG = "poise.promoted_at"


def promote(client: MlflowClient, name: str, version: str, *, reason: str | None = None,
            by: str | None = None) -> str | None:
    """Make `version` the champion; the one it replaces keeps `previous-champion`. Returns that one.

    A promotion by hand (`by` names who: `cli:<user>`, `api:<key name>`) is recorded on the version as tags:
    why (`poise.promoted_reason`, when given), who and when (UTC, ISO 8601). The gate's own promotions pass
    neither and leave no such tags: their reason is the version's `poise.gate` tag."""
    previous = champion_version(client, name)
    client.set_registered_model_alias(name, CHAMPION, version)
    if previous is not None and previous != version:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous)
    if by is not None or reason is not None:
        from datetime import UTC, datetime

        client.set_model_version_tag(name, version, PROMOTED_BY_TAG, by or "unknown")
        client.set_model_version_tag(name, version, PROMOTED_AT_TAG, datetime.now(UTC).isoformat(timespec="seconds"))
        if reason is not None:
            client.set_model_version_tag(name, version, PROMOTED_REASON_TAG, reason)
        elif PROMOTED_REASON_TAG in client.get_model_version(name, version).tags:  # an older reason is not this one
            client.delete_model_version_tag(name, version, PROMOTED_REASON_TAG)
    return previous


def promote_by_hand(client: MlflowClient, name: str, version: str, *, reason: str | None, by: str) -> str | None:
    """`promote` a version a person chose (`poise promote`, the API's promote), recording who and why; raises
    `NotFound` when the model has no such version. Returns the champion it replaced."""
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise NotFound(f"model '{name}' has no version {version}") from None
    return promote(client, name, version, reason=reason, by=by)


def promotion_record(tags: dict[str, str]) -> dict[str, str | None] | None:
    """Who promoted a version by hand, when and why, from its tags (`ModelVersion.tags`); None if nobody did."""
    if PROMOTED_BY_TAG not in tags:
        return None
    return {"by": tags[PROMOTED_BY_TAG], "at": tags.get(PROMOTED_AT_TAG), "reason": tags.get(PROMOTED_REASON_TAG)}


def rollback(client: MlflowClient, name: str) -> tuple[str, str | None]:
    """Swap `champion` and `previous-champion`; returns (new champion, the version it replaced). Raises `Conflict`
    when there is no previous champion (also for a model that does not exist)."""
    previous = alias_version(client, name, PREVIOUS_CHAMPION)
    if previous is None:
        raise Conflict(f"model '{name}' has no previous champion to roll back to")
    current = champion_version(client, name)
    client.set_registered_model_alias(name, CHAMPION, previous)
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
    return previous, current


def model_uri(name: str, version: str | None = None) -> str:
    return f"models:/{name}/{version}" if version else f"models:/{name}@{CHAMPION}"


_LOADED: OrderedDict[tuple[str, str], Any] = OrderedDict()
LOADED_MODELS_KEPT = 4


def load_model(name: str, version: str | None = None):
    """Load a registered version (default: the champion) as a pyfunc model.

    A numbered version's files never change, so the last few loaded stay in memory, keyed by where
    those files live (a deleted and re-created model reuses version numbers, not files): a long-running
    scheduler or worker then checks and scores a model without reloading it each time (1-2 s)."""
    if version is None:
        return mlflow.pyfunc.load_model(model_uri(name))
    key = (mlflow.get_registry_uri(), MlflowClient().get_model_version(name, version).source)
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    model = _LOADED[key] = mlflow.pyfunc.load_model(model_uri(name, version))
    while len(_LOADED) > LOADED_MODELS_KEPT:
        _LOADED.popitem(last=False)
    return model


def finish_run(client: MlflowClient, run_id: str, status: str) -> None:
    client.set_terminated(run_id, status=status)
