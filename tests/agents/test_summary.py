"""What a refused quality gate tells the user: the reason, what it means now, and next steps computed
from the job's record (pure functions of the record; the end-to-end runs are in tests/pipelines)."""

import shlex

from poise.agents.summary import gate_champion, gate_outcome, next_steps, steps_text, with_next_steps

SPEC = {"data": "/data/my customers.csv", "target": "churned", "name": "churn", "objective": "f1", "cost_fn": None,
        "cost_fp": None, "positive_class": None, "time_limit": 60, "presets": "medium_quality",
        "drop_columns": ["customer_id"], "keep_columns": [], "na_values": ["?", "none"],
        "excluded_model_types": [], "threshold_policy": "calibrate", "promote": True}
METRICS = {"positive_class": "yes", "per_class": {"yes": {"f1": 0.0}, "no": {"f1": 0.95}}}
REFUSED = {"passed": False, "metric": "f1", "value": 0.0, "compared_with": "stratified baseline",
           "reference_value": 0.1, "champion": None, "reason": "f1 0.0000 does not beat the stratified baseline (0.1000)"}


def _actions(steps):
    return [step["action"] for step in steps]


def test_a_first_version_refused_leaves_no_champion_and_every_step_is_a_runnable_command():
    outcome = gate_outcome(SPEC, REFUSED, METRICS, "1", None)
    assert not outcome["passed"] and not outcome["is_champion"] and outcome["champion"] is None
    assert "No version of 'churn' is champion" in outcome["explanation"]
    steps = outcome["next_steps"]
    assert _actions(steps) == ["change_objective", "longer_budget", "predict_with_version", "promote"]
    assert "F1 of 'yes' is 0" in steps[0]["text"]

    objective = shlex.split(steps[0]["command"])
    assert objective[:3] == ["poise", "train", "/data/my customers.csv"]  # quoted: the path has a space
    assert objective[objective.index("--objective") + 1] == "balanced_accuracy"
    assert objective[objective.index("--time-limit") + 1] == "60"
    longer = shlex.split(steps[1]["command"])
    assert longer[longer.index("--time-limit") + 1] == "180" and "--objective" not in longer
    for command in (objective, longer):  # the job's other options are kept
        assert command[command.index("--drop") + 1] == "customer_id" and command[command.index("--name") + 1] == "churn"
        assert [command[i + 1] for i, word in enumerate(command) if word == "--na-values"] == ["?", "none"]
    assert steps[1]["api"] == {"method": "POST", "path": "/api/v1/jobs", "body": {
        "target": "churned", "name": "churn", "objective": "f1", "time_limit": 180, "presets": "medium_quality",
        "drop_columns": ["customer_id"], "threshold_policy": "calibrate", "na_values": ["?", "none"]}}

    assert steps[2]["command"] == "poise predict churn NEW_DATA.csv --out predictions.csv --version 1"
    assert steps[2]["api"] is None  # the API serves only the champion
    promote = shlex.split(steps[3]["command"])
    assert promote[:4] == ["poise", "promote", "churn", "1"] and promote[4] == "--reason"
    assert steps[3]["api"]["path"] == "/api/v1/models/churn/promote" and steps[3]["api"]["body"]["version"] == "1"

    text = steps_text(steps)
    assert text.startswith("Next steps:\n  1. ") and all(step["command"] in text for step in steps)


def test_the_objective_step_appears_only_when_the_positive_class_is_never_found():
    found = {**METRICS, "per_class": {"yes": {"f1": 0.2}, "no": {"f1": 0.9}}}
    assert _actions(next_steps(SPEC, REFUSED, found, "1", None)) == ["longer_budget", "predict_with_version",
                                                                       "promote"]
    balanced = {**SPEC, "objective": "balanced_accuracy"}
    assert "change_objective" not in _actions(next_steps(balanced, REFUSED, METRICS, "1", None))
    costly = {**SPEC, "objective": "cost", "cost_fn": 1.0, "cost_fp": 50.0}
    steps = next_steps(costly, REFUSED, METRICS, "1", None)
    assert steps[0]["action"] == "change_objective" and "a false alarm 50" in steps[0]["text"]
    assert "--cost-fn" not in steps[0]["command"] and "--cost-fp 50" in steps[1]["command"]


def test_the_budget_is_tripled_up_to_the_limit_and_dropped_at_it():
    assert "--time-limit 86400" in next_steps({**SPEC, "time_limit": 40_000}, REFUSED, {}, "1", None)[0]["command"]
    assert "longer_budget" not in _actions(next_steps({**SPEC, "time_limit": 86_400}, REFUSED, {}, "1", None))


def test_a_challenger_refused_against_a_champion_keeps_it_serving():
    refused = {**REFUSED, "compared_with": "champion v1", "champion": "1",
               "reason": "f1 0.4000 does not beat champion v1 (0.5000) on this holdout"}
    outcome = gate_outcome(SPEC, refused, {}, "2", gate_champion(refused))
    assert outcome["explanation"] == "v1 stays champion and keeps serving predictions."
    assert _actions(outcome["next_steps"]) == ["longer_budget", "predict_with_version", "promote"]
    assert "v1 stays champion" in outcome["next_steps"][1]["text"]


def test_a_champion_that_cannot_score_the_holdout_gets_no_retraining_advice():
    broken = {"passed": False, "metric": "f1", "value": 0.8, "compared_with": "champion v1", "reference_value": None,
              "champion": "1", "reason": "champion v1 cannot score this holdout: ...; keeping the current champion"}
    outcome = gate_outcome(SPEC, broken, METRICS, "2", "1")
    assert _actions(outcome["next_steps"]) == ["predict_with_version", "promote"]
    assert "could not be compared with it" in outcome["explanation"]


def test_a_changed_schema_or_label_set_names_the_change_and_gets_no_retraining_advice():
    changed = {"passed": False, "metric": "f1", "value": 0.8, "compared_with": "champion v1", "reference_value": None,
               "champion": "1", "changes": ["label set changed: {'maybe', 'no', 'yes'} vs the champion's {'no', 'yes'}"],
               "reason": "label set changed: ...; keeping the current champion"}
    outcome = gate_outcome(SPEC, changed, METRICS, "2", "1")
    assert _actions(outcome["next_steps"]) == ["predict_with_version", "promote"]
    assert outcome["next_steps"][1]["command"].startswith("poise promote churn 2 --reason ")
    assert ("The data of v2 differs from that of champion v1 (label set changed: {'maybe', 'no', 'yes'} vs the "
            "champion's {'no', 'yes'}): such a change needs an admin's decision") in outcome["explanation"]


def test_no_steps_once_passed_promoted_by_hand_or_left_to_a_drift_check():
    passed = {**REFUSED, "passed": True, "reason": "f1 0.8 beats the stratified baseline (0.1)"}
    assert gate_outcome(SPEC, passed, METRICS, "1", "1")["next_steps"] == []
    assert gate_outcome(SPEC, passed, METRICS, "1", "1")["explanation"] == "v1 passed the gate and is the champion."
    assert "the champion is now v2" in gate_outcome(SPEC, passed, METRICS, "1", "2")["explanation"]

    by_hand = {"by": "cli:ana", "at": "2026-12-01T10:00:00+00:00", "reason": "pilot"}
    outcome = gate_outcome(SPEC, REFUSED, METRICS, "1", "1", by_hand)
    assert outcome["is_champion"] and outcome["next_steps"] == []
    assert outcome["explanation"] == ("The gate refused v1, but it was promoted by hand by cli:ana at "
                                      "2026-12-01T10:00:00+00:00: pilot.")

    drift = gate_outcome({**SPEC, "promote": False}, REFUSED, METRICS, "3", "1")
    assert drift["next_steps"] == [] and "drift check" in drift["explanation"]


def test_verdicts_recorded_before_the_champion_field_still_name_it():
    assert gate_champion({"compared_with": "champion v4"}) == "4"
    assert gate_champion({"compared_with": "majority baseline"}) is None
    assert gate_champion({"champion": None, "compared_with": "champion v4"}) is None


def test_next_steps_follow_a_summary_once_word_for_word():
    outcome = gate_outcome(SPEC, REFUSED, METRICS, "1", None)
    record = {"gate_explanation": outcome["explanation"],
              "next_steps": [{"do": s["text"], "command": s["command"]} for s in outcome["next_steps"]]}
    text = with_next_steps("The model finds no churner.", record)
    assert text.startswith("The model finds no churner.\n\nNo version of 'churn' is champion")
    assert all(step["command"] in text for step in outcome["next_steps"])
    assert with_next_steps(text, record) == text  # already there: not added twice
    assert with_next_steps("All good.", {"next_steps": []}) == "All good."
