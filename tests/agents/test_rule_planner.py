"""The rule-based chat parser against hand-labelled phrasings, plus multi-turn merging.

Every line of `data/chat_phrasings.jsonl` was labelled by hand with what a careful reader
would extract; a case passes only if the whole `ChatIntent` and the next question match.
"""

import json
from pathlib import Path

import pytest

from poise.agents.rule_planner.intent import ChatIntent, merge, missing_question, next_missing
from poise.agents.rule_planner.parsing import parse_message

CASES_PATH = Path(__file__).parent / "data" / "chat_phrasings.jsonl"
CASES = [json.loads(line) for line in CASES_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]
DEFAULTS = ChatIntent().model_dump()
CHURN_COLUMNS = ["customer_id", "tenure", "plan", "churned"]


def test_labelled_set_covers_every_field_and_question():
    assert len(CASES) >= 45
    for case in CASES:
        assert set(case["expected"]) <= set(DEFAULTS), case["message"]
    set_fields = {field for case in CASES for field in case["expected"]}
    assert set_fields == set(DEFAULTS)
    assert {case["question"] for case in CASES} == {"data", "target", "costs", None}


@pytest.mark.parametrize("case", CASES, ids=[case["message"][:60] for case in CASES])
def test_labelled_phrasing(case):
    intent = parse_message(case["message"], case["columns"])
    assert intent.model_dump() == {**DEFAULTS, **case["expected"]}
    assert next_missing(intent) == case["question"]
    assert (missing_question(intent, case["columns"]) is None) == (case["question"] is None)


def test_questions_ask_for_the_file_then_the_target_then_the_costs():
    assert "file" in missing_question(ChatIntent(target="churned"))
    assert missing_question(ChatIntent(data="d.csv")).startswith("Which column should I predict?")
    costs = ChatIntent(data="d.csv", target="churned", objective="cost", cost_fn=10)
    assert missing_question(costs) == "What does a missed positive cost compared with a false alarm?"
    assert missing_question(ChatIntent(data="d.csv", target="churned", objective="f1")) is None


def test_target_question_lists_at_most_eight_columns():
    columns = [f"c{i}" for i in range(11)]
    question = missing_question(ChatIntent(data="d.csv"), columns)
    assert "c0, c1, c2, c3, c4, c5, c6, c7 and 3 more." in question
    assert "c8" not in question
    assert missing_question(ChatIntent(data="d.csv"), CHURN_COLUMNS).endswith(
        "customer_id, tenure, plan, churned."
    )


def test_conversation_file_then_target_then_yes():
    first = parse_message("I'd like a model on data/customers.csv", CHURN_COLUMNS)
    assert next_missing(first) == "target"
    second = merge(first, parse_message("predict churnd, 2 minutes", CHURN_COLUMNS))
    assert (second.data, second.target, second.time_limit) == ("data/customers.csv", "churned", 120)
    assert next_missing(second) is None and not second.approve
    third = merge(second, parse_message("yes", CHURN_COLUMNS))
    assert third.approve and not third.reject
    assert third.model_dump() == {**second.model_dump(), "approve": True}


def test_merge_later_turn_wins_and_empty_fields_keep_earlier_values():
    earlier = ChatIntent(data="a.csv", target="y", objective="f1", drop_columns=["id"], time_limit=60)
    later = ChatIntent(objective="cost", cost_fn=10, cost_fp=1, drop_columns=[])
    merged = merge(earlier, later)
    assert merged == ChatIntent(data="a.csv", target="y", objective="cost", cost_fn=10, cost_fp=1,
                                drop_columns=["id"], time_limit=60)
    assert merge(merged, ChatIntent(drop_columns=["email"])).drop_columns == ["email"]


def test_merge_takes_approval_from_the_later_turn_only():
    approved = ChatIntent(data="a.csv", target="y", approve=True)
    changed = merge(approved, parse_message("use balanced accuracy instead"))
    assert changed.objective == "balanced_accuracy" and not changed.approve
    rejected = merge(approved, parse_message("no, cancel"))
    assert rejected.reject and not rejected.approve and rejected.target == "y"


def test_costs_missing_after_cost_objective_are_asked_then_filled():
    intent = parse_message("predict fraud on tx.csv and minimise cost")
    assert next_missing(intent) == "costs"
    intent = merge(intent, parse_message("a missed fraud costs 50 times a false alarm"))
    assert (intent.objective, intent.cost_fn, intent.cost_fp) == ("cost", 50, 1)
    assert next_missing(intent) is None


@pytest.mark.parametrize(
    ("message", "values"),
    [
        ("treat '?' and 'none' as missing", ["?", "none"]),
        ("missing values are coded as -999", ["-999"]),
        ("-999 means missing", ["-999"]),
        ("nulls are written as 'none' or '?'", ["none", "?"]),
        ("na values: ?, none", ["?", "none"]),
        ("missing value codes = -999, -1", ["-999", "-1"]),
        ("use ? for missing values", ["?"]),
        ("treat -- and 'n a' as NA", ["--", "n a"]),
        ("treat the customer as missing", []),  # a bare word that is no usual gap word must be quoted
        ("predict churn, missing values are fine", []),
    ],
)
def test_values_meaning_missing(message, values):
    assert parse_message(message).na_values == values


def test_values_meaning_missing_are_never_read_as_budgets_or_costs_and_merge_like_lists():
    intent = parse_message("predict y on t.csv; missing is coded as 999; a missed y costs 5 times a false alarm; "
                           "train for 2 minutes")
    assert (intent.na_values, intent.time_limit, intent.cost_fn, intent.cost_fp) == (["999"], 120, 5, 1)
    merged = merge(intent, parse_message("sorry, 99 means missing"))
    assert merged.na_values == ["99"] and merged.time_limit == 120  # a later list replaces, like drop_columns
    assert merge(merged, parse_message("yes")).na_values == ["99"]
