"""Tests of the LLM call log and chat tables (migration 0002) on SQLite and PostgreSQL.

PostgreSQL runs against a throwaway database on the local server (see `postgres_url`
in tests/conftest.py) and is skipped, with the reason, only when it is unreachable.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import delete, func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from poise.registry.db import alembic_config, get_engine, session_scope
from poise.registry.models import ChatMessage, ChatSession, LLMCall

NEW_TABLES = {"llm_calls", "chat_sessions", "chat_messages"}
HOSTILE = "'; DROP TABLE llm_calls;-- <script>alert(\"x\")</script> \\ \"quoted\" 日本語 ünïcödé 🚀 עברית\n\ttab\u2028"


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def _run_alembic(db_url: str, action, revision: str) -> None:
    engine = get_engine(db_url)
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        action(config, revision)
        connection.commit()


def test_migration_0002_creates_tables_and_downgrades_cleanly(db_url: str) -> None:
    engine = get_engine(db_url)
    assert NEW_TABLES <= set(inspect(engine).get_table_names())
    indexes = {ix["name"] for table in NEW_TABLES for ix in inspect(engine).get_indexes(table)}
    assert {"ix_llm_calls_session_id", "ix_llm_calls_job_id", "ix_chat_messages_session_id"} <= indexes

    _run_alembic(db_url, command.downgrade, "0001")
    tables = set(inspect(engine).get_table_names())
    assert not NEW_TABLES & tables and {"jobs", "job_steps"} <= tables
    _run_alembic(db_url, command.upgrade, "head")
    assert NEW_TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]


def test_llm_call_round_trip_with_hostile_json(db_url: str) -> None:
    request = {
        "messages": [
            {"role": "system", "content": HOSTILE},
            {"role": "user", "content": "plan it", "name": "<script>"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "function": {"arguments": '{"\'": 1}'}}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {HOSTILE: [1, 2.5, None, True]}}}],
    }
    tool_calls = [{"id": "c1", "type": "function", "function": {"name": "x", "arguments": '{"broken": '}}]
    session_id, job_id = uuid.uuid4().hex, uuid.uuid4().hex
    with session_scope(db_url) as session:
        session.add(
            LLMCall(
                session_id=session_id, job_id=job_id, purpose="plan", model="m/<script>", request=request,
                response={"content": HOSTILE, "tool_calls": tool_calls}, tool_calls=tool_calls,
                prompt_tokens=120, completion_tokens=7, latency_ms=12.5, outcome="ok",
            )
        )
        # A failed call before any job exists: no FK on job_id, NULL reply fields.
        session.add(
            LLMCall(
                purpose="review", model="m", request={"messages": [], "tools": None}, latency_ms=500.0,
                outcome="timeout", error=HOSTILE, job_id="0" * 32,
            )
        )

    with session_scope(db_url) as session:
        ok, failed = session.scalars(select(LLMCall).order_by(LLMCall.id)).all()
        assert (ok.session_id, ok.job_id, ok.purpose, ok.model) == (session_id, job_id, "plan", "m/<script>")
        assert ok.request == request
        assert ok.response == {"content": HOSTILE, "tool_calls": tool_calls}
        assert ok.tool_calls == tool_calls
        assert (ok.prompt_tokens, ok.completion_tokens, ok.outcome, ok.error) == (120, 7, "ok", None)
        assert ok.latency_ms == pytest.approx(12.5)
        assert ok.created_at.tzinfo == UTC and abs(datetime.now(UTC) - ok.created_at) < timedelta(minutes=5)

        assert (failed.outcome, failed.error, failed.session_id) == ("timeout", HOSTILE, None)
        assert failed.response is None and failed.tool_calls is None and failed.prompt_tokens is None
        # SQL NULL, not JSON null, so IS NULL queries work.
        assert session.scalar(select(func.count()).select_from(LLMCall).where(LLMCall.response.is_(None))) == 1
        assert session.scalars(select(LLMCall.id).where(LLMCall.job_id == job_id)).all() == [ok.id]
        assert _count(session, LLMCall) == 2


def test_chat_session_messages_ordered_and_state_round_trip(db_url: str) -> None:
    sid = uuid.uuid4().hex
    state = {"stage": "confirm", "spec": {"target": HOSTILE, "costs": [1.0, None]}, HOSTILE: {}}
    with session_scope(db_url) as session:
        chat = ChatSession(id=sid, state=state)
        for role, content in [("system", "rules"), ("user", HOSTILE), ("assistant", ""), ("tool", '{"n": 3}')]:
            meta = {"tool_call_id": "c1"} if role == "tool" else None
            chat.messages.append(ChatMessage(role=role, content=content, meta=meta))
        session.add(chat)

    with session_scope(db_url) as session:
        chat = session.get(ChatSession, sid)
        assert chat.state == state and chat.job_id is None
        assert [(m.role, m.content) for m in chat.messages] == [
            ("system", "rules"), ("user", HOSTILE), ("assistant", ""), ("tool", '{"n": 3}'),
        ]
        assert [m.meta for m in chat.messages] == [None, None, None, {"tool_call_id": "c1"}]
        assert chat.created_at.tzinfo == UTC and chat.messages[0].created_at.tzinfo == UTC
        first_update = chat.updated_at
        chat.state = {**state, "stage": "training"}
        chat.job_id = "j" * 32
        chat.messages.append(ChatMessage(role="assistant", content="started"))

    with session_scope(db_url) as session:
        chat = session.get(ChatSession, sid)
        assert chat.state["stage"] == "training" and chat.job_id == "j" * 32
        assert chat.updated_at >= first_update
        assert [m.content for m in chat.messages][-1] == "started"


def test_chat_messages_cascade_and_foreign_key(db_url: str) -> None:
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as session:
            session.add(ChatMessage(session_id="0" * 32, role="user", content="orphan"))

    keep, via_orm, via_sql = (uuid.uuid4().hex for _ in range(3))
    with session_scope(db_url) as session:
        for sid in (keep, via_orm, via_sql):
            chat = ChatSession(id=sid, state={})
            chat.messages.extend(ChatMessage(role="user", content=f"{sid} {i}") for i in range(3))
            session.add(chat)
    with session_scope(db_url) as session:
        session.delete(session.get(ChatSession, via_orm))
    with session_scope(db_url) as session:
        # Plain SQL: the database's ON DELETE CASCADE, not the ORM, removes the messages.
        session.execute(delete(ChatSession).where(ChatSession.id == via_sql))
    with session_scope(db_url) as session:
        assert session.scalars(select(ChatMessage.session_id).distinct()).all() == [keep]
        assert _count(session, ChatMessage) == 3
        assert session.scalars(select(ChatSession.id)).all() == [keep]
