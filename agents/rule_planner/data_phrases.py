"""What to read: the data file a message names and the cell values it says mean "missing".

Missing-value tokens are read before budgets and costs (see `parsing.parse_message`), so "-999" is never a
budget or a cost.
"""

from __future__ import annotations

import re

from poise.agents.rule_planner.phrases import mask

_SUFFIX = r"\.(?:csv|tsv|txt|parquet|pq)"
_QUOTED_PATH = re.compile(rf"(?<!\w)([\"'`])([^\"'`\n]*?{_SUFFIX})\1", re.I)
_BARE_PATH = re.compile(rf"(?<![\w/\\.~-])((?:[A-Za-z]:)?[\w./\\~-]*?[\w-]{_SUFFIX})(?!\.?\w)", re.I)


def extract_data(work: str) -> tuple[str | None, str]:
    quoted = _QUOTED_PATH.search(work)
    bare = _BARE_PATH.search(work)
    if quoted and (not bare or quoted.start() <= bare.start()):
        return quoted.group(2).strip(), mask(work, quoted.start(), quoted.end())
    if bare:
        return bare.group(1), mask(work, bare.start(), bare.end())
    return None, work

_NA_WORDS = r"(?:none|null|nil|n/a|na|nan|unknown|missing|empty|blank|undefined)"
_NA_ITEM = (r"""(?:"[^"\n]{1,100}"|'[^'\n]{1,100}'|`[^`\n]{1,100}`|(?<![\w.])[-+]?\d+(?:\.\d+)?(?!\w|\.\d)"""
            rf"|(?<![\w?*#-])(?:[?*#]+|-{{1,3}})(?![\w?*#-])|\b{_NA_WORDS}\b)")
_NA_LIST = rf"(?P<values>{_NA_ITEM}(?:\s*(?:,\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+){_NA_ITEM}){{0,19}})"
_MEANS_MISSING = r"(?:a\s+|an\s+)?(?:missing|na|n/a|null|nan|empty|blank|gaps?|not\s+available)\b"
_NA_PATTERNS = [
    # "treat '?' and 'none' as missing", "read -999 as NA", "use ? for missing values"
    re.compile(rf"\b(?:treat|read|count|consider|handle|interpret|parse|take|use)\s+(?:the\s+)?"
               rf"(?:(?:values?|strings?|codes?|tokens?|cells?|entries)\s+)?{_NA_LIST}\s+(?:as|for)\s+"
               rf"{_MEANS_MISSING}(?:\s+(?:values?|data|cells?|entries))?", re.I),
    # "missing values are coded as -999", "nulls are written as 'none' or '?'"
    re.compile(rf"\b(?:missing|null|na|n/a|empty|blank)(?:s|\s+(?:values?|data|cells?|entries|fields))?\s+"
               r"(?:is|are)\s+(?:(?:coded|encoded|written|marked|recorded|stored|represented|given|shown|entered|"
               rf"indicated|denoted|flagged)\s+)?(?:as|with|by)\s+{_NA_LIST}", re.I),
    # "-999 means missing", "'?' and 'none' stand for NA"
    re.compile(rf"{_NA_LIST}\s+(?:means?|stands?\s+for|denotes?|indicates?|represents?|marks?)\s+"
               rf"{_MEANS_MISSING}", re.I),
    # "na values: ?, none", "missing value codes = -999"
    re.compile(rf"\b(?:na|nan|null|missing)[\s_-]*(?:values?|codes?|markers?|tokens?)(?:[\s_-]*codes?)?\s*"
               rf"(?:[:=]|\bare\b|\binclude\b)\s*{_NA_LIST}", re.I),
]
_NA_SPLIT = re.compile(_NA_ITEM, re.I)


def extract_na_values(work: str) -> tuple[list[str], str]:
    """Cell values the message says mean "missing", in order, without repeats."""
    found: list[tuple[int, str]] = []
    for pattern in _NA_PATTERNS:
        for match in pattern.finditer(work):
            start = match.start("values")
            found += [(start + item.start(), _unquote_value(item.group()))
                      for item in _NA_SPLIT.finditer(match.group("values"))]
            work = mask(work, match.start(), match.end())
    values = [value for _, value in sorted(found) if value]
    return list(dict.fromkeys(values)), work


def _unquote_value(value: str) -> str:
    """A quoted value as written between its quotes (spaces kept); a bare one as it is."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        return value[1:-1]
    return value
