"""The Poise web UI: chat to plan a job, approve the plan, watch it run, read the results; see models,
their drift checks, and approve a check's promotion.

Why a page at all: the CLI and the REST API serve people who script; this page serves the
people who would rather upload a table and talk. It adds no logic of its own: the chat is
the same `ChatSession` the CLI and the API use, with `QueuedJobs`, so jobs run in the worker
(`poise worker`), never in the web process; a timer reads the job's row every 2 s.

Security: the page is signed in to with an API key (`ui/signin.py`), and every event checks the
key's scope as the API does: `read` to watch jobs and models, `submit` to chat and upload, `admin`
to decide a drift check. Chat through the page reads tables only from the data folder and the
page's uploads (`pipelines.access.DataAccess`). Text from users or their data is never rendered as
HTML: chat messages, plan lines and step messages go through `views.plain()` or into components that
show text as is.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path

import gradio as gr
from fastapi import FastAPI

from poise.agents.errors import PoiseError
from poise.pipelines import runner
from poise.pipelines.access import shown_path
from poise.pipelines.chat import ChatSession, QueuedJobs
from poise.pipelines.settings import Settings
from poise.ui import views
from poise.ui.signin import UiSessions, add_signin_routes

POLL_SECONDS = 2.0
CSS = """
#results-images img { object-fit: contain; }
footer { display: none !important; }
"""


def mount_ui(app: FastAPI, settings: Settings) -> FastAPI:
    """Serve the UI at `/ui` of the API app, signed in to with an API key (see the module docstring)."""
    sessions = UiSessions(settings)
    add_signin_routes(app, sessions)
    blocks = build_ui(settings, sessions)
    gr.mount_gradio_app(app, blocks, path="/ui", max_file_size=settings.upload_max_bytes,
                        auth_dependency=sessions.user, theme=gr.themes.Soft(), css=CSS, ssr_mode=False,
                        mcp_server=False)
    # Gradio checks that a file an event receives was uploaded through the page (not any server path a caller
    # names) only once its Blocks "has launched", which `launch()` sets and mounting does not (gradio 6.31):
    # without this, a caller could have the upload handler copy any readable server file (tests/pipelines/
    # test_security.py replays that probe).
    blocks.has_launched = True
    return app


def build_ui(settings: Settings, sessions: UiSessions) -> gr.Blocks:
    with gr.Blocks(title="Poise") as ui:
        session_id, job_id, shown = gr.State(None), gr.State(None), gr.State(None)
        gr.Markdown("## Poise · imbalance-aware AutoML")
        with gr.Tab("Train"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    chat = gr.Chatbot(elem_id="chat", height=460, show_label=False, allow_tags=False,
                                      feedback_options=None, placeholder="Upload a table, then say what to predict, "
                                      "e.g. *predict churned in 60 seconds*.")
                    with gr.Row():
                        message = gr.Textbox(elem_id="message", show_label=False, scale=5, max_length=4000,
                                             placeholder="e.g. predict churned, recall matters most")
                        send = gr.Button("Send", elem_id="send", variant="primary", scale=1, min_width=80)
                    with gr.Row():
                        upload = gr.File(elem_id="upload", label="Data (CSV, TSV or Parquet)", height=110,
                                         file_types=list(views.UPLOAD_SUFFIXES), scale=3)
                        approve = gr.Button("Approve plan", elem_id="approve", variant="primary", scale=1,
                                            interactive=False)
                with gr.Column(scale=4):
                    headline = gr.Markdown("No job yet.", elem_id="job-status")
                    plan = gr.Markdown(elem_id="plan", line_breaks=True)
                    steps = gr.Dataframe(headers=views.STEP_COLUMNS, elem_id="steps", label="Steps", interactive=False,
                                         wrap=True, max_height=420, column_widths=["18%", "20%", "10%", "52%"])
            with gr.Column(visible=False, elem_id="results") as results:
                gr.Markdown("### Results on the holdout")
                with gr.Row():
                    metrics = gr.Dataframe(elem_id="metrics", label="Holdout metrics", interactive=False, scale=2)
                    with gr.Column(scale=3):
                        details = gr.Markdown(elem_id="details")
                        summary = gr.Textbox(elem_id="summary", label="Summary", lines=5, interactive=False)
                with gr.Row(elem_id="results-images"):
                    confusion = gr.Image(elem_id="confusion-matrix", label="Confusion matrix", type="pil",
                                         format="png", interactive=False, height=360)
                    pr_curve = gr.Image(elem_id="pr-curve", label="Precision-recall curve", type="pil",
                                        format="png", interactive=False, height=360)
        with gr.Tab("Models") as models_tab:
            models = gr.Dataframe(elem_id="models", label="Registered models", interactive=False)
            checks = gr.Dataframe(elem_id="checks", label="Drift checks", interactive=False, wrap=True)
            with gr.Row():
                check_id = gr.Textbox(elem_id="check-id", show_label=False, scale=3, max_length=32,
                                      placeholder="check id of a check awaiting approval")
                approve_check = gr.Button("Approve promotion", elem_id="approve-check", scale=1)
                reject_check = gr.Button("Reject", elem_id="reject-check", scale=1)
            check_answer = gr.Markdown(elem_id="check-answer")
            refresh = gr.Button("Refresh", size="sm")

        chat_outputs = [message, chat, session_id, job_id]

        def talk(text: str, history: list, session: str | None, job: str | None, request: gr.Request):
            return _talk(settings, sessions, request, text, history, session, job)

        def approve_plan(history: list, session: str | None, job: str | None, request: gr.Request):
            return _talk(settings, sessions, request, "", history, session, job, approve=True)

        def uploaded(path: str | None, history: list, session: str | None, job: str | None, request: gr.Request):
            if not path:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            try:
                sessions.caller(request.username, "submit")
                saved = views.save_upload(settings, Path(path))
            except PoiseError as problem:
                return "", [*history, _said("assistant", str(problem))], session, job
            return _talk(settings, sessions, request, f"The data is in {shown_path(saved, settings)}", history, session,
                         job)

        def tick(job: str | None, on_screen: tuple | None, history: list, request: gr.Request):
            if job is None:
                return {shown: on_screen}  # nothing changes (an empty dict would be read as one value)
            try:
                sessions.caller(request.username, "read", "submit")  # a submitter watches the job it started
            except PoiseError:
                return {shown: on_screen}
            found = runner.find_job(settings, job)
            signature = views.job_signature(found)
            if signature == on_screen:
                return {shown: on_screen}
            view = views.job_view(settings, found)
            news = _news(view, on_screen)
            done = view.metrics is not None
            update = {
                shown: signature, headline: view.headline, steps: view.steps, plan: _plan_markdown(view),
                approve: gr.Button(interactive=view.status == runner.AWAITING_APPROVAL),
                results: gr.Column(visible=done), metrics: view.metrics, details: view.details,
                summary: view.summary or "", confusion: view.confusion_matrix, pr_curve: view.pr_curve,
            }
            if news:
                update[chat] = [*history, _said("assistant", news)]
            return update

        message.submit(talk, [message, chat, session_id, job_id], chat_outputs)
        send.click(talk, [message, chat, session_id, job_id], chat_outputs)
        approve.click(approve_plan, [chat, session_id, job_id], chat_outputs)
        upload.upload(uploaded, [upload, chat, session_id, job_id], chat_outputs)
        gr.Timer(POLL_SECONDS).tick(
            tick, [job_id, shown, chat],
            [shown, headline, steps, plan, approve, chat, results, metrics, details, summary, confusion, pr_curve],
            show_progress="hidden")
        def registry_tables(request: gr.Request):
            try:
                sessions.caller(request.username, "read")
            except PoiseError:
                return None, None
            return views.models_table(settings), views.checks_table(settings)

        def decide_check(text: str, approved: bool, request: gr.Request):
            try:
                sessions.caller(request.username, "admin")
            except PoiseError as problem:
                return views.plain(str(problem)), gr.skip()
            return views.plain(views.answer_check(settings, text, approved)), views.checks_table(settings)

        def approve_drift_check(text: str, request: gr.Request):
            return decide_check(text, True, request)

        def reject_drift_check(text: str, request: gr.Request):
            return decide_check(text, False, request)

        for trigger in (models_tab.select, refresh.click, ui.load):
            trigger(registry_tables, None, [models, checks], show_progress="hidden")
        approve_check.click(approve_drift_check, check_id, [check_answer, checks])
        reject_check.click(reject_drift_check, check_id, [check_answer, checks])
    return ui


def _talk(settings: Settings, sessions: UiSessions, request: gr.Request, text: str, history: list,
          session_id: str | None, job_id: str | None, approve: bool = False) -> tuple[str, list, str | None, str | None]:
    """Send one message (or the approval) to the signed-in key's chat session; returns the new chat state."""
    history = [*history, _said("user", text or "Approve plan")]
    try:
        caller = sessions.caller(request.username, "submit")
        session = ChatSession.open(settings, session_id, jobs=QueuedJobs(), caller=caller)
        reply = session.send(text, approve=approve)
    except PoiseError as problem:
        return "", [*history, _said("assistant", str(problem))], session_id, job_id
    return "", [*history, _said("assistant", reply.text)], session.id, reply.job_id or job_id


def _said(role: str, text: str) -> dict[str, str]:
    return {"role": role, "content": views.plain(text)}


def _news(view: views.JobView, on_screen: tuple | None) -> str | None:
    """What the chat should say when the job reaches a state the user must act on or know about."""
    before = on_screen[1] if on_screen and on_screen[0] == view.job_id else None
    if view.status == before:
        return None
    if view.status == runner.AWAITING_APPROVAL:
        lines = "\n".join(f"- {line}" for line in view.plan)
        return (f"The plan for job {view.job_id[:12]} is ready:\n{lines}\n"
                "Press 'Approve plan', or tell me what to change.")
    if view.status == "succeeded":
        return view.summary or f"Job {view.job_id[:12]} succeeded."
    if view.status in ("failed", "rejected", "cancelled"):
        return f"Job {view.job_id[:12]} {view.status}: {view.error or 'no details'}"
    return None


def _plan_markdown(view: views.JobView) -> str:
    if not view.plan:
        return ""
    title = "**Plan, waiting for your approval**" if view.status == runner.AWAITING_APPROVAL else "**Plan**"
    return title + "\n" + "\n".join(f"• {views.plain(line)}" for line in view.plan)
