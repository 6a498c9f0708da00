"""How well does a chat planner turn user messages into training-job fields?

Runs each planner (a callable `message, columns -> ChatIntent`) over the hand-labelled
phrasings in `tests/agents/data/chat_phrasings.jsonl` and reports, per planner:

- per-field accuracy: share of messages where that `ChatIntent` field equals the label;
- exact-spec accuracy: share of messages where every field equals the label;
- question accuracy: share where the next question asked (`next_missing`: file, target,
  costs or none) equals the label;
- mean milliseconds per message.

Only the deterministic rule-based planner is registered here; an LLM planner can be added
to `PLANNERS` (or passed to `evaluate`) with the same signature. The deterministic planner
passes at >= 95 % exact-spec accuracy.

Run from the repository root:
    .venv/bin/python benchmarks/chat_intents.py [--out benchmarks/results/chat_intents.json]
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # run as a script: import Poise from the repository, not benchmarks/

import argparse
import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from agents.rule_planner import ChatIntent, next_missing, parse_message

Planner = Callable[[str, Sequence[str] | None], ChatIntent]

CASES_PATH = ROOT / "tests" / "agents" / "data" / "chat_phrasings.jsonl"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "chat_intents.json"
PASS_EXACT = 0.95
PLANNERS: dict[str, Planner] = {"deterministic": parse_message}
FIELDS = list(ChatIntent.model_fields)


def load_cases(path: Path = CASES_PATH) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(planner: Planner, cases: list[dict]) -> dict:
    """Accuracy of one planner on the labelled cases, with the messages it got wrong."""
    defaults = ChatIntent().model_dump()
    field_hits = dict.fromkeys(FIELDS, 0)
    exact_hits = question_hits = 0
    elapsed = 0.0
    failures = []
    for case in cases:
        started = time.perf_counter()
        intent = planner(case["message"], case["columns"])
        elapsed += time.perf_counter() - started
        got = intent.model_dump()
        expected = {**defaults, **case["expected"]}
        wrong = {field: {"got": got[field], "expected": expected[field]} for field in FIELDS if got[field] != expected[field]}
        for field in FIELDS:
            field_hits[field] += field not in wrong
        exact_hits += not wrong
        question = next_missing(intent)
        question_hits += question == case["question"]
        if wrong or question != case["question"]:
            failures.append({"message": case["message"], "fields": wrong,
                             "question": {"got": question, "expected": case["question"]}})
    count = len(cases)
    return {
        "cases": count,
        "field_accuracy": {field: hits / count for field, hits in field_hits.items()},
        "exact_spec_accuracy": exact_hits / count,
        "question_accuracy": question_hits / count,
        "mean_ms_per_message": 1000 * elapsed / count,
        "failures": failures,
    }


def print_table(results: dict[str, dict]) -> None:
    names = list(results)
    rows = [(f"field: {field}", [results[name]["field_accuracy"][field] for name in names]) for field in FIELDS]
    rows += [("exact spec", [results[name]["exact_spec_accuracy"] for name in names]),
             ("question", [results[name]["question_accuracy"] for name in names])]
    width = max(len(label) for label, _ in rows) + 2
    print("".ljust(width) + "".join(name.rjust(16) for name in names))
    for label, values in rows:
        print(label.ljust(width) + "".join(f"{value:16.1%}" for value in values))
    print("mean ms/message".ljust(width) + "".join(f"{results[n]['mean_ms_per_message']:16.3f}" for n in names))
    print("cases".ljust(width) + "".join(f"{results[n]['cases']:16d}" for n in names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    cases = load_cases()
    results = {name: evaluate(planner, cases) for name, planner in PLANNERS.items()}
    print_table(results)
    for name, result in results.items():
        for failure in result["failures"]:
            print(f"[{name}] wrong: {failure['message']!r} {failure['fields']} question {failure['question']}")

    deterministic = results["deterministic"]["exact_spec_accuracy"]
    passed = deterministic >= PASS_EXACT
    print(f"{'PASS' if passed else 'FAIL'}: deterministic exact-spec accuracy {deterministic:.1%} (target {PASS_EXACT:.0%})")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cases_file": str(CASES_PATH.relative_to(ROOT)), "pass_threshold": PASS_EXACT,
              "passed": passed, "planners": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
