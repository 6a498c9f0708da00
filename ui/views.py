"""What the web UI shows, as plain values: a job's panel, the registered models, saved uploads.

Kept apart from the Gradio wiring in `ui.app` so each piece is a small function of the
database and the MLflow registry. Any text that comes from users or their data (messages,
column names, file names, step messages) goes through `plain()` before it reaches a
component that renders Markdown, so it can never become HTML or a link.
"""

from __future__ import annotations

import html
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
from mlflow import MlflowClient
from PIL import Image
from poise.agents.drift import estimation
from poise.agents.errors import PoiseError, SpecError
from poise.pipelines import runner
from poise.pipelines.access import hide_paths
from poise.pipelines.job_view import job_report, shows_promotion, step_seconds
from poise.pipelines.settings import Settings
from poise.registry import tracking
from poise.registry import queries
from poise.registry.db import session_scope
from poise.registry.models import Job

UPLOAD_SUFFIXES = (".csv", ".tsv", ".parquet")
HEADLINE_METRICS = ("macro_f1", "balanced_accuracy", "pr_auc", "roc_auc", "minority_recall", "minority_precision")
STEP_COLUMNS = ["step", "status", "sec", "message"]
MODEL_COLUMNS = ["model", "versions", "champion", "previous champion", "champion score", "champion note", "drift"]
CHECK_COLUMNS = ["check", "model", "status", "created (UTC)", "rows", "decision", "estimated macro-F1", "challenger",
                 "promoted", "reason"]
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~])")


def plain(text: object) -> str:
    """`text` for a Markdown component, shown literally: HTML escaped, Markdown syntax backslashed."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def save_upload(settings: Settings, source: Path) -> Path:
    """Copy an uploaded table to `home/uploads/<uuid>/`, under a name the chat's path parser reads."""
    if source.suffix.lower() not in UPLOAD_SUFFIXES:
        raise SpecError(f"unsupported file type '{source.suffix}'; upload a CSV, TSV or Parquet file")
    if source.stat().st_size > settings.upload_max_bytes:
        raise SpecError(f"the file is larger than {settings.upload_max_bytes:,} bytes")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.stem).strip("._-") or "data"
    folder = settings.uploads_folder / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return Path(shutil.copyfile(source, folder / f"{stem[:80]}{source.suffix.lower()}"))


def job_signature(job: Job) -> tuple:
    """Changes whenever the job panel would change; the UI redraws only then."""
    return job.id, job.status, tuple((step.id, step.status) for step in job.steps)


@dataclass
class JobView:
    job_id: str
    status: str
    headline: str  # Markdown, escaped
    steps: pd.DataFrame
    plan: list[str]
    error: str | None = None
    metrics: pd.DataFrame | None = None
    details: str = ""  # Markdown, escaped: version, threshold, gate, MLflow run
    summary: str | None = None
    confusion_matrix: Image.Image | None = None
    pr_curve: Image.Image | None = None


def job_view(settings: Settings, job: Job) -> JobView:
    """The job as the page shows it; files are named as the signed-in user names them (`hide_paths`)."""
    steps = steps_table(job)
    steps["message"] = hide_paths(list(steps["message"]), settings)
    view = JobView(job.id, job.status, _headline(job), steps, plan=[], error=hide_paths(job.error, settings))
    report = job_report(settings, job)
    view.plan, view.summary = hide_paths(report.plan, settings), hide_paths(report.summary, settings)
    if job.status == "succeeded" and report.version is not None:
        version = report.version
        view.metrics = metrics_table(version.metrics)
        view.details = _details(settings, version, report.gate)
        plots = settings.job_dir(job.id) / "plots"
        view.confusion_matrix = _image(settings, plots / "confusion_matrix.png")
        view.pr_curve = _image(settings, plots / "pr_curve.png")
    return view


def _headline(job: Job) -> str:
    target = (job.spec or {}).get("target", "?")
    return f"**Job {plain(job.id[:12])}** · {plain(job.name)} · target {plain(target)} · status **{plain(job.status)}**"


def steps_table(job: Job) -> pd.DataFrame:
    rows = [[step.node, step.status, _seconds(step), step.message or ""] for step in job.steps]
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


def _seconds(step) -> str:
    seconds = step_seconds(step)
    return "" if seconds is None else f"{seconds:.1f}"


def metrics_table(metrics: dict) -> pd.DataFrame:
    """Holdout metrics, headline ones first; numbers rounded, per-class details left out."""
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    order = [k for k in HEADLINE_METRICS if k in scalars] + sorted(k for k in scalars if k not in HEADLINE_METRICS)
    return pd.DataFrame([[k, _number(scalars[k])] for k in order], columns=["metric", "value"])


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _details(settings: Settings, version, gate: dict) -> str:
    """The version, its threshold, the gate's verdict as things stand now (with the next steps when it was
    refused: see `agents.summary.gate_outcome`) and the MLflow run; every piece of text escaped."""
    threshold = "default" if version.threshold is None else f"{version.threshold:.3f}"
    role = "champion" if gate["is_champion"] else "not champion"
    verdict = "passed" if gate["passed"] else "refused"
    lines = [
        f"**Model** {plain(version.registered_name)} version {plain(version.version)} ({role})",
        f"**Decision threshold** {threshold}",
        f"**Quality gate** {verdict}: {plain(gate['reason'] or version.gate_reason or '')}",
        plain(gate["explanation"]),
    ]
    if shows_promotion(gate):
        promotion = gate["promotion"]
        lines.append(f"**Promoted by hand** by {plain(promotion['by'])} at {plain(promotion['at'] or '?')}: "
                     f"{plain(promotion['reason'] or '(no reason given)')}")
    if gate["next_steps"]:
        steps = [f"{number}\\. {plain(step['text'])}:  \n{plain(step['command'])}"
                 for number, step in enumerate(gate["next_steps"], 1)]
        lines.append("**Next steps**\n\n" + "\n\n".join(steps))
    lines.append(run_link(settings, version.mlflow_run_id))
    return "\n\n".join(lines)


def run_link(settings: Settings, run_id: str) -> str:
    """A link into the MLflow UI when tracking goes to an MLflow server, else the run id."""
    parts = urlsplit(settings.tracking_uri)
    if parts.scheme not in ("http", "https"):
        return f"**MLflow run** {plain(run_id)}"
    base = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path.rstrip("/"),
                       "", ""))  # no credentials on the page
    return f"**MLflow run** [{plain(run_id)}]({base}/#/runs/{run_id})"


def _image(settings: Settings, path: Path) -> Image.Image | None:
    if not settings.file_store.fetch(path):  # the worker that ran the job may be on another machine
        return None
    with Image.open(path) as image:
        return image.copy()


def models_table(settings: Settings) -> pd.DataFrame:
    """Registered models with their champion, previous champion and drift status."""
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    status = drift_status(settings)
    rows = [[model.name, len(model.versions), model.champion or "", model.previous_champion or "",
             _score(model.versions, model.champion), _champion_note(model), status.get(model.name, "not checked yet")]
            for model in tracking.registered_models(client)]
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def _champion_note(model) -> str:
    """Who promoted the champion by hand and why; for a model without champion, how to get one."""
    if model.champion is None:
        latest = str(model.versions[-1].version) if model.versions else "N"
        return (f"no champion (the gate refused every version): predict with --version {latest}, or "
                f"poise promote {model.name} {latest} --reason ...")
    tags = next((v.tags for v in model.versions if str(v.version) == model.champion), {})
    promotion = tracking.promotion_record(tags)
    if promotion is None:
        return "promoted by the quality gate"
    return f"promoted by hand by {promotion['by']}: {promotion['reason'] or '(no reason given)'}"


def drift_status(settings: Settings) -> dict[str, str]:
    """Each checked model's latest drift check in a few words: decision, what it did, when."""
    status = {}
    with session_scope(settings.db_url) as session:
        for check in queries.latest_checks(session):
            words = (check.decision or check.status).replace("_", " ")
            if check.status == runner.AWAITING_APPROVAL:
                words += f", v{check.challenger_version} awaits approval"
            elif check.challenger_version:
                words += f", v{check.challenger_version} {'promoted' if check.promoted else 'kept out'}"
            status[check.model_name] = f"{words} ({check.created_at:%Y-%m-%d %H:%M} UTC)"
    return status


def checks_table(settings: Settings, limit: int = 30) -> pd.DataFrame:
    """Recent drift checks, newest first (ids shortened to 12 characters, enough to answer one)."""
    with session_scope(settings.db_url) as session:
        rows = [[c.id[:12], c.model_name, c.status, f"{c.created_at:%Y-%m-%d %H:%M}",
                 "" if c.n_rows is None else c.n_rows, c.decision or "",
                 estimation.short(estimation.of_check(c.results)),
                 f"v{c.challenger_version}" if c.challenger_version else "", "yes" if c.promoted else "",
                 c.reason or c.error or ""]
                for c in queries.list_checks(session, limit)]
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def answer_check(settings: Settings, check_id: str, approved: bool) -> str:
    """Approve or reject the promotion a drift check waits for; a worker finishes the check."""
    from poise.pipelines.monitoring.runner import find_check, queue_check_decision

    try:
        check = find_check(settings, check_id.strip())
        queue_check_decision(check.id, approved, settings, by="ui")
    except PoiseError as problem:
        return str(problem)
    verb = "approved" if approved else "rejected"
    return f"Promotion of v{check.challenger_version} {verb}; a worker finishes check {check.id[:12]}."


def _score(versions, champion: str | None) -> str:
    tags = next((v.tags for v in versions if str(v.version) == champion), {})
    if "poise.primary_value" not in tags:
        return ""
    return f"{tags.get('poise.primary_metric', 'score')} {float(tags['poise.primary_value']):.4f}"
