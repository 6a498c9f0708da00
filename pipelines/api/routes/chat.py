"""Chat: the same `ChatSession` as `poise chat`, with jobs handed to the worker."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from poise.pipelines.api.deps import get_settings, require
from poise.pipelines.chat import ChatSession, QueuedJobs
from poise.pipelines.settings import Settings
from poise.registry.keys import KeyInfo

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])


class ChatIn(BaseModel):
    message: str = Field("", max_length=4000)
    session_id: str | None = Field(None, max_length=32, pattern=r"^[A-Za-z0-9]+$")
    approve: bool = False


class ChatOut(BaseModel):
    session_id: str
    reply: str
    planner: str
    fell_back: str | None
    plan: list[str]
    job_id: str | None
    status: str | None


@router.post("", response_model=ChatOut, summary="Send one chat message; returns the reply, plan and job")
async def chat(message: ChatIn, settings: Settings = Depends(get_settings),
               caller: KeyInfo = Depends(require("submit"))):
    def turn():
        session = ChatSession.open(settings, message.session_id, jobs=QueuedJobs(), caller=caller)
        return session.send(message.message, approve=message.approve)

    reply = await asyncio.to_thread(turn)  # a refusal (another key's session: 403, bad input: 422) as raised
    return ChatOut(session_id=reply.session_id, reply=reply.text, planner=reply.planner, fell_back=reply.fell_back,
                   plan=reply.plan, job_id=reply.job_id, status=reply.status)
