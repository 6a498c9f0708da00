"""One chat message in, one `ChatIntent` out: the order the rules run in, the model name, and a bare yes or no.

Each rule masks what it consumed so that later rules never re-read it, which makes the order matter: the data
file, missing-value tokens, the model name, the positive class, the time budget, costs, the objective, what to do
with rows whose label looks wrong, dropped columns and, last, the target. A message approves (or rejects) a proposed plan only when it says nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from poise.agents.rule_planner.column_phrases import POSITIVE_PATTERNS, extract_drops, extract_target
from poise.agents.rule_planner.data_phrases import extract_data, extract_na_values
from poise.agents.rule_planner.intent import ChatIntent
from poise.agents.rule_planner.objective_phrases import extract_costs, extract_objective, extract_time
from poise.agents.rule_planner.phrases import VALUE, extract_by_patterns, mask

_NAME_PATTERNS = [
    re.compile(rf"\b(?:call|name)\s+(?:it|this(?:\s+model)?|the\s+model|the\s+run)\s+(?:as\s+)?{VALUE}", re.I),
    re.compile(rf"\bmodel[\s_-]*name\s*(?:is\b|:|=)?\s*{VALUE}", re.I),
    re.compile(rf"(?<![\w-])name\s*[:=]\s*{VALUE}", re.I),
    re.compile(rf"\b(?:save|register)\s+(?:it\s+|this\s+|the\s+model\s+)?as\s+{VALUE}", re.I),
    re.compile(rf"\bmodel\s+(?:called|named)\s+{VALUE}", re.I),
]

# Rows the label-noise audit flags: "drop the mislabelled rows", "down-weight suspect labels" (before the dropped
# columns, whose rule would read "drop mislabelled" as a column named so).
_NOISY_ROWS = r"(?:the\s+)?(?:likely\s+|possibly\s+)?(?:mislabell?ed|wrongly\s+labell?ed|noisy|suspect(?:ed)?|flagged)\s+(?:labels?|rows?)"
_LABEL_NOISE_PATTERNS = [
    (re.compile(rf"\b(?:drop|remove|exclude|discard|leave\s+out)\s+{_NOISY_ROWS}", re.I), "drop"),
    (re.compile(rf"\b(?:down[\s-]?weight|downweigh|weigh\s+down)\s+{_NOISY_ROWS}", re.I), "downweight"),
]

_APPROVE_WORDS = frozenset(
    "yes yess yep yup yeah yea ya y ok okay k sure go proceed approve approved approv lgtm confirm confirmed "
    "run start launch ship do train good great perfect fine correct absolutely definitely alright".split()
)
_APPROVE_FILLERS = frozenset("ahead it that this please all right looks look sounds let's lets now then just the plan s thanks thank you is".split())
_REJECT_WORDS = frozenset(
    "no nope nah n cancel cancelled canceled stop abort don't dont not never nevermind wait halt reject rejected hold".split()
)
_REJECT_FILLERS = frozenset("do run it that this please yet mind on the plan train thanks ok okay actually now start go".split())


def _says_only(text: str, words: frozenset[str], fillers: frozenset[str]) -> bool:
    tokens = re.findall(r"[a-z']+", text.lower().replace("’", "'"))
    tokens = [token.strip("'") for token in tokens if token.strip("'")]
    return bool(tokens) and all(t in words or t in fillers for t in tokens) and any(t in words for t in tokens)


def extract_label_noise(work: str) -> tuple[str | None, str]:
    """`drop` or `downweight` when the message asks that of rows flagged as likely mislabelled, and the text with
    that phrase masked."""
    for pattern, mode in _LABEL_NOISE_PATTERNS:
        if match := pattern.search(work):
            return mode, mask(work, match.start(), match.end())
    return None, work


def parse_message(text: str, columns: Sequence[str] | None = None) -> ChatIntent:
    """What one chat message says about the training job. Pure string parsing; never raises."""
    work = text
    data, work = extract_data(work)
    na_values, work = extract_na_values(work)
    name, work = extract_by_patterns(_NAME_PATTERNS, work)
    positive_class, work = extract_by_patterns(POSITIVE_PATTERNS, work)
    time_limit, work = extract_time(work)
    costs = extract_costs(work)
    objective, work = extract_objective(work)
    label_noise, work = extract_label_noise(work)
    drop_columns, work = extract_drops(work, columns)
    target = extract_target(work, columns)
    if costs:
        objective = "cost"

    intent = ChatIntent(
        data=data, target=target, objective=objective, cost_fn=costs.get("fn"), cost_fp=costs.get("fp"),
        time_limit=time_limit, name=name, positive_class=positive_class, drop_columns=drop_columns,
        na_values=na_values, label_noise=label_noise,
    )
    if intent == ChatIntent():  # nothing else said: the message may be a bare yes or no
        intent.approve = _says_only(text, _APPROVE_WORDS, _APPROVE_FILLERS)
        intent.reject = _says_only(text, _REJECT_WORDS, _REJECT_FILLERS)
    return intent
