"""How well does a chat planner turn user messages into training-job fields?

Runs each planner (a callable `message, columns -> ChatIntent`) over the hand-labelled
phrasings in `tests/agents/data/chat_phrasings.jsonl` and reports, per planner:

- per-field accuracy: share of messages where that `ChatIntent` field equals the label;
- exact-spec accuracy: share of messages where every field equals the label;
- question accuracy: share where the next question asked (`next_missing`: file, target,
  costs or none) equals the label;
- mean milliseconds per message.

The deterministic rule-based planner always runs; with `POISE_LLM_MODEL` (and
`POISE_LLM_BASE_URL` for a local server) set, the LLM planner runs too, through the same
tools as in `poise chat`: each case gets a scratch folder holding a small table at the path
the message names, with the labelled columns, so the model can inspect real columns. Its
intent is read off the plan it proposes (or the question it asks); approve/reject come from
the rule parser, as in a chat session. For the LLM the script also reports planning seconds
and tokens per message. Target: the deterministic planner at >= 95 % exact-spec accuracy.

Run from the repository root:
    .venv/bin/python benchmarks/chat_intents.py [--out benchmarks/results/chat_intents.json]
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # run as a script: import Poise from the repository, not benchmarks/

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import pandas as pd

from poise.agents.rule_planner.intent import ChatIntent, next_missing
from poise.agents.rule_planner.parsing import parse_message

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


class LLMPlanner:
    """The chat LLM planner as a `message, columns -> ChatIntent` callable, with usage totals."""

    def __init__(self, settings):
        from poise.agents.llm import LLM, CallTracer

        self.settings = settings
        self.tracer = CallTracer(settings.db_url)
        self.llm = LLM(settings.llm_config, self.tracer)
        self.failures = 0

    def __call__(self, message: str, columns: Sequence[str] | None) -> ChatIntent:
        from poise.agents.llm_planner import PlannerFailed, plan_turn
        from poise.agents.tools import PlannerTools
        from poise.pipelines import runner
        from poise.pipelines.access import DataAccess

        rules = parse_message(message, columns)
        plans: dict[str, dict] = {}
        validate = lambda options: runner.make_spec(  # noqa: E731
            options["data"], options["target"], self.settings,
            **{k: v for k, v in options.items() if k not in ("data", "target")})
        folder = Path(tempfile.mkdtemp(prefix="poise-intent-"))
        cwd = Path.cwd()
        try:
            os.chdir(folder)
            if rules.data:
                path = folder / rules.data.lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                names = list(columns or ["feature", "label"])
                table = pd.DataFrame({name: ["a", "b"] * 10 for name in names})
                table.to_parquet(path) if path.suffix in (".parquet", ".pq") else table.to_csv(
                    path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
            try:
                plan_turn(self.llm, [], message, PlannerTools(self.settings, plans, DataAccess.local(), validate))
            except PlannerFailed:
                self.failures += 1
                return ChatIntent(approve=rules.approve, reject=rules.reject)
        finally:
            os.chdir(cwd)
        options = next(iter(reversed(plans.values())), {})
        fields = {k: v for k, v in options.items() if k in ChatIntent.model_fields and v not in (None, [])}
        if "data" in fields and rules.data:
            fields["data"] = rules.data if Path(fields["data"]).name == Path(rules.data).name else fields["data"]
        return ChatIntent(**fields, approve=rules.approve, reject=rules.reject)

    def usage(self, messages: int) -> dict:
        records = self.tracer.records
        return {"calls": len(records), "failed_turns": self.failures,
                "seconds_per_message": sum(r["latency_ms"] for r in records) / 1000 / max(messages, 1),
                "tokens_per_message": sum((r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0)
                                          for r in records) / max(messages, 1)}


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
    from poise.pipelines.settings import Settings

    settings = Settings(home=Path(tempfile.mkdtemp(prefix="poise-bench-home-")))
    if settings.llm_configured:
        llm = LLMPlanner(settings)
        results["llm"] = evaluate(llm, cases)
        results["llm"]["usage"] = llm.usage(len(cases))
        print(f"LLM {settings.llm_model}: {results['llm']['usage']}")
    else:
        print("LLM planner: not measured (set POISE_LLM_MODEL and POISE_LLM_BASE_URL to include it)")
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
