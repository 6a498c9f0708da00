"""The shared vocabulary of the chat rules: numbers, named values, stopwords, masking and column matching.

Every rule reads the message with these pieces, so a number, a quoted name or a typo'd column means the same
to each of them; a rule masks the span it consumed so that no later rule reads it again.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

COLUMN_CUTOFF = 0.75  # difflib similarity for mapping a typed name onto a real column

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "ninety": 90, "hundred": 100,
}
NUMBER = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?|" + "|".join(_NUMBER_WORDS) + r")"

# A value the user names: quoted (may contain spaces) or one identifier-like word.
VALUE = r"""(?P<value>"[^"\n]+"|'[^'\n]+'|`[^`\n]+`|(?<![\w'-])[A-Za-z0-9_][\w.-]*)"""

# Words that are never a column, model or class name when written bare.
STOPWORDS = frozenset(
    "a an the all any and or is it to of in on for with from by as at be this that these those "
    "my our your me us we please whether if which what who column columns everything nothing "
    "using use then also but".split()
)


def number(token: str) -> float:
    """A number as written: digits (with thousands commas) or a number word."""
    token = token.lower().replace(",", "")
    return float(_NUMBER_WORDS[token]) if token in _NUMBER_WORDS else float(token)


def unquote(value: str) -> str:
    """A named value without its quotes (and surrounding spaces), or a bare one without trailing dots and dashes."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        return value[1:-1].strip()
    return value.rstrip(".-")


def is_bare_stopword(raw: str) -> bool:
    """Whether an unquoted value is a word that never names anything (`STOPWORDS`)."""
    return raw[0] not in "\"'`" and raw.lower() in STOPWORDS


def mask(text: str, start: int, end: int) -> str:
    """Blank out a consumed span so later rules neither see nor re-read it (positions kept)."""
    return text[:start] + " " * (end - start) + text[end:]


def exact_column(text: str, columns: Sequence[str]) -> str | None:
    """The column named `text`, case aside, or None."""
    by_lower = {column.lower(): column for column in columns}
    return by_lower.get(text.lower())


def close_column(text: str, columns: Sequence[str]) -> str | None:
    """The column `text` names with a small typo (`COLUMN_CUTOFF`), or None."""
    by_lower = {column.lower(): column for column in columns}
    close = difflib.get_close_matches(text.lower(), list(by_lower), n=1, cutoff=COLUMN_CUTOFF)
    return by_lower[close[0]] if close else None


def to_column(text: str, columns: Sequence[str] | None) -> str:
    """The real column the user meant, or the user's text when none is close."""
    if not columns:
        return text
    return exact_column(text, columns) or close_column(text, columns) or text


def first_value(patterns: Sequence[re.Pattern[str]], work: str) -> re.Match[str] | None:
    """The earliest match of any pattern whose value is not a bare stopword."""
    found = [
        match
        for pattern in patterns
        for match in pattern.finditer(work)
        if not is_bare_stopword(match.group("value"))
    ]
    return min(found, key=lambda match: match.start(), default=None)


def extract_by_patterns(patterns: Sequence[re.Pattern[str]], work: str) -> tuple[str | None, str]:
    """The value of the earliest match (unquoted) and the text with that match masked."""
    match = first_value(patterns, work)
    if match is None:
        return None, work
    return unquote(match.group("value")), mask(work, match.start(), match.end())
