"""What to optimise and within what time: the objective, what each kind of error costs, the time budget.

Any cost figure implies the "cost" objective (see `parsing.parse_message`); "optimise for cost" without figures
sets it too, and the costs are then asked for.
"""

from __future__ import annotations

import re

from poise.agents.rule_planner.phrases import NUMBER, mask, number

_SENTENCE = re.compile(r"(?:[^.;!?\n]|\.(?=\S))+")

_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}
_TIME_WITH_UNIT = re.compile(
    rf"\b({NUMBER})\s*-?\s*(hours?|hrs?|h|minutes?|minuts?|mintues?|mins?|m|seconds?|secs?|s)\b", re.I
)
_TIME_PHRASES = [
    (re.compile(r"\bhalf\s+(?:an?\s+)?hour\b", re.I), 1800),
    (re.compile(r"\bquarter\s+(?:of\s+)?an?\s+hour\b", re.I), 900),
    (re.compile(r"\ban?\s+hour\b", re.I), 3600),
    (re.compile(r"\ba\s+minute\b", re.I), 60),
]
_TIME_UNITLESS = re.compile(
    rf"\b(?:time[\s_-]*(?:limit|budget)|budget)\s*(?:of\b|is\b|to\b|=|:)?\s*({NUMBER})\b(?!\s*(?:x|times|%))", re.I
)

_TIME_JOINER = re.compile(r"\s*(?:,|and)?\s*", re.I)


def extract_time(work: str) -> tuple[int | None, str]:
    """Seconds from the first budget mentioned ("5 min", "2h", "half an hour", "time limit 300")."""
    found: list[tuple[int, int, float]] = []  # start, end, seconds
    for pattern, seconds in _TIME_PHRASES:
        for match in pattern.finditer(work):
            found.append((match.start(), match.end(), seconds))
            work = mask(work, match.start(), match.end())
    for match in _TIME_WITH_UNIT.finditer(work):
        unit = match.group(2)[0].lower()
        found.append((match.start(), match.end(), number(match.group(1)) * _UNIT_SECONDS[unit]))
    for start, end, _ in found:
        work = mask(work, start, end)
    for match in _TIME_UNITLESS.finditer(work):
        found.append((match.start(), match.end(), number(match.group(1))))
        work = mask(work, match.start(), match.end())
    if not found:
        return None, work
    found.sort()
    start, end, seconds = found[0]
    for next_start, next_end, more in found[1:]:  # "1h 30m", "1 hour and 30 minutes"
        if not _TIME_JOINER.fullmatch(work[end:next_start]):
            break
        end, seconds = next_end, seconds + more
    return round(seconds), work

_FALSE = r"\bf(?:alse|lase|als|asle)[\s-]*"
_MISS = r"(?:(?<!-)\bcost[_\s-]?fn\b|\bfns?\b|" + _FALSE + r"neg\w*|\bmiss(?:ed|es|ing)?\b(?!\s+(?:values?|data))" \
    r"|\btype[\s-]*(?:ii|2)[\s-]*errors?\b)"
_ALARM = r"(?:(?<!-)\bcost[_\s-]?fp\b|\bfps?\b|" + _FALSE + r"(?:pos\w*|alarms?)|\btype[\s-]*(?:i|1)[\s-]*errors?\b)"
_ERROR_KIND = re.compile(rf"(?P<fn>{_MISS})|(?P<fp>{_ALARM})", re.I)
_RATIO = re.compile(rf"\b(?P<times>{NUMBER})\s*(?:x|×|times)(?!\w)|\btwice\b", re.I)
_CHEAPER = re.compile(r"\b(?:less|cheaper|lower|smaller|fewer)\b", re.I)
_MONEY = r"(?:[$€£]\s*)?"
_PER_ERROR = re.compile(
    rf"{_MONEY}(?P<amount>{NUMBER})\s*(?:[$€£]|dollars?|euros?|pounds?|usd|eur|gbp)?\s+(?:per|for|on)\s+"
    rf"(?:each\s+|every\s+|an?\s+|one\s+)?(?:(?P<fn>{_MISS})|(?P<fp>{_ALARM}))",
    re.I,
)
_AMOUNT = re.compile(rf"{_MONEY}\b(?P<amount>{NUMBER})\b", re.I)


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
        times = number(ratio.group("times")) if ratio.group("times") else 2.0
        first = _kind(mentions[0])
        other = "fp" if first == "fn" else "fn"
        if _CHEAPER.search(sentence, ratio.end()):
            return {first: 1.0, other: times}
        return {first: times, other: 1.0}

    costs: dict[str, float] = {}
    for match in _PER_ERROR.finditer(sentence):  # "$500 per missed fraud"
        costs[_kind(match)] = number(match.group("amount"))
        sentence = mask(sentence, match.start(), match.end())
    mentions = list(_ERROR_KIND.finditer(sentence))
    for index, mention in enumerate(mentions):  # "FN cost 5", "false alarms cost $2"
        kind = _kind(mention)
        if kind in costs:
            continue
        stop = mentions[index + 1].start() if index + 1 < len(mentions) else len(sentence)
        amount = _AMOUNT.search(sentence, mention.end(), stop)
        if amount:
            costs[kind] = number(amount.group("amount"))
    return costs


def extract_costs(text: str) -> dict[str, float]:
    costs: dict[str, float] = {}
    for sentence in _SENTENCE.finditer(text):
        costs.update(_sentence_costs(sentence.group()))
    return costs

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


def extract_objective(work: str) -> tuple[str | None, str]:
    found = [(match.start(), match.end(), name) for name, pattern in _OBJECTIVE_PATTERNS for match in pattern.finditer(work)]
    for start, end, _ in found:
        work = mask(work, start, end)
    return (min(found)[2] if found else None), work
