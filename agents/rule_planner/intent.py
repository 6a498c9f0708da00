"""What a conversation has said about a training job so far, and what to ask next.

`ChatIntent` holds the parts of a job one message names (every field optional); `merge` folds the turns of a
conversation together, and `next_missing`/`missing_question` say what to ask until the file and the target
(and, for the cost objective, the costs) are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from poise.agents.job_spec import LabelNoise, Objective

QuestionKind = Literal["data", "target", "costs"]

MAX_LISTED_COLUMNS = 8


class ChatIntent(BaseModel):
    """What one message (plus, after `merge`, the earlier turns) says about the job: the options of
    `agents.job_spec.JobOptions` a phrase can set, under the same names, as written (the plan built from them is
    validated by the spec before anything runs)."""

    data: str | None = None  # file path as written (csv/tsv/txt/parquet/pq), quotes stripped
    target: str | None = None  # column to predict
    objective: Objective | None = None
    cost_fn: float | None = None  # cost of a missed positive (false negative)
    cost_fp: float | None = None  # cost of a false alarm (false positive)
    time_limit: int | None = None  # seconds
    name: str | None = None  # registered model name ("call it churn-v2")
    positive_class: str | None = None  # "the positive class is yes", "we care about 'bad'"
    drop_columns: list[str] = []  # "drop/ignore/exclude columns a, b and c"
    na_values: list[str] = []  # cell values meaning missing: "treat '?' and 'none' as missing"
    label_noise: LabelNoise | None = None  # "drop the mislabelled rows", "down-weight suspect labels"
    approve: bool = False  # the message only approves the proposed plan ("yes", "go ahead")
    reject: bool = False  # the message only rejects it ("no", "cancel", "don't run it")


def merge(earlier: ChatIntent, later: ChatIntent) -> ChatIntent:
    """The conversation so far: fields the later turn sets win; approve/reject come from it alone."""
    merged = earlier.model_dump()
    for field, value in later.model_dump().items():
        if field in ("approve", "reject") or value not in (None, []):
            merged[field] = value
    return ChatIntent(**merged)


def next_missing(intent: ChatIntent) -> QuestionKind | None:
    """Which answer is still needed before a plan can be proposed: the file, the target, then the costs."""
    if not intent.data:
        return "data"
    if not intent.target:
        return "target"
    if intent.objective == "cost" and (intent.cost_fn is None or intent.cost_fp is None):
        return "costs"
    return None


def missing_question(intent: ChatIntent, columns: Sequence[str] | None = None) -> str | None:
    """The one question to ask next, or None when nothing the plan needs is missing."""
    kind = next_missing(intent)
    if kind == "data":
        return "Which file should I train on? Give the path of a CSV, TSV or Parquet file."
    if kind == "target":
        question = "Which column should I predict?"
        if columns:
            listed = ", ".join(columns[:MAX_LISTED_COLUMNS])
            more = len(columns) - MAX_LISTED_COLUMNS
            question += f" The columns are: {listed}" + (f" and {more} more." if more > 0 else ".")
        return question
    if kind == "costs":
        return "What does a missed positive cost compared with a false alarm?"
    return None
