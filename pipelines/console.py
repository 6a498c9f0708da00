"""What the `poise` command prints: progress, job and check outcomes, tables, errors (Rich).

`pipelines.cli` parses a command's arguments and calls the function that does the work; this module turns what
comes back into text. Bad input ends with a one-line `error:` and exit code 2 (`fail`, `user_errors`); a failed
job or check exits 1 and says where to look.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from poise.agents.drift import estimation
from poise.agents.errors import PoiseError
from poise.pipelines.settings import Settings

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)

STATUS_STYLE = {"succeeded": "green", "running": "yellow", "failed": "red", "rejected": "red",
                "interrupted": "yellow", "queued": "blue", "awaiting_approval": "cyan", "cancelled": "dim"}
SUMMARY_METRICS = ("f1", "macro_f1", "balanced_accuracy", "pr_auc", "roc_auc", "minority_recall", "expected_cost")
SHOW_METRICS = ("f1", "macro_f1", "balanced_accuracy", "pr_auc", "minority_recall", "expected_cost")


def fail(message: str, code: int = 2) -> None:
    error_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """A `PoiseError` raised inside ends the command with its message and exit code 2, without a traceback."""
    try:
        yield
    except PoiseError as problem:
        fail(str(problem))


def styled(status: str, default: str = "") -> str:
    return f"[{STATUS_STYLE.get(status, default)}]{status}[/]"


def progress(event) -> None:
    if event.status == "running":
        console.print(f"  [dim]…[/] {event.node:<9} [dim]({event.agent})[/]")
        return
    mark = "[green]✓[/]" if event.status == "succeeded" else "[red]✗[/]"
    console.print(f"  {mark} {event.node:<9} {event.seconds:6.1f}s  {escape(event.message or '')}")


def _key_values(title: str, rows: Iterable[tuple[str, object]]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    console.print(table)


def print_summary(result) -> None:
    """A finished job's outcome: model, champion, gate, threshold, holdout metrics, run, report, time."""
    gate = result.gate.get("reason", "")
    if result.gate:
        gate = f"{'passed' if result.gate.get('passed') else 'refused'}: {gate}"
    rows = [("model", f"{result.name} v{result.model_version}"), ("champion", "yes" if result.is_champion else "no"),
            ("gate", gate), ("threshold", "—" if result.threshold is None else f"{result.threshold:.4f}")]
    rows += [(f"holdout {key}", f"{result.metrics[key]:.4f}") for key in SUMMARY_METRICS if key in result.metrics]
    rows += [("MLflow run", result.mlflow_run_id or ""), ("report", str(result.report_path or "")),
             ("wall time", f"{result.seconds:.1f}s")]
    _key_values(f"Job {result.job_id[:12]} — {result.status}", rows)


def finish(result, settings: Settings) -> None:
    """What a job run from the CLI ended with: its plan to approve, its summary, or why it stopped."""
    short = result.job_id[:12]
    if result.status == "awaiting_approval":
        console.print("Plan (waiting for approval):")
        for line in result.plan:
            console.print(f"  • {escape(line)}")
        console.print(f"Approve with [bold]poise approve {short}[/] (or reject with [bold]poise approve {short} "
                      "--reject[/])")
        return
    if result.status == "cancelled":
        console.print(f"Job {short} cancelled: the plan was not approved.")
        return
    if result.status == "rejected":
        fail(f"{result.error} (job {short})")
    if result.status == "failed":
        fail(f"job {short} failed: {result.error}; log: {settings.job_dir(result.job_id) / 'error.log'}; "
             f"continue with `poise resume {short}`", code=1)
    print_summary(result)
    if result.summary:  # not wrapped by Rich: the next steps' commands stay whole for copying
        console.print(escape(result.summary), soft_wrap=True)


def finish_check(result) -> None:
    """What a drift check run from the CLI ended with: the promotion to approve, its outcome, or its failure."""
    if result.status == "awaiting_approval":
        console.print("Promotion waiting for approval:")
        for line in result.plan:
            console.print(f"  • {escape(line)}")
        console.print(f"Approve with [bold]poise approve {result.check_id[:12]}[/] (or --reject)")
        return
    if result.status == "failed":
        fail(f"drift check {result.check_id[:12]} failed: {result.error}", code=1)
    rows = [("champion", f"v{result.champion_version}"), ("decision", result.decision), ("reason", result.reason),
            ("estimated quality", estimation.described(result.estimated_quality))]
    if result.challenger_version:
        rows.append(("challenger", f"v{result.challenger_version}"))
    if result.comparison:
        rows += [("comparison", result.comparison["reason"]), ("promoted", "yes" if result.promoted else "no")]
    rows += [("report", result.report_path or ""), ("wall time", f"{result.seconds:.1f}s")]
    _key_values(f"Drift check {result.check_id[:12]} of {result.model_name}", rows)


def print_reply(reply) -> None:
    if reply.fell_back:
        error_console.print(f"[yellow]LLM planner fell back:[/] {escape(reply.fell_back)}")
    console.print(f"[bold]poise>[/] {escape(reply.text)}", soft_wrap=True)
    if reply.result is not None and reply.result.status == "succeeded":
        print_summary(reply.result)


def chat_loop(settings: Settings, conversation) -> None:
    """`poise chat` without a message: talk until Ctrl-D; a problem with one message is said and the chat goes on."""
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
                print_reply(conversation.send(text, on_event=progress))
            except PoiseError as problem:
                error_console.print(f"[bold red]error:[/] {escape(str(problem))}")


def print_job(settings: Settings, job) -> None:
    """`poise show`: the job, its steps, each registered version with its metrics and the gate's verdict now."""
    from poise.agents.deployment.serving import describe_serving_path
    from poise.agents.summary import steps_text
    from poise.pipelines.job_view import job_report, shows_promotion, step_seconds

    console.print(f"[bold]Job {job.id}[/] — {escape(job.name)} — {styled(job.status)}")
    if job.error:
        console.print(f"error: {escape(job.error)}")
    steps = Table("step", "agent", "status", "seconds", "message")
    for step in job.steps:
        seconds = step_seconds(step)
        steps.add_row(step.node, step.agent, step.status, "" if seconds is None else f"{seconds:.1f}",
                      escape(step.message or ""))
    console.print(steps)
    for version, gate in job_report(settings, job).verdicts:  # champion: the registry's alias, the one truth
        role = "champion" if gate["is_champion"] else "not champion"
        console.print(f"model {escape(version.registered_name)} v{version.version} — {role}: "
                      f"{escape(version.gate_reason or '')}")
        console.print(escape(describe_serving_path(settings, version.registered_name, str(version.version))))
        for key in SHOW_METRICS:
            if key in version.metrics:
                console.print(f"  {key:<18} {version.metrics[key]:.4f}")
        verdict = "[green]passed[/]" if gate["passed"] else "[red]refused[/]"
        console.print(f"gate: {verdict} — {escape(gate['reason'] or '')}", soft_wrap=True)
        console.print(escape(gate["explanation"]), soft_wrap=True)
        if shows_promotion(gate):
            promotion = gate["promotion"]
            console.print(f"promoted by hand: {escape(promotion['by'])} at {escape(promotion['at'] or '?')}; "
                          f"reason: {escape(promotion['reason'] or '(none given)')}", soft_wrap=True)
        if gate["next_steps"]:
            console.print(escape(steps_text(gate["next_steps"])), soft_wrap=True)
    if job.mlflow_run_id:
        console.print(f"MLflow run: {job.mlflow_run_id}")


def print_jobs(jobs) -> None:
    table = Table("job", "name", "status", "created", "error")
    for job in jobs:
        table.add_row(job.id[:12], escape(job.name), styled(job.status), f"{job.created_at:%Y-%m-%d %H:%M:%S}",
                      escape((job.error or "")[:60]))
    console.print(table)


def print_checks(checks) -> None:
    table = Table("check", "model", "trigger", "status", "created", "rows", "decision", "est. macro-F1", "challenger",
                  "promoted")
    for c in checks:
        table.add_row(c.id[:12], escape(c.model_name), c.trigger, styled(c.status, "default"),
                      f"{c.created_at:%Y-%m-%d %H:%M}", "" if c.n_rows is None else f"{c.n_rows:,}", c.decision or "",
                      estimation.short(estimation.of_check(c.results)),
                      f"v{c.challenger_version}" if c.challenger_version else "", "yes" if c.promoted else "")
    console.print(table)


def print_schedules(plans) -> None:
    table = Table("model", "every", "cron", "next run (UTC)", "approval")
    for plan in plans:
        table.add_row(escape(plan.model_name), f"{plan.every_seconds} s" if plan.every_seconds else "",
                      escape(plan.cron or ""), f"{plan.next_run:%Y-%m-%d %H:%M:%S}" if plan.next_run else "",
                      "yes" if plan.options.get("require_approval") else "")
    console.print(table)


def print_keys(infos) -> None:
    table = Table("id", "name", "prefix", "scopes", "created", "last used", "revoked")
    for info in infos:
        table.add_row(str(info.id), escape(info.name), info.prefix, ", ".join(info.scopes),
                      f"{info.created_at:%Y-%m-%d %H:%M}",
                      f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "—", "yes" if info.revoked else "")
    console.print(table)
