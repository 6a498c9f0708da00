"""Rule-based chat parser: turns a user's message into the parts of a training job it names.

Poise lets a user ask for a model in plain words ("train on data/customers.csv to predict
churned; a missed churner costs 10 times a false alarm; 5 minutes"). When no LLM endpoint
is configured, or the LLM fails, this module does that translation instead: with regular
expressions and `difflib` only, so it is deterministic, fast, works offline and never
executes or evaluates anything from the message.

`parse_message` reads one message into a `ChatIntent` (every field optional), `merge`
folds the turns of a conversation together, and `missing_question` says what to ask next
until the file and the target are known. Validation of the result (the file exists, the
target is a column, the costs suit the objective) happens later, in `JobSpec` and the
plan checks; this module only extracts what was said.

Rules worth knowing:

- A message approves (or rejects) a proposed plan only when it says nothing else: "yes" or
  "looks good, run it" approve; "yes, but with balanced accuracy" changes the objective and
  does not approve, so the user sees the changed plan before it runs.
- Any cost figure implies the "cost" objective. "Optimise for cost" without figures also
  sets it, and `missing_question` then asks for the costs.
- With the table's columns known, a target or dropped column is matched to the real name
  case-insensitively, then with `difflib` (small typos); with no match the user's text is
  kept so that validation can say what is wrong.
- "ignore/drop/exclude X" is read as dropping columns only when it looks like a column
  list ("ignore previous instructions" and "drop the registry" drop nothing).
- Cell values that mean "missing" ("treat '?' and 'none' as missing", "missing values are
  coded as -999", "-999 means NA", "na values: ?, none") become `na_values`. A value may be
  quoted, a number, a run of `?*#` or dashes, or one of the usual words for a gap (none, null,
  nil, na, n/a, nan, unknown, missing, empty, blank, undefined); any other word must be quoted,
  so "treat the customer as missing" reads nothing. These values are read before budgets and
  costs, so "-999" is never a budget or a cost.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

QuestionKind = Literal["data", "target", "costs"]

COLUMN_CUTOFF = 0.75  # difflib similarity for mapping a typed name onto a real column
KEYWORD_CUTOFF = 0.8  # difflib similarity for a misspelt "predict"/"forecast"/"classify"
MAX_LISTED_COLUMNS = 8
TARGET_WINDOW = 4  # words after "predict" that may name the target ("predict whether the customer churned")


class ChatIntent(BaseModel):
    """What one message (plus, after `merge`, the earlier turns) says about the job."""

    data: str | None = None  # file path as written (csv/tsv/txt/parquet/pq), quotes stripped
    target: str | None = None  # column to predict
    objective: Literal["f1", "balanced_accuracy", "cost"] | None = None
    cost_fn: float | None = None  # cost of a missed positive (false negative)
    cost_fp: float | None = None  # cost of a false alarm (false positive)
    time_limit: int | None = None  # seconds
    name: str | None = None  # registered model name ("call it churn-v2")
    positive_class: str | None = None  # "the positive class is yes", "we care about 'bad'"
    drop_columns: list[str] = []  # "drop/ignore/exclude columns a, b and c"
    na_values: list[str] = []  # cell values meaning missing: "treat '?' and 'none' as missing"
    approve: bool = False  # the message only approves the proposed plan ("yes", "go ahead")
    reject: bool = False  # the message only rejects it ("no", "cancel", "don't run it")


# ---------------------------------------------------------------- shared pieces

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "ninety": 90, "hundred": 100,
}
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?|" + "|".join(_NUMBER_WORDS) + r")"

# A value the user names: quoted (may contain spaces) or one identifier-like word.
_VALUE = r"""(?P<value>"[^"\n]+"|'[^'\n]+'|`[^`\n]+`|(?<![\w'-])[A-Za-z0-9_][\w.-]*)"""

# Words that are never a column, model or class name when written bare.
_STOPWORDS = frozenset(
    "a an the all any and or is it to of in on for with from by as at be this that these those "
    "my our your me us we please whether if which what who column columns everything nothing "
    "using use then also but".split()
)

_SENTENCE = re.compile(r"(?:[^.;!?\n]|\.(?=\S))+")


def _number(token: str) -> float:
    token = token.lower().replace(",", "")
    return float(_NUMBER_WORDS[token]) if token in _NUMBER_WORDS else float(token)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        return value[1:-1].strip()
    return value.rstrip(".-")


def _bare_stopword(raw: str) -> bool:
    return raw[0] not in "\"'`" and raw.lower() in _STOPWORDS


def _mask(text: str, start: int, end: int) -> str:
    """Blank out a consumed span so later rules neither see nor re-read it (positions kept)."""
    return text[:start] + " " * (end - start) + text[end:]


def _exact_column(text: str, columns: Sequence[str]) -> str | None:
    by_lower = {column.lower(): column for column in columns}
    return by_lower.get(text.lower())


def _close_column(text: str, columns: Sequence[str]) -> str | None:
    by_lower = {column.lower(): column for column in columns}
    close = difflib.get_close_matches(text.lower(), list(by_lower), n=1, cutoff=COLUMN_CUTOFF)
    return by_lower[close[0]] if close else None


def _to_column(text: str, columns: Sequence[str] | None) -> str:
    """The real column the user meant, or the user's text when none is close."""
    if not columns:
        return text
    return _exact_column(text, columns) or _close_column(text, columns) or text


# ---------------------------------------------------------------- data file

_SUFFIX = r"\.(?:csv|tsv|txt|parquet|pq)"
_QUOTED_PATH = re.compile(rf"(?<!\w)([\"'`])([^\"'`\n]*?{_SUFFIX})\1", re.I)
_BARE_PATH = re.compile(rf"(?<![\w/\\.~-])((?:[A-Za-z]:)?[\w./\\~-]*?[\w-]{_SUFFIX})(?!\.?\w)", re.I)


def _extract_data(work: str) -> tuple[str | None, str]:
    quoted = _QUOTED_PATH.search(work)
    bare = _BARE_PATH.search(work)
    if quoted and (not bare or quoted.start() <= bare.start()):
        return quoted.group(2).strip(), _mask(work, quoted.start(), quoted.end())
    if bare:
        return bare.group(1), _mask(work, bare.start(), bare.end())
    return None, work


# ---------------------------------------------------------------- values meaning "missing"

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


def _extract_na_values(work: str) -> tuple[list[str], str]:
    """Cell values the message says mean "missing", in order, without repeats."""
    found: list[tuple[int, str]] = []
    for pattern in _NA_PATTERNS:
        for match in pattern.finditer(work):
            start = match.start("values")
            found += [(start + item.start(), _unquote_value(item.group()))
                      for item in _NA_SPLIT.finditer(match.group("values"))]
            work = _mask(work, match.start(), match.end())
    values = [value for _, value in sorted(found) if value]
    return list(dict.fromkeys(values)), work


def _unquote_value(value: str) -> str:
    """A quoted value as written between its quotes (spaces kept); a bare one as it is."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        return value[1:-1]
    return value


# ---------------------------------------------------------------- model name

_NAME_PATTERNS = [
    re.compile(rf"\b(?:call|name)\s+(?:it|this(?:\s+model)?|the\s+model|the\s+run)\s+(?:as\s+)?{_VALUE}", re.I),
    re.compile(rf"\bmodel[\s_-]*name\s*(?:is\b|:|=)?\s*{_VALUE}", re.I),
    re.compile(rf"(?<![\w-])name\s*[:=]\s*{_VALUE}", re.I),
    re.compile(rf"\b(?:save|register)\s+(?:it\s+|this\s+|the\s+model\s+)?as\s+{_VALUE}", re.I),
    re.compile(rf"\bmodel\s+(?:called|named)\s+{_VALUE}", re.I),
]


def _first_value(patterns: Sequence[re.Pattern[str]], work: str) -> re.Match[str] | None:
    """The earliest match of any pattern whose value is not a bare stopword."""
    found = [
        match
        for pattern in patterns
        for match in pattern.finditer(work)
        if not _bare_stopword(match.group("value"))
    ]
    return min(found, key=lambda match: match.start(), default=None)


def _extract_by_patterns(patterns: Sequence[re.Pattern[str]], work: str) -> tuple[str | None, str]:
    match = _first_value(patterns, work)
    if match is None:
        return None, work
    return _unquote(match.group("value")), _mask(work, match.start(), match.end())


# ---------------------------------------------------------------- positive class

_POSITIVE_PATTERNS = [
    re.compile(rf"\bpos(?:itive)?[\s_-]*(?:class|label)\s*(?:is\b|:|=|should\s+be\b)?\s*(?:the\s+)?{_VALUE}", re.I),
    re.compile(rf"{_VALUE}\s+is\s+the\s+positive(?:\s+(?:class|label))?\b", re.I),
    re.compile(rf"\btreat\s+{_VALUE}\s+as\s+(?:the\s+)?positive\b", re.I),
    re.compile(r"""\bcare\s+(?:most\s+)?about\s+(?:the\s+)?(?P<value>"[^"\n]+"|'[^'\n]+'|`[^`\n]+`)""", re.I),
    re.compile(rf"\bcare\s+(?:most\s+)?about\s+(?:the\s+)?(?:class|label)\s+{_VALUE}", re.I),
]


# ---------------------------------------------------------------- time budget

_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}
_TIME_WITH_UNIT = re.compile(
    rf"\b({_NUM})\s*-?\s*(hours?|hrs?|h|minutes?|minuts?|mintues?|mins?|m|seconds?|secs?|s)\b", re.I
)
_TIME_PHRASES = [
    (re.compile(r"\bhalf\s+(?:an?\s+)?hour\b", re.I), 1800),
    (re.compile(r"\bquarter\s+(?:of\s+)?an?\s+hour\b", re.I), 900),
    (re.compile(r"\ban?\s+hour\b", re.I), 3600),
    (re.compile(r"\ba\s+minute\b", re.I), 60),
]
_TIME_UNITLESS = re.compile(
    rf"\b(?:time[\s_-]*(?:limit|budget)|budget)\s*(?:of\b|is\b|to\b|=|:)?\s*({_NUM})\b(?!\s*(?:x|times|%))", re.I
)

_TIME_JOINER = re.compile(r"\s*(?:,|and)?\s*", re.I)


def _extract_time(work: str) -> tuple[int | None, str]:
    """Seconds from the first budget mentioned ("5 min", "2h", "half an hour", "time limit 300")."""
    found: list[tuple[int, int, float]] = []  # start, end, seconds
    for pattern, seconds in _TIME_PHRASES:
        for match in pattern.finditer(work):
            found.append((match.start(), match.end(), seconds))
            work = _mask(work, match.start(), match.end())
    for match in _TIME_WITH_UNIT.finditer(work):
        unit = match.group(2)[0].lower()
        found.append((match.start(), match.end(), _number(match.group(1)) * _UNIT_SECONDS[unit]))
    for start, end, _ in found:
        work = _mask(work, start, end)
    for match in _TIME_UNITLESS.finditer(work):
        found.append((match.start(), match.end(), _number(match.group(1))))
        work = _mask(work, match.start(), match.end())
    if not found:
        return None, work
    found.sort()
    start, end, seconds = found[0]
    for next_start, next_end, more in found[1:]:  # "1h 30m", "1 hour and 30 minutes"
        if not _TIME_JOINER.fullmatch(work[end:next_start]):
            break
        end, seconds = next_end, seconds + more
    return round(seconds), work


# ---------------------------------------------------------------- costs

_FALSE = r"\bf(?:alse|lase|als|asle)[\s-]*"
_MISS = r"(?:(?<!-)\bcost[_\s-]?fn\b|\bfns?\b|" + _FALSE + r"neg\w*|\bmiss(?:ed|es|ing)?\b(?!\s+(?:values?|data))" \
    r"|\btype[\s-]*(?:ii|2)[\s-]*errors?\b)"
_ALARM = r"(?:(?<!-)\bcost[_\s-]?fp\b|\bfps?\b|" + _FALSE + r"(?:pos\w*|alarms?)|\btype[\s-]*(?:i|1)[\s-]*errors?\b)"
_ERROR_KIND = re.compile(rf"(?P<fn>{_MISS})|(?P<fp>{_ALARM})", re.I)
_RATIO = re.compile(rf"\b(?P<times>{_NUM})\s*(?:x|×|times)(?!\w)|\btwice\b", re.I)
_CHEAPER = re.compile(r"\b(?:less|cheaper|lower|smaller|fewer)\b", re.I)
_MONEY = r"(?:[$€£]\s*)?"
_PER_ERROR = re.compile(
    rf"{_MONEY}(?P<amount>{_NUM})\s*(?:[$€£]|dollars?|euros?|pounds?|usd|eur|gbp)?\s+(?:per|for|on)\s+"
    rf"(?:each\s+|every\s+|an?\s+|one\s+)?(?:(?P<fn>{_MISS})|(?P<fp>{_ALARM}))",
    re.I,
)
_AMOUNT = re.compile(rf"{_MONEY}\b(?P<amount>{_NUM})\b", re.I)


def _kind(match: re.Match[str]) -> str:
    return "fn" if match.group("fn") else "fp"


def _sentence_costs(sentence: str) -> dict[str, float]:
    """Costs said in one sentence, as {"fn": ..., "fp": ...} (either may be absent)."""
    mentions = list(_ERROR_KIND.finditer(sentence))
    if not mentions:
        return {}
    ratio = _RATIO.search(sentence)
    if ratio:
        # "a missed churner costs 10x a false alarm", "false alarms are 4 times cheaper than misses":
        # the first error named is the one compared; the other costs 1.
        times = _number(ratio.group("times")) if ratio.group("times") else 2.0
        first = _kind(mentions[0])
        other = "fp" if first == "fn" else "fn"
        if _CHEAPER.search(sentence, ratio.end()):
            return {first: 1.0, other: times}
        return {first: times, other: 1.0}

    costs: dict[str, float] = {}
    for match in _PER_ERROR.finditer(sentence):  # "$500 per missed fraud"
        costs[_kind(match)] = _number(match.group("amount"))
        sentence = _mask(sentence, match.start(), match.end())
    mentions = list(_ERROR_KIND.finditer(sentence))
    for index, mention in enumerate(mentions):  # "FN cost 5", "false alarms cost $2"
        kind = _kind(mention)
        if kind in costs:
            continue
        stop = mentions[index + 1].start() if index + 1 < len(mentions) else len(sentence)
        amount = _AMOUNT.search(sentence, mention.end(), stop)
        if amount:
            costs[kind] = _number(amount.group("amount"))
    return costs


def _extract_costs(text: str) -> dict[str, float]:
    costs: dict[str, float] = {}
    for sentence in _SENTENCE.finditer(text):
        costs.update(_sentence_costs(sentence.group()))
    return costs


# ---------------------------------------------------------------- objective

_OBJECTIVE_PATTERNS = [
    ("balanced_accuracy", re.compile(r"\b(?:bal\w*|blan\w*)[\s_-]*acc\w*", re.I)),
    ("f1", re.compile(r"\b(?:macro[\s_-]*)?f[\s-]?1(?:[\s_-]*score)?\b|\bf[\s-]*score\b", re.I)),
    ("cost", re.compile(
        r"\b(?:optimi[sz]e|minimi[sz]e|reduce|lower)\s+(?:for\s+|the\s+)?"
        r"(?:total\s+|expected\s+|business\s+|misclassification\s+)?costs?\b"
        r"|\bcost[\s-]*sensitive\b|\bobjective\s*(?:is\b|:|=)?\s*cost\b",
        re.I,
    )),
]


def _extract_objective(work: str) -> tuple[str | None, str]:
    found = [(match.start(), match.end(), name) for name, pattern in _OBJECTIVE_PATTERNS for match in pattern.finditer(work)]
    for start, end, _ in found:
        work = _mask(work, start, end)
    return (min(found)[2] if found else None), work


# ---------------------------------------------------------------- dropped columns

_DROP_VERB = re.compile(r"\b(?:drop|ignore|exclude|remove|skip|leave\s+out|don[’']?t\s+use|do\s+not\s+use)\b", re.I)
_ARTICLE = re.compile(r"\s+the\b", re.I)
_COLUMN_NOUN = re.compile(r"\s+(?:following\s+)?(?:columns?|cols?|features?|fields?)\b\s*:?", re.I)
_LIST_ITEM = re.compile(rf"\s*{_VALUE}")
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
    while (item := _LIST_ITEM.match(work, position)) and not _bare_stopword(item.group("value")):
        items.append((item.group("value"), item.end()))
        separator = _LIST_SEPARATOR.match(work, item.end())
        if not separator:
            break
        position = separator.end()
    if not items:
        return [], verb_end
    trailing_noun = _COLUMN_NOUN.match(work, items[-1][1])  # "ignore the RowNumber column"
    if trailing_noun:
        return [_unquote(raw) for raw, _ in items], trailing_noun.end()
    if article and not noun:  # "drop the registry": an article without "column" is not a column list
        return [], verb_end
    while items and not _LIST_END.match(work, items[-1][1]):
        items.pop()
    return [_unquote(raw) for raw, _ in items], items[-1][1] if items else verb_end


def _extract_drops(work: str, columns: Sequence[str] | None) -> tuple[list[str], str]:
    dropped: list[str] = []
    for verb in list(_DROP_VERB.finditer(work)):
        names, end = _drop_list(work, verb.end())
        if names:
            work = _mask(work, verb.start(), end)
        for name in names:
            column = _to_column(name, columns)
            if column not in dropped:
                dropped.append(column)
    return dropped, work


# ---------------------------------------------------------------- target

_TARGET_BEFORE = re.compile(rf"{_VALUE}\s+(?:is|as)\s+(?:the\s+|my\s+|our\s+)?(?:target|label)\b", re.I)
_TARGET_AFTER = re.compile(
    rf"(?<!positive\s)(?<!pos\s)\b(?:target|label)(?:[\s_-]*(?:column|col|variable|var|field))?"
    rf"\s*(?:is\b|:|=|should\s+be\b)?\s*(?:the\s+)?{_VALUE}",
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
        if word and word.lower() in _STOPWORDS - _TARGET_FILLERS:  # "a classifier on data.csv": no target here
            break
        if word and word.lower() not in _TARGET_FILLERS:
            words.append((word, False))
    return words


def _target_after_keyword(work: str, position: int, columns: Sequence[str] | None) -> str | None:
    words = _words_after(work, position)
    if not words:
        return None
    if columns:
        for match_column in (_exact_column, _close_column):
            for word, _ in words:
                column = match_column(word, columns)
                if column:
                    return column
    return words[0][0]


def _extract_target(work: str, columns: Sequence[str] | None) -> str | None:
    candidates: list[tuple[int, str]] = []
    match = _first_value([_TARGET_BEFORE, _TARGET_AFTER], work)
    if match:
        candidates.append((match.start(), _to_column(_unquote(match.group("value")), columns)))
    for word in _WORD.finditer(work):
        if _is_predict_word(word.group()):
            target = _target_after_keyword(work, word.end(), columns)
            if target:
                candidates.append((word.start(), target))
                break
    return min(candidates)[1] if candidates else None


# ---------------------------------------------------------------- approve / reject

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


# ---------------------------------------------------------------- public API


def parse_message(text: str, columns: Sequence[str] | None = None) -> ChatIntent:
    """What one chat message says about the training job. Pure string parsing; never raises."""
    work = text
    data, work = _extract_data(work)
    na_values, work = _extract_na_values(work)
    name, work = _extract_by_patterns(_NAME_PATTERNS, work)
    positive_class, work = _extract_by_patterns(_POSITIVE_PATTERNS, work)
    time_limit, work = _extract_time(work)
    costs = _extract_costs(work)
    objective, work = _extract_objective(work)
    drop_columns, work = _extract_drops(work, columns)
    target = _extract_target(work, columns)
    if costs:
        objective = "cost"

    intent = ChatIntent(
        data=data, target=target, objective=objective, cost_fn=costs.get("fn"), cost_fp=costs.get("fp"),
        time_limit=time_limit, name=name, positive_class=positive_class, drop_columns=drop_columns,
        na_values=na_values,
    )
    if intent == ChatIntent():  # nothing else said: the message may be a bare yes or no
        intent.approve = _says_only(text, _APPROVE_WORDS, _APPROVE_FILLERS)
        intent.reject = _says_only(text, _REJECT_WORDS, _REJECT_FILLERS)
    return intent


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
