"""Which columns and classes a message names: the target, the columns to drop, the positive class.

With the table's columns known, a name is matched to the real column case-insensitively, then with `difflib`
(small typos); with no match the user's text is kept so that validation can say what is wrong. "ignore/drop X"
drops columns only when it looks like a column list ("ignore previous instructions" drops nothing).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from poise.agents.rule_planner.phrases import (
    STOPWORDS,
    VALUE,
    close_column,
    exact_column,
    first_value,
    is_bare_stopword,
    mask,
    to_column,
    unquote,
)

KEYWORD_CUTOFF = 0.8  # difflib similarity for a misspelt "predict"/"forecast"/"classify"
TARGET_WINDOW = 4  # words after "predict" that may name the target ("predict whether the customer churned")

POSITIVE_PATTERNS = [
    re.compile(rf"\bpos(?:itive)?[\s_-]*(?:class|label)\s*(?:is\b|:|=|should\s+be\b)?\s*(?:the\s+)?{VALUE}", re.I),
    re.compile(rf"{VALUE}\s+is\s+the\s+positive(?:\s+(?:class|label))?\b", re.I),
    re.compile(rf"\btreat\s+{VALUE}\s+as\s+(?:the\s+)?positive\b", re.I),
    re.compile(r"""\bcare\s+(?:most\s+)?about\s+(?:the\s+)?(?P<value>"[^"\n]+"|'[^'\n]+'|`[^`\n]+`)""", re.I),
    re.compile(rf"\bcare\s+(?:most\s+)?about\s+(?:the\s+)?(?:class|label)\s+{VALUE}", re.I),
]

_DROP_VERB = re.compile(r"\b(?:drop|ignore|exclude|remove|skip|leave\s+out|don[’']?t\s+use|do\s+not\s+use)\b", re.I)
_ARTICLE = re.compile(r"\s+the\b", re.I)
_COLUMN_NOUN = re.compile(r"\s+(?:following\s+)?(?:columns?|cols?|features?|fields?)\b\s*:?", re.I)
_LIST_ITEM = re.compile(rf"\s*{VALUE}")
_LIST_SEPARATOR = re.compile(r"\s*(?:,\s*(?:and\s+)?|&\s*|/\s*|\band\s+|\bor\s+)", re.I)
# What may follow the last name of a column list that has no "column(s)" word.
_LIST_END = re.compile(
    r"\s*(?:$|[,;.!?)]|(?:and|or|from|before|then|when|while|please|too|also|since|because|as|in|on|for|"
    r"during|so|but|with|to)\b)",
    re.I,
)


def _drop_list(work: str, verb_end: int) -> tuple[list[str], int]:
    """The column names after a drop verb and where the list ends; [] when it is not a column list."""
    position = verb_end
    article = _ARTICLE.match(work, position)
    if article:
        position = article.end()
    noun = _COLUMN_NOUN.match(work, position)
    if noun:
        position = noun.end()
    items: list[tuple[str, int]] = []  # raw value, end
    while (item := _LIST_ITEM.match(work, position)) and not is_bare_stopword(item.group("value")):
        items.append((item.group("value"), item.end()))
        separator = _LIST_SEPARATOR.match(work, item.end())
        if not separator:
            break
        position = separator.end()
    if not items:
        return [], verb_end
    trailing_noun = _COLUMN_NOUN.match(work, items[-1][1])  # "ignore the RowNumber column"
    if trailing_noun:
        return [unquote(raw) for raw, _ in items], trailing_noun.end()
    if article and not noun:  # "drop the registry": an article without "column" is not a column list
        return [], verb_end
    while items and not _LIST_END.match(work, items[-1][1]):
        items.pop()
    return [unquote(raw) for raw, _ in items], items[-1][1] if items else verb_end


def extract_drops(work: str, columns: Sequence[str] | None) -> tuple[list[str], str]:
    dropped: list[str] = []
    for verb in list(_DROP_VERB.finditer(work)):
        names, end = _drop_list(work, verb.end())
        if names:
            work = mask(work, verb.start(), end)
        for name in names:
            column = to_column(name, columns)
            if column not in dropped:
                dropped.append(column)
    return dropped, work

_TARGET_BEFORE = re.compile(rf"{VALUE}\s+(?:is|as)\s+(?:the\s+|my\s+|our\s+)?(?:target|label)\b", re.I)
_TARGET_AFTER = re.compile(
    rf"(?<!positive\s)(?<!pos\s)\b(?:target|label)(?:[\s_-]*(?:column|col|variable|var|field))?"
    rf"\s*(?:is\b|:|=|should\s+be\b)?\s*(?:the\s+)?{VALUE}",
    re.I,
)
_PREDICT_KEYWORDS = (
    "predict", "predicting", "prediction", "forecast", "forecasting", "classify", "classifying", "classifier",
)
_WORD = re.compile(r"[A-Za-z]+")
# One token after "predict": a quoted name, a word, a link (":"/"=", skipped) or punctuation (ends the window).
_TOKEN = re.compile(
    r"""\s*(?:"(?P<dq>[^"\n]+)"|(?<!\w)'(?P<sq>[^'\n]+)'(?!\w)|`(?P<bq>[^`\n]+)`"""
    r"""|(?P<word>\w+(?:[.-]\w+)*)|(?P<link>[:=])|(?P<stop>[,;!?.()]))"""
)
_TARGET_FILLERS = frozenset(
    "the a an whether if which what column col variable field target label value values of for is be will "
    "to our my".split()
)


def _is_predict_word(word: str) -> bool:
    word = word.lower()
    return word.startswith(_PREDICT_KEYWORDS) or bool(
        difflib.get_close_matches(word, _PREDICT_KEYWORDS, n=1, cutoff=KEYWORD_CUTOFF)
    )


def _words_after(work: str, position: int) -> list[tuple[str, bool]]:
    """Up to TARGET_WINDOW (word, was_quoted) pairs after `position`, skipping fillers, up to punctuation."""
    words: list[tuple[str, bool]] = []
    for token in _TOKEN.finditer(work, position):
        if token.start() != position or token.group("stop") or len(words) == TARGET_WINDOW:
            break
        position = token.end()
        quoted = token.group("dq") or token.group("sq") or token.group("bq")
        if quoted:
            words.append((quoted.strip(), True))
            break  # a quoted name is the target, whatever follows
        word = token.group("word")
        if word and word.lower() in STOPWORDS - _TARGET_FILLERS:  # "a classifier on data.csv": no target here
            break
        if word and word.lower() not in _TARGET_FILLERS:
            words.append((word, False))
    return words


def _target_after_keyword(work: str, position: int, columns: Sequence[str] | None) -> str | None:
    words = _words_after(work, position)
    if not words:
        return None
    if columns:
        for match_column in (exact_column, close_column):
            for word, _ in words:
                column = match_column(word, columns)
                if column:
                    return column
    return words[0][0]


def extract_target(work: str, columns: Sequence[str] | None) -> str | None:
    candidates: list[tuple[int, str]] = []
    match = first_value([_TARGET_BEFORE, _TARGET_AFTER], work)
    if match:
        candidates.append((match.start(), to_column(unquote(match.group("value")), columns)))
    for word in _WORD.finditer(work):
        if _is_predict_word(word.group()):
            target = _target_after_keyword(work, word.end(), columns)
            if target:
                candidates.append((word.start(), target))
                break
    return min(candidates)[1] if candidates else None
